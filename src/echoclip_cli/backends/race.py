"""Which exact CPU path ``--backend auto`` runs: the fastest of those built and checked on this CPU.

Each fast path is timed against eager torch when it is made (the compiled tower when it is built,
the ONNX tower when it is checked), but in separate runs, minutes apart, on other clips and other
batches. A gain from one run cannot be set against a gain from another: on the tiny test model the
two put ONNX fp32 first (2.4x against 1.7x) while the compiled tower ran faster in absolute terms.
So ``echoclip weights optimise`` races every built path, eager included (as a run gets it, batches
split per core), in one run on one batch, interleaved (drift hits each alike), and saves the race;
:func:`fastest_built` decides from the race when it covers what is built now, and from each path's
own check only when there is none (a path built on first use by ``--backend compiled`` or ``onnx``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..device import cpu_kind
from ..files import home
from . import compiled, measure, onnx
from .base import MIN_GAIN, Backend, Note, Reference, quiet

if TYPE_CHECKING:
    from ..weights import Bundle

Path_ = tuple[str, "str | None"]  # (backend word, precision): an exact CPU path
EAGER: Path_ = ("torch", None)
FAST_PATHS: tuple[Path_, ...] = (("compiled", None), ("onnx", "fp32"))  # the exact ones auto chooses from
ROUNDS = 3
_FAST = {"compiled": compiled.CompiledBackend(), "onnx": onnx.OnnxBackend()}


def get(name: str) -> Backend:
    return _FAST[name]


def _name(path: Path_) -> str:
    return "-".join(p for p in path if p)


def built(bundle: "Bundle") -> dict[Path_, Path]:
    """The exact fast paths built and checked on this CPU (never builds): path -> its file."""
    found = {path: get(path[0]).built(bundle) for path in FAST_PATHS}
    return {path: file for path, file in found.items() if file is not None}


def race_file(bundle: "Bundle") -> Path:
    key = (f"{cpu_kind()}|{torch.backends.cpu.get_cpu_capability()}|torch {torch.__version__}|"
           f"{onnx.runtime_version()}|compiled v{compiled.BUILD_VERSION}|onnx v{onnx.EXPORT_VERSION} {onnx.RUN_SCHEME}")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return home() / "race" / f"{bundle.weights_sha256[:16]}-{digest}.json"


def _stamp(path: Path) -> int:
    return path.stat().st_mtime_ns


def read_race(bundle: "Bundle") -> dict[str, Any] | None:
    """The saved race, if it raced exactly the paths built now (the same files)."""
    try:
        saved = json.loads(race_file(bundle).read_text())
    except (OSError, ValueError):
        return None
    now = {_name(p): _stamp(f) for p, f in built(bundle).items()}
    return saved if saved.get("files") == now else None


def race(bundle: "Bundle", reference: Reference, note: Note = quiet, rounds: int = ROUNDS) -> dict[str, Any] | None:
    """Time eager torch (``reference``) and every built path on one batch, interleaved, best of
    ``rounds``; saved and returned. None when nothing but eager is built (nothing to choose)."""
    from ..files import atomic_write_text

    paths = built(bundle)
    if not paths:
        return None
    towers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {_name(EAGER): reference.encode_image}
    for path in paths:
        towers[_name(path)] = get(path[0]).tower(bundle, path[1] or "fp32")
    note(f"timing {', '.join(towers)} against each other on this CPU (one batch, {rounds} rounds)…")
    images = measure.check_batch(measure.check_clips(reference.preprocess), reference.preprocess)
    speed = measure.interleaved(towers, images, rounds)  # warm-up, then alternating rounds
    result = {"cpu": cpu_kind(), "torch": torch.__version__, "runtime": onnx.runtime_version(),
              "weights": bundle.name, "batch": len(images), "rounds": rounds, "frames_per_s": speed,
              "files": {_name(p): _stamp(f) for p, f in paths.items()}}
    target = race_file(bundle)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(result, indent=1))
    note(race_summary(result))
    return result


def race_summary(result: dict[str, Any]) -> str:
    speed = result["frames_per_s"]
    return (f"one batch of {result['batch']} frames, interleaved, best of {result['rounds']}: "
            + ", ".join(f"{name} {value:.2f}" for name, value in speed.items()) + " frames/s")


def gains(bundle: "Bundle") -> dict[Path_, float]:
    """Each built path's speed relative to eager torch: from the race, else from its own check."""
    paths = built(bundle)
    found = read_race(bundle)
    if found is not None:
        speed = found["frames_per_s"]
        return {EAGER: 1.0, **{p: speed[_name(p)] / speed[_name(EAGER)] for p in paths}}
    own = {p: get(p[0]).gain(bundle) for p in paths}
    return {EAGER: 1.0, **{p: g for p, g in own.items() if g is not None}}


def relative_speeds(bundle: "Bundle") -> dict[str, float]:
    """``gains`` by path name (torch, compiled, onnx-fp32), rounded: what ``echoclip info`` shows."""
    return {_name(p): round(g, 2) for p, g in gains(bundle).items()}


def fastest_built(bundle: "Bundle") -> Path_:
    """The exact CPU path measured fastest on this CPU among those already built (never builds):
    eager torch unless a built path measured at least :data:`~.base.MIN_GAIN` times faster."""
    measured = gains(bundle)
    best = max(measured, key=lambda p: measured[p])
    return best if measured[best] >= MIN_GAIN else EAGER
