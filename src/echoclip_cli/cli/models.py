"""Loading the model a command runs, once its arguments have been checked.

Commands check every argument first (through the library's own checks), then load the weights
here with a status line, and hand the model to the library call: a usage mistake costs a second,
not a 600 MB model load or a hub download attempt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .common import info
from .progress import status

if TYPE_CHECKING:
    from ..inference import EchoClip


def open_model(weights: Optional[str], *, default: str, store: Optional[Path] = None, device: str,
               precision: str, deterministic: bool = False, compile: bool | None = None, quiet: bool = False,
               lazy: bool = False, backend: str = "auto", inputs: int | None = None) -> "EchoClip":
    """Load ``weights`` (else a ``store``'s own, else ``default``) with a status line on stderr
    meanwhile: loading takes seconds on a CPU. With ``lazy`` the weights are checked now and the
    network is built when first used (said above the bar): commands whose frames and prompts come
    from caches then never load it."""
    from ..backends import registry

    registry.check(backend, precision)
    from ..api import load_model, weights_for

    name = weights_for(weights, store, default)
    with status(f"loading weights {name}…", quiet):
        return load_model(name, device=device, precision=precision, deterministic=deterministic, compile=compile,
                          lazy=lazy, backend=backend, note=None if quiet else info, inputs=inputs)
