"""Echo DICOM through pydicom 3: read the header, decode only the frames needed, make them RGB.

Stages:

1. **Header** — ``dcmread`` with large values deferred (the pixel data is not loaded). Files
   without the 128-byte preamble are read by content (``force``) and must still look like an
   image (rows, columns, pixel data) to count as DICOM.
2. **Decoder check** — the transfer syntax must have a pixel decoder installed; if not, the error
   names the plugin to install (JPEG 2000 → pylibjpeg-openjpeg, JPEG-LS/lossless →
   pylibjpeg-libjpeg, RLE → pylibjpeg-rle).
3. **Decode by frame index** — never the whole cine:

   * JPEG Baseline: the needed frames are cut from the encapsulated fragments
     (``pydicom.encaps.generate_frames``, stopping after the last one needed) and decoded by
     Pillow (libjpeg-turbo), about 4.5× faster than pydicom's pixel pipeline and the same pixels;
     if Pillow refuses a frame, pydicom's pipeline is used instead. A frame without its
     end-of-image marker (cut short) fails the file; bytes after the marker are dropped
     (:mod:`.jpeg_codestream`).
   * MPEG-2 / H.264 / HEVC transfer syntaxes: the fragments form a video stream, decoded by PyAV.
   * Everything else: ``pydicom.pixels.iter_pixels(path, indices=...)``, which reads and decodes
     only the requested frames (YBR → RGB happens there, once).

4. **Colour** — :func:`echoclip_cli.media.colour.to_rgb8` (palettes, MONOCHROME1/2, bit depth,
   mislabelled YCbCr).
5. **Metadata** — UIDs, study date, modality, manufacturer, frame rate, the 2D tissue region and
   the salted patient key; identifying values only with ``keep_phi`` (see :mod:`.phi`).

For decoding on a GPU, :func:`read_jpeg_codestreams` only cuts the sampled JPEG codestreams out,
reading the file once: header, codestreams and the file's sha256 all come from the same bytes
(other layouts than one fragment per frame go through the reader above).
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import MediaError
from ..files import has_dicom_preamble, head, sha256_bytes
from ..preprocess import clip_region
from . import budget, classify
from .colour import grey_fraction, mostly_grey, to_rgb8
from .discover import looks_like_dicom
from .extraction import extracted_frames, origin
from .jpeg_codestream import codestream_end, declared_size
from .phi import patient_key, phi_values, resolve_salt, safe_reason

_HEADER_ERRORS = (EOFError, OSError, ValueError, KeyError, TypeError, OverflowError, NotImplementedError, struct.error)
_DEFER_BYTES = 4096  # header values larger than this (pixel data, LUTs stay small) are read on demand

# Pixel data we cannot use even with every plugin.
_FLOAT_PIXELS = ("FloatPixelData", "DoubleFloatPixelData")


# --------------------------------------------------------------------------- header


def has_preamble(path: Path) -> bool:
    """Whether the file carries the DICOM preamble ("DICM" at byte 128)."""
    return has_dicom_preamble(head(path))


def read_header(path: Path, refuse: "Refusal | None" = None) -> Any:
    """The dataset with the pixel data deferred; :class:`MediaError` when it is not an image.
    ``refuse`` (:class:`Refusal`) is asked first, from the header alone: a clip of a type the run
    does not score raises :class:`Refused` (even without pixel data: an archive instance staged
    header-only)."""
    ds, preamble, caught = _parsed(path)
    if refuse is not None:
        refuse(ds)
    if any("End of file reached" in str(w.message) for w in caught):
        raise MediaError(f"{path}: DICOM file is truncated (it ends inside an element)")
    _check_image(ds, path, preamble)
    return ds


def _parsed(path: Path, *, stop_before_pixels: bool = False) -> tuple[Any, bool, list[Any]]:
    """(the dataset, whether the file has the preamble, pydicom's warnings while reading it):
    what is no DICOM is refused from its first bytes, a deflated one priced first."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    preamble = has_preamble(path)
    if not preamble and not looks_like_dicom(path):
        # pydicom forced onto zeros (or any other bytes) parses them at ~3 MB/s: a 50 MB file of
        # zeros took 18 s, a sparse 100 GB one hours. A dataset without the preamble starts with a
        # file-meta (0002,xxxx) or an identifying (0008,xxxx) element.
        raise MediaError(f"{path}: not a DICOM file (no preamble, and it does not start like a DICOM dataset)")
    _check_deflated(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = dcmread(path, defer_size=_DEFER_BYTES, stop_before_pixels=stop_before_pixels, force=not preamble)
        except InvalidDicomError:
            raise MediaError(f"{path}: not a DICOM file") from None
        except _HEADER_ERRORS as exc:
            what = "DICOM file is damaged or truncated" if preamble else "not a DICOM file"
            raise MediaError(f"{path}: {what} ({safe_reason(exc)})") from None
    return ds, preamble, caught


class Refused(Exception):
    """A clip whose header alone gives a clip type the run does not score: ``meta`` (no frames,
    ``clip_type``, ``clip_reason``, ``refused``) is what its record says. Not an error."""

    def __init__(self, meta: dict[str, Any]) -> None:
        super().__init__(meta.get("clip_type"))
        self.meta = meta


class Refusal:
    """Asked with each header a reader parses anyway: raises :class:`Refused` for a clip whose
    header gives a type not in ``wanted_types`` (a frame-extracted instance answers for its
    source). No second parse of the header, no frame decoded."""

    def __init__(self, wanted_types: Sequence[str], *, keep_phi: bool, salt: str | None) -> None:
        self.wanted_types, self.keep_phi, self.salt = tuple(wanted_types), keep_phi, salt

    def __call__(self, ds: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            held = extracted_frames(ds)
            kind = classify.from_header(_source_header(ds, held[1]) if held is not None else ds)
            if kind is None or kind[0] in self.wanted_types:
                return
            meta = header_only_meta(ds, keep_phi=self.keep_phi, salt=self.salt)
        raise Refused({**meta, "clip_type": kind[0], "clip_reason": kind[1], "refused": True})


def refusal(wanted_types: Sequence[str] | None, *, keep_phi: bool, salt: str | None) -> Refusal | None:
    """The :class:`Refusal` of a run that scores only ``wanted_types`` (None: every type)."""
    return None if wanted_types is None else Refusal(wanted_types, keep_phi=keep_phi, salt=salt)


def header_only_meta(ds: Any, *, keep_phi: bool, salt: str | None) -> dict[str, Any]:
    """The metadata of a clip refused from its header (:class:`Refusal`): no frames."""
    held = extracted_frames(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        n_frames = held[1] if held is not None else number_of_frames(ds, Path("-"))
        return {"source_kind": "dicom", "frame_indices": [], "n_frames_total": n_frames, "fps": frame_rate(ds),
                "decoder": None, "origin": origin(ds), **header_meta(ds, transfer_syntax(ds), keep_phi=keep_phi, salt=salt)}


def _check_deflated(path: Path) -> None:
    """A deflated dataset is inflated whole by pydicom: price it first (:mod:`.budget`)."""
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
        if str(meta.get("TransferSyntaxUID", "")) != "1.2.840.10008.1.2.1.99":
            return
        # the dataset starts after the preamble, the group length element (12 bytes) and its value
        offset = (132 if has_preamble(path) else 0) + 12 + int(meta.FileMetaInformationGroupLength)
    except Exception:  # no readable file meta: dcmread reports the real problem
        return
    budget.check_deflated(path, offset)


def _check_image(ds: Any, path: Path, preamble: bool) -> None:
    if not preamble and not {"Rows", "Columns"} <= set(ds.dir()) and "PixelData" not in ds:
        raise MediaError(f"{path}: not a DICOM file")
    if any(name in ds for name in _FLOAT_PIXELS):
        raise MediaError(f"{path}: float pixel data is not an echo image (not supported)")
    if "PixelData" not in ds:
        raise MediaError(f"{path}: DICOM file has no pixel data")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise MediaError(f"{path}: DICOM image without valid Rows/Columns") from None
    if rows < 1 or cols < 1:
        raise MediaError(f"{path}: DICOM image of size {cols}×{rows}")
    _check_length(ds, path)


_UNDEFINED_LENGTH = 0xFFFFFFFF


def _check_length(ds: Any, path: Path) -> None:
    """Catch truncation before decoding: pixel data running past the end of the file, or native
    pixel data shorter than its frames need."""
    element = ds.get_item("PixelData")
    length, start = getattr(element, "length", None), getattr(element, "value_tell", None)
    if length is None:  # read already (a short file ends before the deferral would apply)
        value = getattr(element, "value", None)
        length = len(value) if isinstance(value, (bytes, bytearray)) else None
    if length is None or length == _UNDEFINED_LENGTH:
        return
    missing = (start or 0) + length - path.stat().st_size
    if start is not None and missing > 0:
        raise MediaError(f"{path}: DICOM file is truncated ({missing} bytes of pixel data missing)")
    bits = int(ds.get("BitsAllocated") or 8)
    if bits % 8 or transfer_syntax(ds).is_compressed:
        return
    frame_bytes = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * bits // 8
    if str(ds.get("PhotometricInterpretation", "")).upper() == "YBR_FULL_422":
        frame_bytes = frame_bytes * 2 // 3
    frames = int(ds.get("NumberOfFrames") or 1)
    if length < frame_bytes * frames:
        raise MediaError(
            f"{path}: DICOM file is truncated (pixel data holds {length} bytes, {frames} frame(s) need "
            f"{frame_bytes * frames})"
        )


def transfer_syntax(ds: Any) -> Any:
    """The transfer syntax UID, inferred from the encoding for files without file meta."""
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid:
        return UID(str(uid))
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def number_of_frames(ds: Any, path: Path) -> int:
    value = ds.get("NumberOfFrames")
    try:
        count = 1 if value in (None, "") else int(value)
    except (TypeError, ValueError):
        count = 1  # unreadable: treat as a single frame, as pydicom does
    if count < 1:
        raise MediaError(f"{path}: DICOM image has zero frames")
    return count


# --------------------------------------------------------------------------- decoding


_PLUGIN_HINTS = (
    ("JPEG 2000", "pylibjpeg-openjpeg"),
    ("JPEG-LS", "pylibjpeg-libjpeg"),
    ("JPEG", "pylibjpeg-libjpeg"),
    ("RLE", "pylibjpeg-rle"),
)


def plugin_hint(ts_name: str, missing: Sequence[str] = ()) -> str:
    """Which package would decode this transfer syntax (for the error message)."""
    for fragment, package in _PLUGIN_HINTS:
        if fragment.lower() in ts_name.lower():
            return package
    return "; ".join(missing) or "a pydicom pixel data plugin"


def check_decoder(ts: Any, path: Path) -> None:
    """Raise :class:`MediaError` naming the missing plugin when ``ts`` cannot be decoded here."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import MPEGTransferSyntaxes

    if ts in MPEGTransferSyntaxes:
        return
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        named = ts.name if ts.name != str(ts) else "unknown"
        raise MediaError(f"{path}: unsupported transfer syntax {named} ({ts})") from None
    if not decoder.is_available:
        needed = plugin_hint(ts.name, decoder.missing_dependencies)
        raise MediaError(f"{path}: no decoder installed for {ts.name} (install {needed})")


def pillow_jpeg(data: bytes, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    """One JPEG codestream decoded by Pillow (libjpeg-turbo): (H, W) grey or (H, W, 3) RGB, read-only.
    ``ValueError`` for other modes, or another size than ``rows`` × ``cols`` when they are given."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.mode not in ("RGB", "L") or (rows is not None and image.size != (cols, rows)):
            raise ValueError(f"Pillow gave a {image.mode} {image.size} image")
        image.load()
        return np.asarray(image)


def _whole_codestream(ds: Any, index: int, data: bytes | memoryview) -> bytes:
    """Frame ``index``'s codestream up to its end-of-image marker; padding or stray bytes after
    the marker are left out (decoders ignore them). :class:`MediaError` when the frame has no
    end-of-image marker: decoders fill a cut image with grey or repeated rows and return it as if
    whole. ``ValueError`` when the data is no JPEG codestream (the caller lets pydicom report)."""
    end = codestream_end(data)
    if end is None:
        raise MediaError(f"{getattr(ds, 'filename', 'DICOM')}: frame {index}'s JPEG data is truncated "
                         "(no end-of-image marker): its pixels would be partly made up")
    _check_size(ds, index, declared_size(data))
    return bytes(data[:end])


def _check_size(ds: Any, index: int, size: tuple[int, int] | None) -> None:
    """A frame must declare the DICOM header's Rows × Columns, which the memory budget priced:
    decoders (Pillow, libjpeg, nvJPEG) allocate what the frame's own header says."""
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if size is not None and size != (rows, cols):
        raise MediaError(f"{getattr(ds, 'filename', 'DICOM')}: frame {index}'s JPEG header declares "
                         f"{size[0]}×{size[1]} pixels, the DICOM header {rows}×{cols}: not decoded")


def jpeg_codestreams(ds: Any, indices: Sequence[int], n_frames: int) -> list[bytes]:
    """The JPEG codestreams of frames ``indices`` (sorted), cut from the encapsulated fragments
    without decoding, each up to its end-of-image marker; reading stops after the last one
    needed. Raises :class:`MediaError` for a truncated frame (no end-of-image marker)."""
    from pydicom.encaps import generate_frames

    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    wanted, last = set(indices), max(indices)
    out = []
    for index, data in enumerate(generate_frames(ds.PixelData, number_of_frames=n_frames, extended_offsets=extended)):
        if index in wanted:
            out.append(_whole_codestream(ds, index, data))
        if index >= last:
            break
    if len(out) != len(wanted):
        raise ValueError(f"found {len(out)} of the {len(wanted)} frames needed")
    return out


def _jpeg_baseline_frames(ds: Any, indices: Sequence[int], n_frames: int) -> list[np.ndarray]:
    """Decode the wanted frames straight from the encapsulated JPEG fragments with Pillow, on
    as many threads as torch may use here (Pillow releases the GIL while decoding): both cores
    when decoding inline between model batches on a 2-core machine (0.15 → 0.11 s per 600×800
    cine), one in a worker process, which is set to one thread."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    streams = jpeg_codestreams(ds, indices, n_frames)
    pool = _decode_pool()
    if pool is None or len(streams) < 2:
        return [pillow_jpeg(data, rows, cols) for data in streams]
    return list(pool.map(lambda data: pillow_jpeg(data, rows, cols), streams))


_POOLS: dict[int, Any] = {}


def _decode_pool() -> Any:
    """A thread pool of ``torch.get_num_threads()`` threads (None for one), kept per size."""
    import torch

    threads = torch.get_num_threads()
    if threads < 2:
        return None
    if threads not in _POOLS:
        from concurrent.futures import ThreadPoolExecutor

        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="echoclip-jpeg")
    return _POOLS[threads]


def _pydicom_frames(source: Any, indices: Sequence[int]) -> list[np.ndarray]:
    from pydicom.pixels import iter_pixels

    return [np.asarray(frame) for frame in iter_pixels(source, indices=list(indices))]


def _mpeg_frames(ds: Any, indices: Sequence[int], path: Path) -> tuple[list[np.ndarray], list[int]]:
    """MPEG-2 / H.264 / HEVC pixel data: join the fragments and decode them as a video stream."""
    from pydicom.encaps import generate_fragments

    from .video import decode_video

    stream = b"".join(generate_fragments(ds.PixelData))
    frames, info = decode_video(io.BytesIO(stream), indices, str(path))
    return list(frames), info["frame_indices"]


def _decode(path: Path, ds: Any, ts: Any, indices: list[int], n_frames: int) -> tuple[list[np.ndarray], list[int], str]:
    """(frames, their indices, decoder used); pydicom's errors become :class:`MediaError`."""
    from pydicom.uid import JPEGBaseline8Bit, MPEGTransferSyntaxes

    if ts in MPEGTransferSyntaxes:
        frames, found = _mpeg_frames(ds, indices, path)
        return frames, found, "pyav"
    if ts == JPEGBaseline8Bit and int(ds.get("BitsAllocated", 8)) == 8:
        try:
            frames = _jpeg_baseline_frames(ds, indices, n_frames)
        except (OSError, ValueError, SyntaxError):
            pass  # damaged or unusual codestream: let pydicom's pipeline try (and report)
        else:
            _check_not_filled(path, frames, indices)
            return frames, indices, "pillow"
    _check_declared_sizes(path, ds, ts, indices, n_frames)
    try:
        return _pydicom_frames(_pixel_source(path, ds, ts), indices), indices, "pydicom"
    except _PYDICOM_ERRORS as exc:
        raise MediaError(f"{path}: cannot decode {ts.name} pixel data ({safe_reason(exc)})") from None


GREY_FILL = 128  # what libjpeg gives for blocks whose data is missing (zero coefficients: mid-grey)
FILL_BLOCK = 16  # a 4:2:0 MCU: the last one decoded from missing data is this square of exact fill


def _check_not_filled(path: Path, frames: Sequence[np.ndarray], indices: Sequence[int]) -> None:
    """A JPEG frame cut short with its end-of-image marker put back decodes without a word: the
    decoder fills every block after the cut with exact mid-grey (128 in every channel). Its last
    MCU, the bottom-right 16×16 square, is then exactly that fill — which no echo frame's corner
    is (outside the sector it is black, and speckle never sits at one exact value): refused."""
    for index, frame in zip(indices, frames):
        corner = frame[-FILL_BLOCK:, -FILL_BLOCK:]
        if corner.size and frame.shape[0] >= FILL_BLOCK and frame.shape[1] >= FILL_BLOCK and (corner == GREY_FILL).all():
            raise MediaError(f"{path}: frame {index}'s JPEG data is cut short (its last blocks decode to the "
                             "decoder's grey fill): its pixels would be partly made up")


def _check_declared_sizes(path: Path, ds: Any, ts: Any, indices: list[int], n_frames: int) -> None:
    """Before a JPEG-family frame is decoded: the size its own start-of-frame header declares must be
    the DICOM header's Rows × Columns, which the memory budget priced (a 54 KB file whose frames
    declare 16384² took 2.6 GB). A frame that declares none is left to the decoder to refuse."""
    if not (ts.is_compressed and "JPEG" in ts.name and "2000" not in ts.name):
        return
    from pydicom.encaps import generate_frames

    wanted, last = set(indices), max(indices)
    try:
        for index, data in enumerate(generate_frames(ds.PixelData, number_of_frames=n_frames)):
            if index in wanted:
                _check_size(ds, index, declared_size(data))
            if index >= last:
                return
    except (ValueError, KeyError, EOFError, OSError):
        return  # fragments pydicom cannot cut: its own decoder reports them


_PYDICOM_ERRORS = (RuntimeError, ValueError, NotImplementedError, OSError, EOFError, KeyError, AttributeError)


def _pixel_source(path: Path, ds: Any, ts: Any) -> Any:
    """What ``iter_pixels`` reads: the path (only the needed frames are read), or a whole dataset
    for deflated files and files without file meta, which pydicom cannot decode from a path."""
    from pydicom import dcmread
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    has_meta = bool(getattr(ds, "file_meta", None)) and "TransferSyntaxUID" in ds.file_meta
    if has_meta and ts != DeflatedExplicitVRLittleEndian:
        return path
    full = dcmread(path, force=True)
    return _with_transfer_syntax(full, ts) if not has_meta else full


def _rgb8(raw: list[np.ndarray], ds: Any, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        return to_rgb8(raw, ds)
    except MediaError as exc:
        raise MediaError(f"{path}: {exc.message}") from None


def _decode_rgb(
    path: Path, ds: Any, ts: Any, indices: list[int], n_frames: int
) -> tuple[np.ndarray, list[int], str, dict[str, Any]]:
    """Decode and convert to uint8 RGB. Pillow's colours are only trusted when the result is mostly
    grey: otherwise pydicom decodes the same frames too and the greyer result wins (Pillow treats
    every unmarked 3-component codestream as YCbCr, which is wrong for RGB codestreams)."""
    raw, found, decoder = _decode(path, ds, ts, indices, n_frames)
    frames, notes = _rgb8(raw, ds, path)
    if decoder != "pillow" or frames.shape[-1] != 3 or mostly_grey(frames) or raw[0].ndim != 3:
        return frames, found, decoder, notes
    try:
        other, other_notes = _rgb8(_pydicom_frames(_pixel_source(path, ds, ts), indices), ds, path)
    except (MediaError, *_PYDICOM_ERRORS):
        return frames, found, decoder, notes
    if (grey_fraction(other) or 0.0) > (grey_fraction(frames) or 0.0):
        return other, found, "pydicom", other_notes
    return frames, found, decoder, notes


def _with_transfer_syntax(ds: Any, ts: Any) -> Any:
    """A dataset read without file meta, given the transfer syntax its encoding implies."""
    from pydicom.dataset import FileMetaDataset

    if not getattr(ds, "file_meta", None):
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    return ds


# --------------------------------------------------------------------------- metadata


def frame_rate(ds: Any) -> float | None:
    """Frames per second from FrameTime, FrameTimeVector, CineRate or RecommendedDisplayFrameRate."""
    try:
        if float(ds.get("FrameTime") or 0) > 0:
            return round(1000.0 / float(ds.FrameTime), 4)
        vector = [float(v) for v in (ds.get("FrameTimeVector") or [])][1:]
        if vector and sum(vector) > 0:
            return round(1000.0 * len(vector) / sum(vector), 4)
        for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
            if float(ds.get(keyword) or 0) > 0:
                return float(ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return None


def tissue_region(ds: Any, rows: int, cols: int) -> tuple[list[int] | None, str | None]:
    """The largest 2D (RegionSpatialFormat 1) ultrasound region that fits the frame, as a box.

    DICOM bounds are inclusive; the box returned is ``[x0, y0, x1, y1)``. Returns (None, reason)
    when the header names regions but none fits the image.
    """
    boxes, notes = [], []
    for item in ds.get("SequenceOfUltrasoundRegions") or []:
        if item.get("RegionSpatialFormat") != 1:
            continue
        try:
            raw = [int(item.get(k)) for k in ("RegionLocationMinX0", "RegionLocationMinY0")]
            raw += [int(item.get(k)) + 1 for k in ("RegionLocationMaxX1", "RegionLocationMaxY1")]
        except (TypeError, ValueError):
            continue
        box, note = clip_region(raw, rows, cols)
        if box:
            boxes.append(box)
        elif note:
            notes.append(note)
    if boxes:
        best = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))  # first of equals wins
        return list(best), None
    return None, (notes[0] if notes else None)


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def header_meta(ds: Any, ts: Any, *, keep_phi: bool, salt: str | None) -> dict[str, Any]:
    """What outputs record from the header: identifiers of the object, never of the person."""
    pid = _text(ds, "PatientID")
    meta: dict[str, Any] = {
        "study_uid": _text(ds, "StudyInstanceUID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "sop_uid": _text(ds, "SOPInstanceUID"),
        "sop_class": getattr(ds.get("SOPClassUID"), "name", None),
        "study_date": _text(ds, "StudyDate"),
        "modality": _text(ds, "Modality"),
        "manufacturer": _text(ds, "Manufacturer"),
        "manufacturer_model": _text(ds, "ManufacturerModelName"),
        "transfer_syntax": ts.name,
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        "burned_in_annotation": _text(ds, "BurnedInAnnotation"),
        "patient_key": patient_key(pid, resolve_salt(salt)) if pid else None,
    }
    if keep_phi:
        meta["phi"] = phi_values(ds)
    return meta


# --------------------------------------------------------------------------- entry point


def read_dicom(
    path: Path, indices: Sequence[int], *, keep_phi: bool = False, salt: str | None = None,
    wanted_types: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode frames ``indices`` of a DICOM file: ((T, H, W, 3) uint8 RGB, metadata). With
    ``wanted_types``, a clip whose header gives another type raises :class:`Refused` undecoded."""
    ds = read_header(path, refusal(wanted_types, keep_phi=keep_phi, salt=salt))
    # pydicom warns about non-conformant values as elements are first used (a malformed UID, an odd
    # VR); they describe the source file, would break the one-line-per-file report, and echoclip
    # reads what it can, so they are not shown.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _read_dicom(path, ds, indices, keep_phi=keep_phi, salt=salt)


def _read_dicom(
    path: Path, ds: Any, indices: Sequence[int], *, keep_phi: bool, salt: str | None
) -> tuple[np.ndarray, dict[str, Any]]:
    ts = transfer_syntax(ds)
    check_decoder(ts, path)
    n_frames, wanted = _wanted_frames(ds, path, indices)
    frames, found, decoder, colour_notes = _decode_rgb(path, ds, ts, wanted, n_frames)
    meta = _frame_meta(ds, ts, frames.shape[1], frames.shape[2], found, n_frames, decoder, keep_phi, salt)
    return frames, {**meta, **colour_notes}


def _wanted_frames(ds: Any, path: Path, indices: Sequence[int]) -> tuple[int, list[int]]:
    """(the frames the file holds, the sorted positions among them of the sampled ``indices``).
    In a frame-extracted instance (:mod:`echoclip_cli.media.extraction`) ``indices`` are the
    source's: those it holds are mapped onto their positions."""
    n_frames = number_of_frames(ds, path)
    held = extracted_frames(ds)
    if held is not None and len(held[0]) == n_frames:
        asked = {int(i) for i in indices}
        wanted = [position for position, index in enumerate(held[0]) if index in asked]
    else:
        wanted = sorted({int(i) for i in indices if 0 <= int(i) < n_frames})
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.get("BitsAllocated") or 8)
    except (TypeError, ValueError):
        rows = cols = 0  # unreadable geometry: the decoder reports it
        samples, bits = 1, 8
    # priced as RGB: grey and palette frames become three channels on the way
    budget.check_frames(str(path), rows, cols, max(3, samples), len(wanted), max(1, (bits + 7) // 8))
    if not wanted:
        raise MediaError(f"{path}: has {n_frames} frame(s), none at the sampled indices (from {min(indices)})")
    return n_frames, wanted


def _frame_meta(ds: Any, ts: Any, rows: int, cols: int, found: list[int], n_frames: int, decoder: str,
                keep_phi: bool, salt: str | None) -> dict[str, Any]:
    """The metadata of decoded frames ``found`` (positions in the file) of its ``n_frames``; a
    frame-extracted instance describes its source: the source's frame indices and count, and the
    clip type its header gives."""
    header = ds
    held = extracted_frames(ds)
    if held is not None and len(held[0]) == n_frames:
        found, n_frames = [held[0][position] for position in found], held[1]
        header = _source_header(ds, n_frames)
    region, region_note = tissue_region(ds, rows, cols)
    return {
        "source_kind": "dicom",
        "frame_indices": found,
        "n_frames_total": n_frames,
        "fps": frame_rate(ds),
        "decoder": decoder,
        "region": region,
        "region_note": region_note,
        "clip_header": list(kind) if (kind := classify.from_header(header)) else None,
        "origin": origin(ds),
        **header_meta(ds, ts, keep_phi=keep_phi, salt=salt),
    }


def _source_header(ds: Any, n_frames: int) -> Any:
    """What :func:`classify.from_header` reads of a frame-extracted instance, as its source says."""
    from pydicom.dataset import Dataset

    header = Dataset()
    for keyword in ("Modality", "SOPClassUID", "SequenceOfUltrasoundRegions"):
        if keyword in ds:
            header[keyword] = ds[keyword]
    header.NumberOfFrames = n_frames
    return header


def read_jpeg_codestreams(
    path: Path, indices: Sequence[int], *, keep_phi: bool = False, salt: str | None = None,
    wanted_types: Sequence[str] | None = None,
) -> tuple[list[bytes], dict[str, Any], tuple[int, int], str] | None:
    """For 8-bit JPEG Baseline DICOM in a plain colour encoding: the undecoded codestreams of
    frames ``indices``, the metadata :func:`read_dicom` would give (``decoder`` left for the
    caller to fill in), the (rows, columns) of a frame and the sha256 of the file (its identity,
    :mod:`echoclip_cli.identity`). ``None`` for every other file, which :func:`read_dicom` must
    decode.

    The file is read once: the digest, the header and the codestreams all come from the same
    bytes, the sampled frames cut straight from the encapsulated items
    (:func:`_codestreams_in_memory`). A file that path does not take as it is (no preamble, an
    offset table that groups fragments, anything damaged) is read again by the general reader
    (:func:`_codestreams_from_file`), which decides, and reports, as it always did. With
    ``wanted_types``, a clip whose header gives another type raises :class:`Refused`.
    """
    data = path.read_bytes()
    digest = sha256_bytes(data)
    refuse = refusal(wanted_types, keep_phi=keep_phi, salt=salt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        got = _codestreams_in_memory(path, data, indices, keep_phi=keep_phi, salt=salt, refuse=refuse)
    if got is _UNUSUAL:
        got = _codestreams_from_file(path, indices, keep_phi=keep_phi, salt=salt, refuse=refuse)
    return None if got is None else (*got, digest)


# Colour encodings whose JPEG Baseline codestreams any JPEG decoder turns into the RGB (or grey)
# that the Pillow path gives, so they may be decoded elsewhere (on the GPU). MONOCHROME1 needs
# inverting and palettes a lookup: those stay on the CPU path.
_PLAIN_JPEG_COLOUR = ("YBR_FULL_422", "YBR_FULL", "RGB", "MONOCHROME2")
_UNUSUAL = object()  # the in-memory reader declines: the general reader decides


def _device_decodable(ds: Any, ts: Any) -> bool:
    """8-bit JPEG Baseline in a plain colour encoding with the matching number of components."""
    from pydicom.uid import JPEGBaseline8Bit

    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if ts != JPEGBaseline8Bit or int(ds.get("BitsAllocated", 8)) != 8 or photometric not in _PLAIN_JPEG_COLOUR:
        return False
    return samples == (1 if photometric == "MONOCHROME2" else 3)


def _codestreams_in_memory(path: Path, data: bytes, indices: Sequence[int], *, keep_phi: bool,
                           salt: str | None, refuse: "Refusal | None" = None) -> Any:
    """:func:`_codestreams_from_file` on the file's bytes ``data``, for the common layout only: a
    file with the preamble whose header ends at encapsulated pixel data of one fragment per frame
    (an empty offset table, or one that says just that). ``_UNUSUAL`` for anything else, so the
    answer is always the general reader's (:func:`read_jpeg_codestreams`)."""
    header = _header_in_memory(data, path)
    if header is None:
        return _UNUSUAL
    ds, pixels_at = header
    if refuse is not None:
        refuse(ds)
    try:
        ts = transfer_syntax(ds)
        if not _device_decodable(ds, ts):
            return None  # load_clip reads it (and reports what read_header would)
        rows, cols = int(ds.Rows), int(ds.Columns)
        fragments = one_fragment_per_frame(data, pixels_at, number_of_frames(ds, path))
    except (AttributeError, TypeError, ValueError, KeyError, struct.error):
        return _UNUSUAL
    if fragments is None or rows < 1 or cols < 1 or "ExtendedOffsetTable" in ds:
        return _UNUSUAL
    n_frames, wanted = _wanted_frames(ds, path, indices)
    view = memoryview(data)
    try:
        streams = [_whole_codestream(ds, index, view[slice(*fragments[index])]) for index in wanted]
    except ValueError:
        return _UNUSUAL  # no JPEG codestream: the general reader declines it
    meta = _frame_meta(ds, ts, rows, cols, wanted, n_frames, "", keep_phi, salt)
    return streams, meta, (rows, cols)


def _header_in_memory(data: bytes, path: Path) -> tuple[Any, int] | None:
    """(the header as a dataset, the offset of its pixel data element) from a file's bytes, read
    up to the pixel data; None unless the file has the preamble and its header parses cleanly."""
    from pydicom import dcmread

    if not has_dicom_preamble(data):
        return None
    buffer = io.BytesIO(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = dcmread(buffer, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any trouble: the general reader reads it and says what
            return None
    if caught:
        return None
    ds.filename = str(path)  # as dcmread(path) names it, for messages
    return ds, buffer.tell()


_ITEM, _SEQUENCE_END = 0xE000, 0xE0DD


def one_fragment_per_frame(data: bytes, at: int, n_frames: int) -> list[tuple[int, int]] | None:
    """(start, end) in ``data`` of each frame of the encapsulated pixel data element (7FE0,0010)
    whose tag starts at ``at``, when every frame is one fragment, as ``pydicom.encaps.generate_frames``
    would cut them: as many fragments as frames and an empty Basic Offset Table, or one pointing
    at every fragment. None otherwise (another element, another layout, data ending early)."""
    group, element = struct.unpack_from("<HH", data, at)
    if (group, element) != (0x7FE0, 0x0010) or data[at + 4 : at + 6] not in (b"OB", b"OW"):
        return None
    if struct.unpack_from("<L", data, at + 8)[0] != 0xFFFFFFFF:
        return None  # native pixel data
    pos = at + 12
    items: list[tuple[int, int]] = []
    while True:
        if pos + 8 > len(data):
            return None  # ends before the sequence delimiter: truncated
        group, element, length = struct.unpack_from("<HHL", data, pos)
        if group != 0xFFFE or element not in (_ITEM, _SEQUENCE_END):
            return None
        if element == _SEQUENCE_END:
            break
        if length == 0xFFFFFFFF or pos + 8 + length > len(data):
            return None
        items.append((pos + 8, pos + 8 + length))
        pos += 8 + length
    if not items:
        return None
    (bot_start, bot_end), fragments = items[0], items[1:]
    if len(fragments) != n_frames:
        return None
    if bot_end > bot_start:  # a Basic Offset Table: it must point at each fragment in turn
        if (bot_end - bot_start) % 4:
            return None
        offsets = struct.unpack_from(f"<{(bot_end - bot_start) // 4}L", data, bot_start)
        first = fragments[0][0] - 8
        if list(offsets) != [start - 8 - first for start, _ in fragments]:
            return None
    return fragments


def _codestreams_from_file(
    path: Path, indices: Sequence[int], *, keep_phi: bool = False, salt: str | None = None,
    refuse: "Refusal | None" = None,
) -> tuple[list[bytes], dict[str, Any], tuple[int, int]] | None:
    """The general reader of :func:`read_jpeg_codestreams` (its digest aside): the header through
    :func:`read_header`, the frames through ``pydicom.encaps.generate_frames``."""
    ds = read_header(path, refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ts = transfer_syntax(ds)
        if not _device_decodable(ds, ts):
            return None
        n_frames, wanted = _wanted_frames(ds, path, indices)
        try:
            streams = jpeg_codestreams(ds, wanted, n_frames)
        except (ValueError, KeyError, OSError, EOFError):
            return None  # let the CPU path try, and report
        rows, cols = int(ds.Rows), int(ds.Columns)
        meta = _frame_meta(ds, ts, rows, cols, wanted, n_frames, "", keep_phi, salt)
        return streams, meta, (rows, cols)
