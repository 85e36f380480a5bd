"""The stores this machine's echoclip has written, remembered in the echoclip home.

Every store ``embed --out`` (or ``store merge``) writes is noted here when it is created and
after each part, so that ``echoclip search "severe MR"`` without ``--store`` can look through
what echoclip has already embedded (:mod:`echoclip_cli.held`). One small JSON file per
store, ``$ECHOCLIP_HOME/stores/<digest of its path>.json``::

    {"path": "/data/archive.store", "weights": "echo-clip-r", "weights_sha256": "…",
     "videos": 1200, "bytes": 2500000, "updated": "2026-01-02T10:00:00+00:00"}

One file per store, not one shared list: processes writing different stores at once (SLURM
array tasks, torchrun ranks, on a home shared by a lab) each replace only their own entry,
atomically, so none loses another's without any lock. Remembering is best effort: a read-only
or full home costs the entry, never the run (:func:`remember` says whether it was kept).

Light: imports nothing of the package but :mod:`echoclip_cli.files`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .files import atomic_write_text, home

FOLDER = "stores"


@dataclass(frozen=True)
class Remembered:
    """One remembered store: where it was written, by which weights, how large it was then."""

    path: Path
    weights: str
    weights_sha256: str
    videos: int | None = None  # as its last writer counted them (None: not counted yet)
    bytes: int | None = None  # of its parts when last written
    updated: str | None = None  # ISO time of the last write

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "path": str(self.path)}


def folder() -> Path:
    return home() / FOLDER


def where(path: str | os.PathLike[str]) -> Path:
    """A store's path as remembered: absolute, links resolved (one entry per store)."""
    return Path(os.path.realpath(path))


def _entry_file(path: Path) -> Path:
    return folder() / f"{hashlib.sha256(str(path).encode('utf-8', 'surrogateescape')).hexdigest()[:24]}.json"


def remember(path: str | os.PathLike[str], weights: str, weights_sha256: str, videos: int | None = None) -> bool:
    """Note (or update) a store; ``videos`` None keeps the count noted before. False when the
    home cannot be written (the run goes on: the store is then searched only with ``--store``)."""
    store = where(path)
    entry = _entry_file(store)
    before = _read(entry)
    if videos is None and before is not None and before.weights_sha256 == weights_sha256:
        videos = before.videos
    noted = Remembered(store, weights, weights_sha256, videos, _part_bytes(store),
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry, json.dumps(noted.as_dict(), indent=1) + "\n")
    except OSError:
        return False
    return True


def _part_bytes(store: Path) -> int | None:
    try:
        return sum(p.stat().st_size for p in store.glob("part-*.safetensors"))
    except OSError:
        return None


def _read(entry: Path) -> Remembered | None:
    """An entry file, or None when it is missing or unreadable (a damaged entry is ignored)."""
    try:
        data = json.loads(entry.read_text(encoding="utf-8"))
        return Remembered(Path(data["path"]), str(data["weights"]), str(data["weights_sha256"]),
                          data.get("videos"), data.get("bytes"), data.get("updated"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remembered() -> list[Remembered]:
    """Every remembered store, oldest write first."""
    if not folder().is_dir():
        return []
    found = [entry for file in sorted(folder().glob("*.json")) if (entry := _read(file)) is not None]
    return sorted(found, key=lambda e: (e.updated or "", str(e.path)))


def forget(path: str | os.PathLike[str]) -> Remembered | None:
    """Drop a store from the list (its files stay); the entry dropped, or None when it was not
    remembered. An OSError when the home cannot be written."""
    entry = _entry_file(where(path))
    before = _read(entry)
    if before is None:
        return None
    with contextlib.suppress(FileNotFoundError):  # another process dropped it meanwhile
        entry.unlink()
    return before


__all__ = ["Remembered", "folder", "forget", "remember", "remembered", "where"]
