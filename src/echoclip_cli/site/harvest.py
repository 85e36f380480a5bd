"""The file layer of harvesting: walk paths, read SRs and report texts, place each on its study.

The readers themselves take a pydicom ``Dataset`` (:func:`.sr.labels_from_dataset`) or a text
(:func:`.report_text.labels_from_text`) with its :class:`.context.StudyContext`, so any source
(a DICOMweb server) can feed them; this module only finds files:

- DICOM files (by content, any extension) whose SOP class is a structured report are read as
  measurement SRs; the study is their StudyInstanceUID;
- ``.txt`` files are report texts. A report's study is the StudyInstanceUID of the DICOM objects
  in its own folder when they all share one (the key the zero-shot records of those videos
  carry); else the folder (the key a video without a UID gets), with a note;
- every other file is ignored without a word. An unreadable SR or text is an error record.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Iterator, Sequence

from pydicom.errors import InvalidDicomError

from ..media.discover import looks_like_dicom
from ..media.phi import safe_reason
from ..options import LabelOptions
from .context import StudyContext, context_of
from .labels import LabelRecord, settle
from .report_text import labels_from_text
from .sr import labels_from_dataset

TEXT_SUFFIXES = frozenset({".txt"})
_READ_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError,
                struct.error)  # what pydicom raises for a damaged file
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def _files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                yield from (Path(root) / f for f in sorted(files) if not f.startswith("."))
        else:
            yield path


def _header(path: Path) -> Any | None:
    """The header of a DICOM file (no pixels), None when the file is not DICOM."""
    import pydicom

    if path.suffix.lower() in TEXT_SUFFIXES or not looks_like_dicom(path):
        return None
    return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def _is_sr(ds: Any) -> bool:
    return str(ds.get("SOPClassUID", "")).startswith(SR_CLASS_PREFIX) or str(ds.get("Modality", "")) == "SR"


class _Folders:
    """The study context of each folder's DICOM objects, read once per folder."""

    def __init__(self, options: LabelOptions) -> None:
        self.options = options
        self._seen: dict[Path, tuple[StudyContext, str | None]] = {}

    def context(self, folder: Path) -> tuple[StudyContext, str | None]:
        if folder not in self._seen:
            self._seen[folder] = self._read(folder)
        return self._seen[folder]

    def _read(self, folder: Path) -> tuple[StudyContext, str | None]:
        found: dict[str, Any] = {}
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            try:
                ds = _header(path)
            except _READ_ERRORS:  # an unreadable neighbour only costs the report its study UID
                continue
            uid = str(ds.get("StudyInstanceUID", "") or "") if ds is not None else ""
            if uid:
                found.setdefault(uid, ds)
        fallback = str(folder)
        if len(found) == 1:
            ds = next(iter(found.values()))
            return context_of(ds, fallback, keep_phi=self.options.keep_phi, salt=self.options.salt), None
        note = (f"its folder holds {len(found)} studies: the report's study is its folder" if found else None)
        return StudyContext(study=fallback), note


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def harvest_paths(paths: Sequence[Path], options: LabelOptions) -> list[LabelRecord]:
    """Label records of every SR and report text under ``paths`` (files, or folders walked),
    settled per study: each study's label marked ``primary``, conflicts reported."""
    folders = _Folders(options)
    records: list[LabelRecord] = []
    for path in _files(paths):
        records += _harvest_file(path, folders, options)
    return settle(records, options.tolerance)


def _harvest_file(path: Path, folders: _Folders, options: LabelOptions) -> list[LabelRecord]:
    source = str(path)
    if path.suffix.lower() in TEXT_SUFFIXES:
        try:
            text = _read_text(path)
        except OSError as exc:
            return [LabelRecord(source=source, error=f"{source}: cannot read the report ({safe_reason(exc)})")]
        context, note = folders.context(path.parent)
        found = labels_from_text(text, source=source, context=context)
        for record in found:
            record.note = "; ".join(n for n in (record.note, note) if n) or None
        return found
    try:
        ds = _header(path)
    except _READ_ERRORS as exc:  # a damaged file: one record, the run goes on
        return [LabelRecord(source=source, error=f"{source}: cannot read ({type(exc).__name__}: {safe_reason(exc)})")]
    if ds is None or not _is_sr(ds):
        return []
    context = context_of(ds, str(path.parent), keep_phi=options.keep_phi, salt=options.salt)
    try:
        return labels_from_dataset(ds, source, context)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return [LabelRecord(source=source, study=context.study,
                            error=f"{source}: a damaged SR content tree ({type(exc).__name__}: {safe_reason(exc)})")]
