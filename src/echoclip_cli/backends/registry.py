"""The backend words and where each backend lives: the one place that validates ``--backend``
with ``--precision`` and reads ``ECHOCLIP_BACKEND``.

Backends are listed by import path and imported only when used, so listing or checking the
words costs nothing (no torch, no ONNX Runtime). ``auto`` is a choice, not a backend: on a CPU
in fp32 it runs the fastest exact path this CPU measured among those built (:mod:`.race`), and
for a large run with nothing built yet it asks for the compiled tower to be built first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    import torch

    from .base import Backend

ENV = "ECHOCLIP_BACKEND"
BACKENDS = {  # word -> "module:class", relative to this package
    "torch": "eager:TorchBackend",
    "compiled": "compiled:CompiledBackend",
    "onnx": "onnx:OnnxBackend",
}
WORDS = ("auto", *BACKENDS)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
CPU_FAST_HINT = "pip install 'echoclip[cpu-fast]'"


@dataclass(frozen=True)
class Choice:
    """What a run uses: a backend word, the precision it runs (None: the device's own choice, torch
    only), and whether the compiled tower should be built first (``auto``, a large run)."""

    name: str
    precision: str | None = None
    build_first: bool = False


_LOADED: dict[str, "Backend"] = {}


def get(name: str) -> "Backend":
    """The backend called ``name`` (imported on first use)."""
    if name not in _LOADED:
        module, cls = BACKENDS[name].split(":")
        _LOADED[name] = getattr(import_module(f".{module}", __package__), cls)()
    return _LOADED[name]


def word(spec: str | None) -> str:
    """``--backend`` normalised: ``auto`` means ``ECHOCLIP_BACKEND`` where that is set."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = (os.environ.get(ENV) or "auto").strip().lower()
    if spec not in WORDS:
        raise UsageError(f"unknown backend {spec!r}: use {', '.join(WORDS)}")
    return spec


def check(backend: str | None, precision: str | None) -> None:
    """``--backend`` and ``--precision`` as words, before anything loads (no torch): a usage error
    for a combination no device could run."""
    from importlib.util import find_spec

    name, precision = word(backend), (precision or "auto").strip().lower()
    if name == "compiled" and precision not in ("auto", "fp32"):
        raise UsageError(f"the compiled backend runs fp32, not {precision}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS[:-1])} or int8")
    if precision == "int8" and name == "torch":
        raise UsageError("int8 runs on the onnx backend only", hint="use --backend onnx")
    if name == "onnx" and precision in ("bf16", "fp16"):
        raise UsageError(f"the onnx backend runs fp32 or int8, not {precision}")
    if (name == "onnx" or precision == "int8") and not all(find_spec(m) for m in ("onnxruntime", "onnx")):
        raise UsageError("the onnx backend needs onnxruntime and onnx", hint=CPU_FAST_HINT)


def choose(backend: str | None, precision: str, device: "torch.device", bundle: Any,
           inputs: int | None = None, *, jit: bool = False) -> Choice:
    """The backend a run of ``inputs`` inputs uses on ``device`` for ``bundle``. ``jit``
    (``torch.compile`` of the eager tower) keeps ``auto`` on torch."""
    if jit and (backend or "auto").strip().lower() == "auto" and not os.environ.get(ENV):
        return Choice("torch")
    name, precision = word(backend), precision.strip().lower()
    if jit and name != "torch":
        raise UsageError(f"--compile is for the torch backend, not {name}")
    if precision == "int8" and name == "auto":
        name = "onnx"
    if name == "auto":
        return _auto(precision, device, bundle, inputs)
    if name == "torch" and precision == "int8":
        raise UsageError("int8 runs on the onnx backend only", hint=f"use --backend onnx ({CPU_FAST_HINT})")
    chosen = get(name)
    if device.type not in chosen.devices:
        raise UsageError(f"the {name} backend runs on the CPU, not {device}", hint="use --device cpu")
    if name != "torch" and precision not in ("auto", *chosen.precisions):
        raise UsageError(f"the {name} backend runs {' or '.join(chosen.precisions)}, not {precision}",
                         hint="use --device cpu --precision fp32" if name == "compiled" else None)
    reason = chosen.missing()
    if reason:
        raise UsageError(reason)
    return Choice(name, None if name == "torch" else ("fp32" if precision == "auto" else precision))


def _auto(precision: str, device: "torch.device", bundle: Any, inputs: int | None) -> Choice:
    """``auto``: on a CPU in fp32 the fastest exact path built here; else eager torch."""
    from ..device import resolve_precision

    if device.type != "cpu" or resolve_precision(precision, device) is not _fp32():
        return Choice("torch")
    from . import compiled, race

    name, path_precision = race.fastest_built(bundle)
    if (name == "torch" and (inputs or 0) >= compiled.AUTO_BUILD_INPUTS and not compiled.attempted(bundle)
            and compiled.compiler_found()):
        return Choice("torch", build_first=True)
    return Choice(name, path_precision)


def _fp32() -> Any:
    import torch

    return torch.float32
