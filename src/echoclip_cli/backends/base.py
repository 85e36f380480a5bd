"""The seam every way of running the image tower plugs into.

A *backend* (one module of this package, named in :mod:`.registry`) knows how to make a
:class:`Tower` for a bundle on this machine: what it needs that may be missing here, whether it
is built and checked on this CPU, how to build and check it, and which use cases its measured
numerics allow. A *tower* is what runs: images in, unnormalised embeddings out, plus the
numerics that records and stores carry.

Nothing here imports a use case: where a check needs task accuracy (EF, device scores), the
caller hands it in as :data:`TaskNumbers`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import torch

Note = Callable[[str], None]
MIN_GAIN = 1.05  # a fast path is used only where it measured at least this much faster than eager torch
# per-video frame embeddings (normalised, T×E each) -> task name -> one number per video
TaskNumbers = Callable[[list["np.ndarray"]], dict[str, list[float]]]


def quiet(_: str) -> None:
    """A :data:`Note` that hears nothing."""


class Tower(Protocol):
    """A runnable image tower: float images (N,3,S,S), normalised as the bundle says, in;
    unnormalised embeddings (N,E) out (fp32)."""

    name: str  # the backend word that made it: torch, compiled or onnx

    def __call__(self, images: "torch.Tensor") -> "torch.Tensor": ...

    @property
    def precision(self) -> str: ...

    @property
    def numerics(self) -> dict[str, str]:
        """What records and stores say made the embeddings: ``{"backend", "precision"}``."""
        ...

    def refusal(self, task: str) -> str | None:
        """Why ``task`` may not run on this tower on this CPU (None: it may)."""
        ...


class Reference(Protocol):
    """What building and checking a backend needs of the eager fp32 model it is measured against."""

    bundle: Any

    @property
    def preprocess(self) -> Any: ...

    @property
    def visual(self) -> "torch.nn.Module": ...

    def encode_image(self, images: "torch.Tensor") -> "torch.Tensor": ...


class Backend(ABC):
    """One way of running the image tower. Subclasses are singletons found through the registry."""

    name: ClassVar[str]
    label: ClassVar[str] = ""  # how messages name it (default: "the NAME backend")
    precisions: ClassVar[tuple[str, ...]]  # what --precision may say for it ("auto" aside)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # torch device types it runs on

    def missing(self) -> str | None:
        """Why it cannot run here at all (a package not installed), or None. Imports nothing heavy."""
        return None

    def built(self, bundle: Any) -> "Path | None":
        """Its file for ``bundle`` when built and checked on this CPU (never builds), else None."""
        return None

    def gain(self, bundle: Any) -> float | None:
        """Its speed against eager torch as measured when it was built or checked, if it was."""
        return None

    def prune(self, bundle: Any) -> int:
        """Delete its built files for ``bundle`` and keep what was measured (so ``--backend auto``
        does not build it again): eager torch ran faster on this CPU. Bytes freed."""
        return 0

    def not_kept(self, bundle: Any) -> str | None:
        """What it measured here, when it was built, measured slower than eager torch and its files
        deleted (:meth:`prune`); None otherwise."""
        return None

    def usable(self, bundle: Any) -> bool:
        """Built and checked on this CPU, and measured at least :data:`MIN_GAIN` times faster than eager."""
        return self.built(bundle) is not None and (self.gain(bundle) or 0.0) >= MIN_GAIN

    def optimise(self, bundle: Any, reference: Callable[[], Reference], note: Note,
                 task_numbers: Callable[[Reference], TaskNumbers | None], force: bool = False) -> None:
        """What ``echoclip weights optimise`` does for this backend: build and check it (again with
        ``force``), or say what it measured when it was built and checked on this CPU."""
        self.ensure(bundle, reference, note, task_numbers)

    @abstractmethod
    def ensure(self, bundle: Any, reference: Callable[[], Reference], note: Note,
               task_numbers: Callable[[Reference], TaskNumbers | None]) -> None:
        """Build and check it for ``bundle`` on this CPU unless that is done (``reference`` makes the
        eager model only when needed). Raises :class:`~echoclip_cli.errors.UsageError` when it cannot."""

    @abstractmethod
    def tower(self, bundle: Any, precision: str, encode: Callable[["torch.Tensor"], "torch.Tensor"] | None = None,
              **options: Any) -> Tower:
        """The runnable tower (built already: :meth:`ensure`)."""


PRUNED = "pruned.json"  # beside a backend's measurements: its files were deleted, torch ran faster


def prune_files(where: "Path", files: "list[Path]", reason: str) -> int:
    """Delete ``files``, keep the measurements in ``where``, and say why in :data:`PRUNED`."""
    from ..files import atomic_write_text

    freed = 0
    for path in files:
        try:
            freed += path.stat().st_size
            path.unlink()
        except OSError:
            continue
    atomic_write_text(where / PRUNED, json.dumps({"reason": reason, "freed_bytes": freed}, indent=1))
    return freed
