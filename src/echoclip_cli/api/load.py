"""Loading the model every use case takes first.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip")                       # strict, verified weights
    >>> model = echoclip_cli.load_model(store="archive.store")             # the weights that made a store
    >>> model = echoclip_cli.load_model("echo-clip", device="cpu", backend="onnx", precision="int8")
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from ..backends import registry
from ..defaults import DEFAULT_WEIGHTS
from .common import PathLike, weights_for

if TYPE_CHECKING:
    import torch

    from ..inference import EchoClip
    from ..weights import Bundle


def load_model(
    weights: "str | os.PathLike[str] | Bundle | None" = None,
    *,
    store: PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    deterministic: bool = False,
    compile: bool | None = None,
    lazy: bool = False,
    note: Callable[[str], None] | None = None,
    inputs: int | None = None,
) -> "EchoClip":
    """Load weights (a name, a path or a bundle; else the weights that made ``store``; else
    ``echo-clip``) strictly onto ``device`` in ``precision``.

    ``device``: auto (a GPU where there is one; under torchrun this rank's own GPU), cpu, cuda[:N].
    ``backend``: ``torch`` (eager); ``compiled`` (CPU, fp32: the tower compiled ahead of time for
    this CPU); ``onnx`` (CPU, the ``cpu-fast`` extra; ``precision`` fp32 or int8); or ``auto``
    (also ``ECHOCLIP_BACKEND``): on a CPU in fp32 the fastest exact path built and measured here,
    else eager torch. A backend not built yet is built and checked on first use; a run of
    ``inputs`` ≥ 200 on a CPU where nothing was tried builds the compiled tower first (once).
    ``compile=True`` wraps the eager tower in ``torch.compile``; ``None`` (the default) does so on
    CUDA for a run of :data:`COMPILE_FROM` inputs or more, or of an unknown number (an archive),
    where the one-off compilation pays for itself (:func:`compile_by_default`); a compilation that
    fails falls back to the eager tower, said once. ``lazy=True`` checks the weights' hash now and
    builds the network on first use. ``note`` hears what first use does.
    """
    import torch

    from .. import weights as w
    from ..device import resolve_device, resolve_precision, set_deterministic, strict_fp32
    from ..inference import assemble

    say = note or (lambda _: None)
    if store is not None and not isinstance(weights, w.Bundle):
        weights = weights_for(None if weights is None else str(weights), store, DEFAULT_WEIGHTS)
    bundle = weights if isinstance(weights, w.Bundle) else w.resolve(weights)
    torch_device = resolve_device(device_for_rank(device))
    if compile is None:
        compile = compile_by_default(torch_device, backend, inputs)
    choice = registry.choose(backend, precision, torch_device, bundle, inputs, jit=compile)
    dtype = resolve_precision(precision, torch_device) if choice.name == "torch" else torch.float32
    strict_fp32(torch_device, dtype)
    set_deterministic(deterministic)
    w.ensure_verified(bundle)
    choice = _build_first(bundle, choice, inputs, say)
    model = assemble(bundle, torch_device, dtype, choice.name, choice.precision, jit=compile, lazy=lazy)
    if lazy and note is not None:
        model.on_build = lambda: note(f"loading weights {bundle.name} (frames or prompts not in the caches)…")
    model.note = note
    return model


COMPILE_FROM = 64  # inputs from which a CUDA run compiles its tower by default (~1 min once; then 1.4x)


def compile_by_default(device: "torch.device", backend: str | None, inputs: int | None) -> bool:
    """Whether a run compiles its eager torch tower when not told: on CUDA only (on a CPU the
    compiled backend is built ahead of time instead), with the eager backend (``auto`` picks it on
    CUDA), for a large run or one of unknown size; ``ECHOCLIP_COMPILE=0`` or ``1`` decides instead.
    The compiled kernels are cached across runs in the weights home (:func:`compile_cache`)."""
    chosen = os.environ.get("ECHOCLIP_COMPILE", "").strip()
    if chosen in ("0", "1"):
        wanted = chosen == "1"
    else:
        wanted = device.type == "cuda" and (inputs is None or inputs >= COMPILE_FROM)
    if wanted and registry.word(backend) not in ("auto", "torch"):  # the registry reads ECHOCLIP_BACKEND
        return False
    if wanted:
        compile_cache()
    return wanted


def compile_cache() -> None:
    """Keep torch.compile's caches in the weights home (``inductor/``), so a later run reuses the
    kernels instead of compiling again (unless the user chose a place: TORCHINDUCTOR_CACHE_DIR)."""
    from ..files import home

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home() / "inductor"))


def _build_first(bundle: "Bundle", choice: registry.Choice, inputs: int | None,
                 note: Callable[[str], None]) -> registry.Choice:
    """Build what the choice needs before the run: the chosen CPU backend on first use, or for
    ``auto`` on a large run the compiled tower (kept only where it measured faster)."""
    from .. import optimising

    if choice.build_first:
        return registry.Choice("compiled", "fp32") if optimising.auto_build(bundle, inputs or 0, note) else \
            registry.Choice("torch")
    if choice.name != "torch":
        optimising.ensure(bundle, choice.name, note)
    return choice


def device_for_rank(device: str) -> str:
    """Under torchrun, ``auto`` and a bare ``cuda`` mean this process's own GPU (LOCAL_RANK modulo
    the GPUs there are), made the current device so that every CUDA call of the rank lands on it."""
    if device in ("auto", "cuda") and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            index = int(os.environ["LOCAL_RANK"]) % max(1, torch.cuda.device_count())
            torch.cuda.set_device(index)
            return f"cuda:{index}"
    return device
