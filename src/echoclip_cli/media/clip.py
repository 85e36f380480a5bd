"""One input → one :class:`Clip`: decode the sampled frames, prepare them, gather metadata.

``load_clip`` accepts DICOM files, videos and our own preprocessed ``.safetensors`` files (read
back as they are, after checking they were made with the same preprocess settings), and always
fails with a one-line :class:`~echoclip_cli.errors.MediaError` naming the file and the reason.
"""

from __future__ import annotations

import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .. import __version__
from ..errors import MediaError
from ..files import sha256_file, stat_key
from ..preprocess import prepare_frame_group, prepare_frames, region_view, sector_grids, sectors_from_grids, to_host
from ..preprocess_config import PreprocessConfig
from . import classify
from .colour import grey_counts, grey_sample_picks, mostly_grey_counts
from .dicom import Refused, read_dicom, read_jpeg_codestreams
from .discover import input_kind
from .phi import safe_reason
from .store_file import CLAIM, claim_holds, read_clip_file
from .video import decode_video


@dataclass
class Clip:
    """A prepared video: uint8 (T, 3, S, S) RGB frames, JSON-safe metadata, the path as given."""

    frames: torch.Tensor
    meta: dict[str, Any]
    source: str


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file")
    if not os.access(path, os.R_OK):
        raise MediaError(f"{path}: permission denied")


# Errors third-party decoders raise on odd files; each becomes a MediaError naming the file.
_DECODER_ERRORS = (ValueError, OSError, EOFError, RuntimeError, KeyError, IndexError, TypeError,
                   AttributeError, NotImplementedError, OverflowError, struct.error)


def read_frames(
    path: str | os.PathLike[str], indices: Sequence[int], *, keep_phi: bool = False, salt: str | None = None,
    wanted_types: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode frames ``indices`` (those past the end are dropped): ((T, H, W, 3) uint8 RGB, metadata).

    No geometry is applied. The metadata holds the frame indices found, frame rate, the DICOM
    tissue region (if any) and header identifiers (no PHI unless ``keep_phi``).
    """
    path = Path(path)
    _check_file(path)
    kind = input_kind(path)
    if kind == "store":
        raise MediaError(f"{path}: already preprocessed (no raw frames); read it with load_clip")
    if not indices:
        raise MediaError(f"{path}: no frame indices to read")
    with _decoder_errors(path):
        if kind == "video":
            frames, info = decode_video(path, indices, str(path))
            return frames, {"source_kind": "video", **info}
        return read_dicom(path, indices, keep_phi=keep_phi, salt=salt, wanted_types=wanted_types)


@contextmanager
def _decoder_errors(path: Path) -> Iterator[None]:
    """Third-party decoder errors on one file become a one-line :class:`MediaError` naming it."""
    try:
        yield
    except MediaError:
        raise
    except _DECODER_ERRORS as exc:
        raise MediaError(f"{path}: cannot read ({type(exc).__name__}: {safe_reason(exc)})") from None


# Header identifiers every clip's metadata carries (None for videos), so downstream code can
# rely on the keys.
_IDENTIFIERS = ("study_uid", "series_uid", "sop_uid", "study_date", "modality", "manufacturer", "patient_key")


def _clip_meta(path: Path, raw: dict[str, Any], geometry: dict[str, Any], cfg: PreprocessConfig,
               sha256: str | None = None) -> dict[str, Any]:
    """The metadata of a clip; ``sha256``: the file's digest when the caller has it already."""
    raw = dict(raw)
    origin = raw.pop("origin", None)  # an archive instance staged here: named by its URL on the server
    meta = {"source": origin or str(path), "source_sha256": sha256 or sha256_file(path),
            "source_stat_key": stat_key(path), **dict.fromkeys(_IDENTIFIERS), **raw, **geometry}
    meta["region_note"] = geometry.get("region_note") or raw.get("region_note")
    meta["preprocess"] = cfg.to_dict()
    meta["preprocess_digest"] = cfg.digest()
    meta["echoclip_version"] = __version__
    return meta


def _header_type(raw: dict[str, Any]) -> tuple[str, str] | None:
    found = raw.pop("clip_header", None)
    return (str(found[0]), str(found[1])) if found else None


def _load_store(path: Path, cfg: PreprocessConfig) -> Clip:
    frames, meta = read_clip_file(path)
    if isinstance(meta.get("source_sha256"), str) and not claim_holds(meta, frames):
        # not signed here for these frames: the file is its own input, not the original it names
        meta["source_sha256"] = sha256_file(path)
    meta.pop(CLAIM, None)
    stored = meta.get("preprocess_digest")
    if stored != cfg.digest():
        raise MediaError(
            f"{path}: preprocessed with other settings (digest {stored}, need {cfg.digest()}); "
            "preprocess its source again"
        )
    want = (3, cfg.image_size, cfg.image_size)
    if tuple(frames.shape[1:]) != want or frames.shape[0] < 1:
        # a damaged or hand-made file with the right digest: one error record, not a failed batch
        raise MediaError(f"{path}: frames of shape {tuple(frames.shape)}, not (T, {', '.join(map(str, want))})")
    _check_stored_meta(path, meta, frames.shape[0])
    if "clip_type" not in meta:  # written before clips were classified: judge the stored frames
        meta.update(classify.classify(None, frames.permute(0, 2, 3, 1).numpy()))
    return Clip(frames=frames, meta={**meta, "source_stat_key": stat_key(path)}, source=str(path))


# metadata of a preprocessed file that later steps rely on, and the JSON types it must have
_STORED_TYPES = {"frame_indices": list, "source_sha256": str, "fps": (int, float), "study_instance_uid": str,
                 "clip_type": str}


def _check_stored_meta(path: Path, meta: dict[str, Any], n_frames: int) -> None:
    """A preprocessed file's metadata, checked where the run relies on it: a wrong type (a hand-made
    or damaged file, ``"frame_indices": null``) is this file's error, not the whole run's, and the
    frame indices must describe the frames the array holds (records count frames by them)."""
    for key, kind in _STORED_TYPES.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise MediaError(f"{path}: its metadata {key!r} is a {type(value).__name__}, not what echoclip writes")
    indices = meta.get("frame_indices")
    if indices is None or len(indices) != n_frames or not all(isinstance(i, int) and i >= 0 for i in indices):
        raise MediaError(f"{path}: its frame indices do not describe its {n_frames} frames")


def load_clip(
    path: str | os.PathLike[str], cfg: PreprocessConfig, *, keep_phi: bool = False, salt: str | None = None,
    wanted_types: Sequence[str] | None = None,
) -> Clip:
    """Read any supported input and prepare it for ``cfg`` (see the module docstring). With
    ``wanted_types``, a DICOM clip whose header alone gives another clip type is not decoded: it
    comes back with no frames and ``meta["refused"]``, read from the header the reader parses
    anyway (:class:`~echoclip_cli.media.dicom.Refusal`)."""
    path = Path(path)
    _check_file(path)
    if input_kind(path) == "store":
        return _load_store(path, cfg)
    try:
        frames_rgb, raw = read_frames(path, cfg.frame_indices, keep_phi=keep_phi, salt=salt, wanted_types=wanted_types)
    except Refused as refused:
        return _refused(path, cfg, refused.meta)
    raw.update(classify.classify(_header_type(raw), frames_rgb))
    mask = _effective_mask(cfg.mask, raw.get("source_kind"))
    frames, geometry = prepare_frames(frames_rgb, cfg, region=raw.get("region"), mask=mask)
    if cfg.mask == "auto" and mask == "none":
        geometry["mask"] = {"mode": "auto", "applied": False, "reason": _VIDEO_MASK_REASON}
    return Clip(frames=frames, meta=_clip_meta(path, raw, geometry, cfg), source=str(path))


def _refused(path: Path, cfg: PreprocessConfig, raw: dict[str, Any]) -> Clip:
    """The clip of no frames for an input its header refused (``raw``: :class:`Refused`'s metadata)."""
    empty = torch.empty((0, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    return Clip(frames=empty, meta=_clip_meta(path, raw, {}, cfg), source=str(path))


def not_scored(meta: dict[str, Any]) -> str:
    """Why a clip of a type the run does not score has no numbers (the ``skipped`` of its record)."""
    return f"{meta.get('clip_type')} clip ({meta.get('clip_reason')}), not scored"


def load_frames(
    path: str | os.PathLike[str], cfg: PreprocessConfig, indices: Sequence[int], *, keep_phi: bool = False,
    salt: str | None = None
) -> Clip:
    """Frames ``indices`` of the decoded input (numbered from 0, before any sampling), prepared as
    :func:`load_clip` prepares its sampled frames: the same crop, and a mask found from the same
    frames (the sampled ones are decoded too when a mask is applied, so a frame is masked alike
    whichever frames are asked for). ``meta["frame_indices"]`` lists the frames found, in
    ascending order (indices past the end are dropped). A preprocessed file holds only its
    sampled frames: those of ``indices`` among them are returned."""
    path = Path(path)
    _check_file(path)
    wanted = sorted({int(i) for i in indices})
    if input_kind(path) == "store":
        clip = _load_store(path, cfg)
        return _select(clip, wanted)
    kind = "video" if input_kind(path) == "video" else "dicom"
    masked = _effective_mask(cfg.mask, kind) != "none"
    decode = sorted(set(wanted) | set(cfg.frame_indices)) if masked else wanted
    frames_rgb, raw = read_frames(path, decode, keep_phi=keep_phi, salt=salt)
    raw.update(classify.classify(_header_type(raw), frames_rgb))
    frames, geometry = prepare_frames(frames_rgb, cfg, region=raw.get("region"), mask=_effective_mask(cfg.mask, kind))
    clip = Clip(frames=frames, meta=_clip_meta(path, raw, geometry, cfg), source=str(path))
    return _select(clip, wanted)


def _select(clip: Clip, wanted: Sequence[int]) -> Clip:
    """``clip`` with only the frames whose index is in ``wanted``."""
    found, keep = [int(i) for i in clip.meta.get("frame_indices", [])], set(wanted)
    rows = [row for row, index in enumerate(found) if index in keep]
    meta = {**clip.meta, "frame_indices": [found[row] for row in rows]}
    return Clip(frames=clip.frames[rows], meta=meta, source=clip.source)


@dataclass
class Codestreams:
    """An input whose frames are JPEG codestreams still to decode (on the model's device): the
    metadata :func:`load_clip` would give, less the geometry, which comes after decoding."""

    streams: list[bytes]
    meta: dict[str, Any]
    source: str
    size: tuple[int, int]  # (rows, columns) the header promises


def load_codestreams(
    path: str | os.PathLike[str], cfg: PreprocessConfig, *, keep_phi: bool = False, salt: str | None = None,
    wanted_types: Sequence[str] | None = None,
) -> Codestreams | Clip | None:
    """The sampled frames of an 8-bit JPEG Baseline DICOM file as undecoded codestreams, or
    ``None`` for any other input (decode it with :func:`load_clip`). Fails like :func:`load_clip`;
    a clip its header refuses (``wanted_types``) comes back as :func:`load_clip` gives it.
    The file is read once: its identity (sha256) is hashed from the bytes the frames are cut from
    (:func:`~echoclip_cli.media.dicom.read_jpeg_codestreams`)."""
    path = Path(path)
    _check_file(path)
    if input_kind(path) != "dicom":
        return None
    try:
        with _decoder_errors(path):
            got = read_jpeg_codestreams(path, cfg.frame_indices, keep_phi=keep_phi, salt=salt,
                                        wanted_types=wanted_types)
    except Refused as refused:  # its header gave a type the run does not score: no frame read
        return _refused(path, cfg, refused.meta)
    if got is None:
        return None
    streams, raw, size, digest = got
    return Codestreams(streams=streams, meta=_clip_meta(path, raw, {}, cfg, digest), source=str(path), size=size)


def finish_codestreams(item: Codestreams, frames: torch.Tensor, cfg: PreprocessConfig, decoder: str) -> Clip | None:
    """Prepare decoded frames ((T, 3, H, W) uint8 RGB on any device) of ``item`` as
    :func:`load_clip` would; the result stays on that device. ``None`` when the frames are not
    what the header promised, or not mostly grey: then :func:`load_clip` must decode the file,
    whose colour checks need pydicom (:mod:`.colour`)."""
    if frames.ndim != 4:
        return None
    return finish_codestream_group([item], frames[None], cfg, decoder)[0]


def finish_codestream_group(items: Sequence[Codestreams], frames: torch.Tensor, cfg: PreprocessConfig,
                            decoder: str) -> list[Clip | None]:
    """:func:`finish_codestreams` of N inputs whose decoded frames have one shape, (N, T, 3, H, W)
    on any device, prepared together, one group per ultrasound region (:func:`_finish_region`):
    the colour check, the pixel classification and the mask's block grids are worked out where
    the frames are, for every clip of the group, and leave the device in one copy."""
    out: list[Clip | None] = [None] * len(items)
    if frames.ndim != 5 or frames.shape[2] != 3:
        return out
    by_region: dict[tuple[int, ...] | None, list[int]] = {}
    for i, item in enumerate(items):
        if tuple(frames.shape[3:]) == item.size:
            region = item.meta.get("region")
            by_region.setdefault(None if region is None else tuple(region), []).append(i)
    for region, members in by_region.items():
        group = frames if len(members) == len(items) else frames[members]
        clips = _finish_region([items[i] for i in members], group, region, cfg, decoder)
        for i, clip in zip(members, clips, strict=True):
            out[i] = clip
    return out


def _finish_region(items: list[Codestreams], frames: torch.Tensor, region: tuple[int, ...] | None,
                   cfg: PreprocessConfig, decoder: str) -> list[Clip | None]:
    """Clips of one frame size and region, (N, T, 3, H, W): colour check and classification
    counts (:func:`~.colour.grey_counts`, :func:`~.classify.pixel_counts`) and the opened
    mask grids (:func:`~echoclip_cli.preprocess.sector_grids`) on the frames' device, one copy
    of them all to the host, then the host's part (verdicts, components, hulls, polygons) and
    :func:`~echoclip_cli.preprocess.prepare_frame_group` of the clips that pass."""
    mask = _effective_mask(cfg.mask, "dicom")
    pixels = frames.permute(0, 1, 3, 4, 2)  # (N, T, H, W, 3) views
    sample = pixels[:, grey_sample_picks(frames.shape[1]), ::4, ::4]  # what the colour check reads
    counts = torch.cat([grey_counts(sample), classify.pixel_counts(sample)], dim=1)
    search = sector_grids(region_view(pixels, region)[0]) if mask == "sector" else None
    grids = search if isinstance(search, tuple) else None
    host_counts, host_grids = _to_host_together(counts, None if grids is None else grids[0])
    chosen, metas = [], []
    for k, item in enumerate(items):
        lit, grey, *pixel = (int(v) for v in host_counts[k])
        if mostly_grey_counts(lit, grey):
            meta = dict(item.meta)
            header = _header_type(meta)
            meta.update(classify.classify_counts(header, len(grey_sample_picks(frames.shape[1])), *pixel))
            chosen.append(k)
            metas.append(meta)
    if not chosen:
        return [None] * len(items)
    found = None
    if grids is not None and host_grids is not None:
        found = [(keep, {"mode": mask, **info}) for keep, info in
                 sectors_from_grids(host_grids[chosen], grids[1], *region_view(pixels, region)[0].shape[2:4])]
    elif isinstance(search, list):  # masking skipped for every clip (one frame, frames too small)
        found = [(keep, {"mode": mask, **info}) for keep, info in (search[k] for k in chosen)]
    group = pixels if len(chosen) == len(items) else pixels[chosen]
    prepared, geometries = prepare_frame_group(group, cfg, region=region, mask=mask, found=found)
    out: list[Clip | None] = [None] * len(items)
    for k, meta, clip_frames, geometry in zip(chosen, metas, prepared, geometries, strict=True):
        meta.update(geometry)
        meta["region_note"] = geometry.get("region_note") or meta.get("region_note")
        meta["decoder"] = decoder
        out[k] = Clip(frames=clip_frames, meta=meta, source=items[k].source)
    return out


def _to_host_together(counts: torch.Tensor, grids: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, k) int64 counts and (N, h, w) bool grids copied to the host in one copy (one wait for
    the device, :func:`~echoclip_cli.preprocess.to_host`), as numpy arrays."""
    parts = [counts.contiguous().view(torch.uint8).flatten()]
    if grids is not None:
        parts.append(grids.contiguous().view(torch.uint8).flatten())
    host = to_host(torch.cat(parts)).numpy()
    size = counts.numel() * counts.element_size()
    host_counts = host[:size].view(np.int64).reshape(tuple(counts.shape))
    host_grids = None if grids is None else host[size:].view(bool).reshape(tuple(grids.shape))
    return host_counts, host_grids


_VIDEO_MASK_REASON = "video files are taken as already masked (use --mask sector to mask them)"


def _effective_mask(mode: str, source_kind: str | None) -> str:
    """``auto`` masks DICOM (burned-in overlays) and leaves video files as they are (PreprocessConfig)."""
    if mode != "auto":
        return mode
    return "none" if source_kind == "video" else "sector"
