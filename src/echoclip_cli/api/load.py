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
    compile: bool = False,
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
    ``compile=True`` wraps the eager tower in ``torch.compile``. ``lazy=True`` checks the weights'
    hash now and builds the network on first use. ``note`` hears what first use does.
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
    choice = registry.choose(backend, precision, torch_device, bundle, inputs, jit=compile)
    dtype = resolve_precision(precision, torch_device) if choice.name == "torch" else torch.float32
    strict_fp32(torch_device, dtype)
    set_deterministic(deterministic)
    w.ensure_verified(bundle)
    choice = _build_first(bundle, choice, inputs, say)
    model = assemble(bundle, torch_device, dtype, choice.name, choice.precision, jit=compile, lazy=lazy)
    if lazy and note is not None:
        model.on_build = lambda: note(f"loading weights {bundle.name} (frames or prompts not in the caches)…")
    return model


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
