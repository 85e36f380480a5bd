"""Which exact CPU path ``--backend auto`` runs: the fastest of those built and checked on this CPU.

Each fast path is timed against eager torch when it is made (the compiled tower when it is built,
the ONNX tower when it is checked), but in separate runs, minutes apart, on other clips and other
batches. A gain from one run cannot be set against a gain from another: on the tiny test model the
two put ONNX fp32 first (2.4x against 1.7x) while the compiled tower ran faster in absolute terms.
So ``echoclip weights optimise`` races every built path, eager included (as a run gets it, batches
split per core), in one run on one batch, interleaved (drift hits each alike), and saves the race;
``fastest_built`` decides from the race when it covers what is built now, and from each path's own
check only when there is none (a path built on first use by ``--backend compiled`` or ``onnx``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from . import compiled_backend, onnx_backend

if TYPE_CHECKING:
    from .inference import EchoClip
    from .weights import Bundle

EAGER = ("torch", None)
ROUNDS = 3


def _name(path: tuple[str, str | None]) -> str:
    return "-".join(p for p in path if p)


def built(bundle: "Bundle") -> dict[tuple[str, str | None], Path]:
    """The exact fast paths built and checked on this CPU (never builds): path -> its file."""
    paths: dict[tuple[str, str | None], Path] = {}
    found = compiled_backend.read_check(bundle)
    if found and found["passed"] and compiled_backend.package_file(bundle).is_file():
        paths[("compiled", None)] = compiled_backend.package_file(bundle)
    model = onnx_backend.model_file(bundle, "fp32")
    if onnx_backend.read_check(bundle) is not None and model.is_file() and onnx_backend.runtime_found():
        paths[("onnx", "fp32")] = model
    return paths


def race_file(bundle: "Bundle") -> Path:
    from .weights import weights_home

    key = (f"{onnx_backend.cpu_kind()}|{torch.backends.cpu.get_cpu_capability()}|torch {torch.__version__}|"
           f"{onnx_backend._runtime()}|compiled v{compiled_backend.BUILD_VERSION}|onnx v{onnx_backend.EXPORT_VERSION} {onnx_backend.RUN_SCHEME}")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return weights_home() / "race" / f"{bundle.weights_sha256[:16]}-{digest}.json"


def _stamp(path: Path) -> int:
    return path.stat().st_mtime_ns


def read_race(bundle: "Bundle") -> dict[str, Any] | None:
    """The saved race, if it raced exactly the paths built now (the same files)."""
    try:
        race = json.loads(race_file(bundle).read_text())
    except (OSError, ValueError):
        return None
    now = {_name(p): _stamp(f) for p, f in built(bundle).items()}
    return race if race.get("files") == now else None


def race(bundle: "Bundle", reference: "EchoClip", note: Callable[[str], None] = lambda _: None,
         rounds: int = ROUNDS) -> dict[str, Any] | None:
    """Time eager torch (``reference``) and every built path on one batch, interleaved, best of
    ``rounds``; saved and returned. None when nothing but eager is built (nothing to choose)."""
    from .files import atomic_write_text
    from .preprocess import to_model_input

    paths = built(bundle)
    if not paths:
        return None
    towers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {_name(EAGER): reference.encode_image}
    for path, file in paths.items():
        towers[_name(path)] = (compiled_backend.CompiledTower(file) if path[0] == "compiled"
                               else onnx_backend.OnnxTower(file))
    note(f"timing {', '.join(towers)} against each other on this CPU (one batch, {rounds} rounds)…")
    clips = onnx_backend.check_clips(reference)
    images = to_model_input(torch.cat(clips)[:16], reference.preprocess, device=torch.device("cpu"))
    speed = compiled_backend._interleaved(towers, images, rounds)  # warm-up, then alternating rounds
    result = {"cpu": onnx_backend.cpu_kind(), "torch": torch.__version__, "runtime": onnx_backend._runtime(),
              "weights": bundle.name, "batch": len(images), "rounds": rounds,
              "frames_per_s": speed,
              "files": {_name(p): _stamp(f) for p, f in paths.items()}}
    target = race_file(bundle)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(result, indent=1))
    note(race_summary(result))
    return result


def race_summary(result: dict[str, Any]) -> str:
    speed = result["frames_per_s"]
    return (f"one batch of {result['batch']} frames, interleaved, best of {result['rounds']}: "
            + ", ".join(f"{name} {rate:.2f}" for name, rate in speed.items()) + " frames/s")


def gains(bundle: "Bundle") -> dict[tuple[str, str | None], float]:
    """Each built path's speed relative to eager torch: from the race, else from its own check."""
    paths = built(bundle)
    found = read_race(bundle)
    if found is not None:
        speed = found["frames_per_s"]
        return {EAGER: 1.0, **{p: speed[_name(p)] / speed[_name(EAGER)] for p in paths}}
    out: dict[tuple[str, str | None], float] = {EAGER: 1.0}
    if ("compiled", None) in paths:  # timed against eager when it was built
        speed = compiled_backend.read_check(bundle)["frames_per_s"]  # type: ignore[index]
        out[("compiled", None)] = speed["compiled"] / speed["eager"]
    if ("onnx", "fp32") in paths:  # timed against eager when it was checked
        speed = onnx_backend.read_check(bundle)["frames_per_s"]  # type: ignore[index]
        out[("onnx", "fp32")] = speed.get("onnx-fp32", 0) / speed["torch-fp32"]
    return out


def relative_speeds(bundle: "Bundle") -> dict[str, float]:
    """``gains`` by path name (torch, compiled, onnx-fp32), rounded: what ``echoclip info`` shows."""
    return {_name(p): round(g, 2) for p, g in gains(bundle).items()}


def fastest_built(bundle: "Bundle") -> tuple[str, str | None]:
    """The exact CPU path measured fastest on this CPU among those already built (never builds):
    eager torch unless a built path measured at least ``compiled_backend.MIN_GAIN`` times faster."""
    measured = gains(bundle)
    best = max(measured, key=lambda p: measured[p])
    return best if measured[best] >= compiled_backend.MIN_GAIN else EAGER
