"""Loading the model a command runs, once its arguments have been checked.

Commands check every argument first (through the library's own checks in ``echoclip_cli.api``),
then load the weights here with a status line, and hand the model to the library call: a usage
mistake costs a second, not a 600 MB model load or a hub download attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import info
from .progress import status

if TYPE_CHECKING:
    from ..inference import EchoClip
    from ..model import EchoClipModel


def open_model(weights: str, *, device: str, precision: str, deterministic: bool = False, compile: bool = False,
               quiet: bool = False, lazy: bool = False, backend: str = "auto", inputs: int | None = None) -> "EchoClip":
    """Load ``weights`` (a status line on stderr meanwhile: loading takes seconds on a CPU). With
    ``lazy`` the weights are checked now and the network is built when first used: commands whose
    frames and prompts come from caches then never load it."""
    from ..api import check_backend, device_for_rank

    check_backend(backend, precision)
    from ..inference import load_model

    with status(f"loading weights {weights}…", quiet):
        model = load_model(weights, device=device_for_rank(device), precision=precision, deterministic=deterministic,
                           compile=compile, lazy=lazy, backend=backend, note=None if quiet else info,
                           inputs=inputs)
    if lazy and not quiet and model._build is not None:
        build = model._build

        def announced() -> "EchoClipModel":
            info(f"loading weights {weights} (frames or prompts not in the caches)…")  # above the bar
            return build()

        model._build = announced
    return model
