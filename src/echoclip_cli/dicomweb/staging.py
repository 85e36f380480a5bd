"""An archive's instances as local files holding only what a run reads.

For each instance of a study: its metadata first (WADO-RS metadata, asked once per series; per
instance where the server cannot answer for a series). A clip whose header already
says it will not be scored (another modality, a still, a Doppler or M-mode strip, when the run
does not want that type) is written header-only: no pixel byte moves. Otherwise only the frames
the sampling reads are fetched (WADO-RS frames, as stored: JPEG frames arrive compressed) and
written as a standard **frame-extracted instance**: the source's header, ``NumberOfFrames`` the
frames held, and the Frame Extraction Module (PS3.3 C.12.3) naming the source SOP instance and,
in its Simple Frame List, the source frame each one is (1-based). The source's frame count is
kept in a private element (:mod:`echoclip_cli.media.extraction`), so the reader
(:mod:`echoclip_cli.media.dicom`) gives the same frame indices, frame count and clip type as it
would for the whole file. A server that cannot serve frames (or holds a video transfer syntax,
whose frames cannot be cut) gives the whole instance instead, said once per run.

Every failure is one instance's: :class:`StagedStudy` keeps its message, and the run gives that
instance an error record (:mod:`echoclip_cli.api.archive`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Sequence

from ..media.extraction import ORIGIN, PRIVATE_CREATOR, PRIVATE_GROUP, SOURCE_FRAMES
from .server import Server, ServerError

# Answers to a frames request that mean "not this way", not "not there": the whole instance is fetched.
_NO_FRAMES = (400, 406, 415, 501)


@dataclass
class StagedStudy:
    """One study's instances as local files (``paths``, in the server's series/instance order),
    each with its source (the instance's WADO-RS URL) and, where fetching failed, its error."""

    study: str
    folder: Path
    paths: list[Path] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # local path → instance URL
    errors: dict[str, str] = field(default_factory=dict)  # local path → why it could not be fetched
    headers: dict[str, Any] = field(default_factory=dict)  # instance URL → its identifying header (:func:`brief`)
    held: int = 0  # instances the run's store holds already (by their URL): not fetched
    not_images: int = 0  # instances that are not images (SRs, …): not inputs
    whole: int = 0  # instances fetched whole (the server could not serve frames)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def stage(
    server: Server,
    study: str,
    instances: Sequence[tuple[str, str]],
    frame_indices: Sequence[int],
    folder: Path,
    *,
    wanted_types: Sequence[str] | None = None,
    warn: Callable[[str], None] | None = None,
    held: Container[str] = (),
) -> StagedStudy:
    """Fetch what a run over ``study`` reads of each ``(series, sop)`` of ``instances`` into
    ``folder`` (see the module doc). ``frame_indices``: the sampled frames (0-based);
    ``wanted_types``: the clip types the run scores (None: all); ``held``: instance URLs the run
    has already (a store it resumes): not fetched at all."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = StagedStudy(study, folder)
    series_metadata: dict[str, dict[str, Any] | None] = {}  # one request per series, where the server can
    for series, sop in instances:
        path = folder / f"{sop}.dcm"  # a UID (checked): reports name the clip by it
        source = server.instance_url(study, series, sop)
        if source in held:
            staged.held += 1
            continue
        try:
            if series not in series_metadata:
                series_metadata[series] = _series_metadata(server, study, series)
            metadata = (series_metadata[series] or {}).get(sop) or server.metadata(study, series, sop)
            kept, header = _stage_one(server, study, series, sop, metadata, path, frame_indices, wanted_types)
        except ServerError as exc:
            staged.paths.append(path)
            staged.sources[str(path)] = source
            staged.errors[str(path)] = exc.message
            continue
        if kept == "not_image":
            staged.not_images += 1
            continue
        staged.paths.append(path)
        staged.sources[str(path)] = source
        staged.headers[source] = header
        if kept == "whole":
            staged.whole += 1
            if warn is not None:
                warn(f"{server.url} cannot serve single frames ({source}): whole instances are fetched instead")
    return staged


def _series_metadata(server: Server, study: str, series: str) -> dict[str, dict[str, Any]] | None:
    """Every instance's metadata of a series in one request (instead of one per instance), or
    None where the server cannot give it that way (each instance is asked then)."""
    try:
        return server.series_metadata(study, series)
    except ServerError:
        if server.down is not None:  # the server is gone: this instance's error, and every next one's
            raise
        return None


def _stage_one(server: Server, study: str, series: str, sop: str, metadata: dict[str, Any], path: Path,
               frame_indices: Sequence[int], wanted_types: Sequence[str] | None) -> tuple[str, Any]:
    """Write one instance's staged file from its ``metadata``; (what was written: ``header``,
    ``frames``, ``whole`` or ``not_image`` (nothing written), its :func:`brief` header)."""
    from ..media import classify

    ds = _dataset(metadata, server.instance_url(study, series, sop))
    if "Rows" not in ds or "Columns" not in ds:
        return "not_image", ds
    _mark(ds, server.instance_url(study, series, sop))
    header = brief(ds)
    header_type = classify.from_header(ds)
    if wanted_types is not None and header_type is not None and header_type[0] not in wanted_types:
        _write(ds, path, None)  # refused from its header: no pixels fetched
        return "header", header
    n_frames = _frame_count(ds)
    numbers = sorted({int(i) + 1 for i in frame_indices if 0 <= int(i) < n_frames})
    if not numbers:
        _write(ds, path, None)  # the reader says which frames were sampled and that none exist
        return "header", header
    try:
        frames = server.frames(study, series, sop, numbers)
    except ServerError as exc:
        if exc.status not in _NO_FRAMES:
            raise
        frames = None
    if frames is None or _is_video(frames.transfer_syntax) or frames.transfer_syntax is None:
        whole = server.instance(study, series, sop)
        _mark(whole, server.instance_url(study, series, sop))
        whole.save_as(path, enforce_file_format=True)
        return "whole", header
    _write(ds, path, (frames.data, frames.transfer_syntax, numbers, n_frames))
    return "frames", header


def _mark(ds: Any, source: str) -> None:
    """Name the instance's origin in the staged file (records and stores give it as ``source``)."""
    ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True).add_new(ORIGIN, "UT", source)


def _dataset(metadata: dict[str, Any], where: str) -> Any:
    from pydicom.dataset import Dataset

    try:
        return Dataset.from_json(metadata, bulk_data_uri_handler=lambda *args: None)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ServerError(f"{where}/metadata: not readable DICOM JSON ({type(exc).__name__})") from None


def _frame_count(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _is_video(syntax: str | None) -> bool:
    from pydicom.uid import MPEGTransferSyntaxes, UID

    return syntax is not None and UID(syntax) in MPEGTransferSyntaxes


def _write(ds: Any, path: Path, frames: tuple[list[bytes], str, list[int], int] | None) -> None:
    """The staged file: ``ds`` (the metadata) with ``frames`` = (their bytes, transfer syntax,
    source frame numbers, source frame count), or header-only."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, ExplicitVRLittleEndian

    syntax = UID(frames[1]) if frames is not None else ExplicitVRLittleEndian
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.3.1")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3")
    ds.file_meta.TransferSyntaxUID = syntax
    if frames is not None:
        data, _, numbers, n_source = frames
        if syntax.is_encapsulated:
            ds.PixelData = encapsulate(list(data))
            ds["PixelData"].VR = "OB"
        else:
            joined = b"".join(data)
            ds.PixelData = joined + (b"\0" if len(joined) % 2 else b"")
            ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated") or 8) > 8 else "OB"
        ds.NumberOfFrames = len(numbers)
        item = Dataset()
        item.MultiFrameSourceSOPInstanceUID = ds.get("SOPInstanceUID", "")
        item.SimpleFrameList = list(numbers)
        ds.FrameExtractionSequence = [item]
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(SOURCE_FRAMES, "UL", int(n_source))
    ds.save_as(path, enforce_file_format=True)


# Header groups a result written back into the study needs (DICOM SR, FHIR): the file meta,
# identifying (0008), patient (0010) and relationship (0020) attributes, no sequences.
_BRIEF_GROUPS = (0x0002, 0x0008, 0x0010, 0x0020)


def brief(ds: Any) -> Any:
    """The identifying part of an instance's header: what an SR or FHIR bundle about it copies
    (patient, study, series, SOP, equipment), kept per instance of a run at ~1 kB each."""
    from pydicom.dataset import Dataset

    kept = Dataset()
    for element in ds:
        if element.tag.group in _BRIEF_GROUPS and element.VR != "SQ" and not element.tag.is_private:
            kept.add(element)
    if getattr(ds, "file_meta", None) is not None:
        kept.file_meta = ds.file_meta
    return kept
