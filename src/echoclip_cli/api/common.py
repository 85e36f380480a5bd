"""What every use case shares: finding inputs, reading a store's header, checking a model
against a store and against the use case's numerics, and the progress hook.

Light at import (no torch), so that checking arguments never waits for the model stack.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from ..errors import EchoclipError, UsageError

if TYPE_CHECKING:
    from ..inference import EchoClip

PathLike = str | os.PathLike[str]


class Progress(Protocol):
    """What a long call reports while it runs (the CLI draws a bar from it)."""

    def start(self, total: int, frames_per_item: int | None) -> None: ...
    def frames(self, count: int) -> None: ...
    def item(self, n_frames: int) -> None: ...
    def note(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...


class Silent:
    """A :class:`Progress` that hears nothing (the default)."""

    def start(self, total: int, frames_per_item: int | None) -> None:
        pass

    def frames(self, count: int) -> None:
        pass

    def item(self, n_frames: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class Found(list):  # type: ignore[type-arg]
    """Input files found by :func:`find` (a list of paths), with ``skipped``: one record
    ``{"source", "error", "kind"}`` for each path that is not an input (DICOMDIR, SR, …). Passing
    it to a use-case call skips looking again."""

    def __init__(self, files: Sequence[Path], skipped: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(files)
        self.skipped = list(skipped)


def given_paths(inputs: Sequence[PathLike] | None, what: str = "files or folders") -> list[Path]:
    """The paths given, checked: at least one, each existing (else a usage error)."""
    paths = [Path(p) for p in inputs or ()]
    if not paths:
        raise UsageError(f"no inputs: give {what}, or --dir DIR")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing[:3])}")
    return paths


def find(inputs: Sequence[PathLike] | None) -> Found:
    """Input files from paths (folders searched recursively), in a stable order; a usage error
    when none is given or one does not exist."""
    from ..media.discover import find_inputs

    if isinstance(inputs, Found):
        return inputs
    return Found(*find_inputs(given_paths(inputs)))


def store_header(store: PathLike) -> dict[str, Any]:
    """A store's header, or a usage error when ``store`` is not a readable store. Read once while
    it is unchanged: a call checks it, its model against it and its inputs against it."""
    path = Path(store)
    if not path.exists():
        raise UsageError(f"no such store: {path}")
    try:
        stat = (path / "store.json").stat()
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    except OSError:
        stamp = (0, 0, 0)  # read_header says what is wrong
    return copy.deepcopy(_read_header(str(path), stamp))


@functools.lru_cache(maxsize=16)
def _read_header(path: str, stamp: tuple[int, int, int]) -> dict[str, Any]:
    from ..store import read_header

    try:
        return read_header(Path(path))
    except EchoclipError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None


def inputs_or_store(inputs: Sequence[PathLike] | None, store: PathLike | None) -> Found | None:
    """The input files, or None when a ``store`` is read instead (checked: one or the other)."""
    if store is not None:
        if inputs:
            raise UsageError("give INPUTS (or --dir) or --store, not both")
        store_header(store)
        return None
    return find(inputs)


def weights_for(weights: str | None, store: PathLike | None, default: str) -> str:
    """The weights to load: ``weights``, else the store's own (found by sha256 among installed
    bundles, never by taking its recorded name as a path), else ``default``. Weights that differ
    from the store's are a usage error."""
    if store is None:
        return weights or default
    from .. import weights as w
    from ..store import check_weights

    header = store_header(store)
    recorded = header["weights"]
    name, sha = str(recorded.get("name")), str(recorded.get("sha256"))
    if weights is not None:
        check_weights(Path(store), header, weights, w.resolve(weights, auto_pull=False).weights_sha256)
        return weights
    bundle = w.installed_by_sha256(sha, prefer=name)
    if bundle is None:
        hint = (w.manual_import_hint(name) if name in w.REGISTRY
                else "install them with `echoclip weights import CHECKPOINT --name NAME`")
        raise UsageError(f"{store} holds embeddings from weights {name!r} ({sha[:12]}…), which are not installed",
                         hint=hint)
    return bundle.name


def check_model(model: "EchoClip", task: str, store: PathLike | None = None) -> "EchoClip":
    """``model``, checked: made with the store's weights (when a ``store`` is read), and running a
    tower whose measured numerics allow ``task`` on this CPU (eager torch always does)."""
    if store is not None:
        from ..store import check_weights

        check_weights(Path(store), store_header(store), model.bundle.name, model.weights_sha256)
    reason = model.tower.refusal(task)
    if reason:
        raise UsageError(reason, hint="use --backend torch" + (" or --precision fp32" if model.precision != "fp32" else ""))
    return model


def damage_notes(store: Any) -> list[str]:
    """What a reader says about a store's damaged parts (left out; ``echoclip store verify``)."""
    return [f"{message}; its videos are left out (echoclip store verify / repair)" for message in store.damaged]


def check_vocab(template_vocab: PathLike | None) -> None:
    if template_vocab is not None and not Path(template_vocab).is_file():
        raise UsageError(f"no such template vocabulary: {template_vocab}")
