"""Turn the paths a user gives into input files: walk folders, recognise DICOM by content.

* A file named on the command line is always an input (if it cannot be read, that is reported).
* Inside folders (recursively): video files by extension, our ``.safetensors`` files, ``.dcm``-like
  extensions, and any other file whose bytes look like DICOM (many echo exports have no
  extension). Everything else (notes, thumbnails, ``.DS_Store``) is ignored without a word.
* DICOMDIR files and DICOM objects that hold no image (structured reports, waveforms,
  presentation states, encapsulated PDFs, …) are reported as skipped records, not errors.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Sequence

from ..files import has_dicom_preamble, head
from .store_file import SUFFIX as STORE_SUFFIX
from .store_file import is_store_file
from .video import VIDEO_EXTENSIONS

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic", ".ima"})

# SOP classes that never hold an image (prefix match on the SOP Class UID).
_NON_IMAGE_SOP = {
    "1.2.840.10008.1.3.10": "DICOMDIR (a directory of other files)",
    "1.2.840.10008.5.1.4.1.1.88.": "structured report",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT dose",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
}

# A DICOM dataset written without preamble starts with a (0002,00xx) or (0008,00xx) tag.
_BARE_GROUPS_LE = (b"\x02\x00", b"\x08\x00")
_BARE_GROUPS_BE = (b"\x00\x02", b"\x00\x08")


def looks_like_dicom(path: Path) -> bool:
    """The preamble, or a bare dataset (no preamble) starting with a group 0002 or 0008 element."""
    data = head(path)
    if has_dicom_preamble(data):
        return True
    if len(data) < 8:
        return False
    return (data[:2] in _BARE_GROUPS_LE and data[3] == 0) or (data[:2] in _BARE_GROUPS_BE and data[2] == 0)


def input_kind(path: Path) -> str:
    """How to read a file: "store" (our safetensors), "video" or "dicom" (the default)."""
    suffix = path.suffix.lower()
    if suffix == STORE_SUFFIX:
        return "store"
    if suffix in VIDEO_EXTENSIONS and not looks_like_dicom(path):
        return "video"
    return "dicom"


def non_image_reason(path: Path) -> str | None:
    """Why a DICOM file holds no image (DICOMDIR, report, …), or ``None`` if it may hold one."""
    if path.name.upper() == "DICOMDIR":
        return _NON_IMAGE_SOP["1.2.840.10008.1.3.10"]
    if path.suffix.lower() in VIDEO_EXTENSIONS or path.suffix.lower() == STORE_SUFFIX:
        return None
    import struct

    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        sop_class = str(read_file_meta_info(path).get("MediaStorageSOPClassUID", ""))
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, struct.error):
        return None  # unreadable meta: the reader reports the real problem
    for prefix, what in _NON_IMAGE_SOP.items():
        if sop_class == prefix or (prefix.endswith(".") and sop_class.startswith(prefix)):
            return what
    return None


def _wanted_in_folder(path: Path) -> bool:
    suffix = path.suffix.lower()
    if path.name.startswith("."):
        return False
    if suffix in VIDEO_EXTENSIONS or suffix in DICOM_EXTENSIONS or path.name.upper() == "DICOMDIR":
        return True
    if suffix == STORE_SUFFIX:
        return is_store_file(path)
    return looks_like_dicom(path)


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file (a FIFO, socket or device: opening one can block
    forever), without opening it; None for a regular file (symlinks followed)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{kind}, not read"


def _walk(folder: Path, recursive: bool, records: list[dict[str, Any]]) -> list[Path]:
    """Regular input files under ``folder``; other entries and unreadable folders go to ``records``."""
    def note(path: Path, reason: str, kind: str = "skipped") -> None:
        records.append({"source": str(path), "error": f"{path}: {reason}", "kind": kind})

    def wanted(path: Path) -> bool:
        if path.name.startswith("."):
            return False
        reason = _not_regular(path)
        if reason is not None:
            note(path, f"skipped, {reason}")
            return False
        return _wanted_in_folder(path)

    if not recursive:
        return [p for p in folder.iterdir() if not p.is_dir() and wanted(p)]
    found = []

    def unreadable(exc: OSError) -> None:
        note(Path(exc.filename or folder), f"folder not read ({exc.strerror})", "error")

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / f for f in files if wanted(Path(root) / f)]
    return found


def find_inputs(
    paths: Sequence[str | os.PathLike[str]], recursive: bool = True
) -> tuple[list[Path], list[dict[str, Any]]]:
    """(input files in a stable sorted order, records for paths that are not inputs).

    Each record is ``{"source", "error", "kind"}`` with kind "skipped" (DICOMDIR, non-image
    DICOM) or "error" (a path that does not exist).
    """
    candidates: dict[str, Path] = {}
    records: list[dict[str, Any]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            candidates.update((str(p), p) for p in _walk(path, recursive, records))
        elif not path.exists() and not path.is_symlink():
            records.append({"source": str(path), "error": f"{path}: no such file or folder", "kind": "error"})
        elif (reason := _not_regular(path)) is not None:
            records.append({"source": str(path), "error": f"{path}: {reason}", "kind": "error"})
        else:
            candidates[str(path)] = path
    files = []
    for key in sorted(candidates):
        reason = non_image_reason(candidates[key])
        if reason:
            records.append({"source": key, "error": f"{key}: skipped, {reason}", "kind": "skipped"})
        else:
            files.append(candidates[key])
    return files, records
