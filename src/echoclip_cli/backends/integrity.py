"""Built towers are code: a swapped file must never run.

A compiled package (``visual.pt2`` holds a shared library that runs when it is loaded) or an
ONNX export is recorded by sha256 when it is built or exported (``integrity.json`` beside it),
and checked before it is loaded, as the weights' own stamp is: a file whose size, modification
time, inode and change time are as recorded is trusted without reading it (no user can set a
change time back); any other is hashed again, and a hash that differs means the file is not
the one that was checked. Then it is rebuilt or refused, never run. A copied home re-hashes once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..files import atomic_write_text, sha256_file

RECORD = "integrity.json"


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"


def _read(folder: Path) -> dict[str, dict[str, str]]:
    try:
        found = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def record(files: Iterable[Path]) -> None:
    """Record the sha256 (and stamp) of built ``files``, all in one folder."""
    files = list(files)
    if not files:
        return
    folder = files[0].parent
    entries = _read(folder)
    for path in files:
        entries[path.name] = {"sha256": sha256_file(path), "stamp": _stamp(path)}
    atomic_write_text(folder / RECORD, json.dumps(entries, indent=1))


def problem(path: Path) -> str | None:
    """Why ``path`` may not be loaded (None: it is the file that was built and checked)."""
    entry = _read(path.parent).get(path.name)
    if not entry:
        return f"{path.name} has no recorded sha256 (built by an older echoclip, or not by echoclip)"
    try:
        if entry.get("stamp") == _stamp(path):
            return None
        actual = sha256_file(path)
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror})"
    if actual != entry.get("sha256"):
        return f"{path.name} changed since it was built and checked (sha256 {actual[:12]}…, recorded {str(entry.get('sha256'))[:12]}…)"
    _restamp(path, entry)  # the same bytes (a copied home): trust its new stamp
    return None


def _restamp(path: Path, entry: dict[str, str]) -> None:
    entries = _read(path.parent)
    entries[path.name] = {**entry, "stamp": _stamp(path)}
    try:
        atomic_write_text(path.parent / RECORD, json.dumps(entries, indent=1))
    except OSError:
        pass  # a read-only home: hashed again next time, still never trusted unread
