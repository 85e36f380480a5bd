"""Which weights a command runs, and loading them once its arguments have been checked.

Commands check every argument first (inputs exist, option values, task names, stores readable),
then call :func:`weights_for` and :func:`open_model`: a usage mistake costs a second, not a
600 MB model load or a hub download attempt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import EchoclipError, UsageError
from .progress import status

if TYPE_CHECKING:
    from ..inference import EchoClip


def device_for_rank(device: str) -> str:
    """Under torchrun, ``auto`` means this process's own GPU (LOCAL_RANK)."""
    if device == "auto" and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def store_header(store: Path) -> dict[str, Any]:
    """A store's header, or a usage error when ``store`` is not a readable store."""
    from ..store import read_header

    if not store.exists():
        raise UsageError(f"no such store: {store}")
    try:
        return read_header(store)
    except EchoclipError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None


def weights_for(weights: Optional[str], store: Optional[Path], default: str) -> str:
    """The weights to load: ``--weights``, else the store's own (found by hash among installed
    bundles, never by taking its recorded name as a path), else ``default``. ``--weights`` that
    differ from the store's are a usage error."""
    if store is None:
        return weights or default
    from .. import weights as w

    recorded = store_header(store)["weights"]
    name, sha = str(recorded.get("name")), str(recorded.get("sha256"))
    if weights is not None:
        chosen = w.resolve(weights, auto_pull=False)
        if chosen.weights_sha256 != sha:
            raise UsageError(f"{store} holds embeddings from weights {name!r} ({sha[:12]}…), not {weights!r}",
                             hint="leave out --weights to use the store's own weights")
        return weights
    bundle = w.installed_by_sha256(sha, prefer=name)
    if bundle is None:
        hint = (w.manual_import_hint(name) if name in w.REGISTRY
                else "install them with `echoclip weights import CHECKPOINT --name NAME`")
        raise UsageError(f"{store} holds embeddings from weights {name!r} ({sha[:12]}…), which are not installed",
                         hint=hint)
    return bundle.name


def open_model(weights: str, *, device: str, precision: str, deterministic: bool = False, compile: bool = False,
               quiet: bool = False) -> "EchoClip":
    """Load ``weights`` (a status line on stderr meanwhile: loading takes seconds on a CPU)."""
    from ..inference import load_model

    with status(f"loading weights {weights}…", quiet):
        return load_model(weights, device=device_for_rank(device), precision=precision, deterministic=deterministic,
                          compile=compile)
