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
from ..preprocess import prepare_frame_group, prepare_frames, to_host
from ..preprocess_config import PreprocessConfig
from . import classify
from .colour import grey_sample_picks, mostly_grey
from .dicom import read_dicom, read_jpeg_codestreams
from .discover import input_kind
from .phi import safe_reason
from .store_file import read_clip_file
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
    path: str | os.PathLike[str], indices: Sequence[int], *, keep_phi: bool = False, salt: str | None = None
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
        return read_dicom(path, indices, keep_phi=keep_phi, salt=salt)


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
    meta = {"source": str(path), "source_sha256": sha256 or sha256_file(path), "source_stat_key": stat_key(path),
            **dict.fromkeys(_IDENTIFIERS), **raw, **geometry}
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
    if "clip_type" not in meta:  # written before clips were classified: judge the stored frames
        meta.update(classify.classify(None, frames.permute(0, 2, 3, 1).numpy()))
    return Clip(frames=frames, meta={**meta, "source_stat_key": stat_key(path)}, source=str(path))


def load_clip(
    path: str | os.PathLike[str], cfg: PreprocessConfig, *, keep_phi: bool = False, salt: str | None = None
) -> Clip:
    """Read any supported input and prepare it for ``cfg`` (see the module docstring)."""
    path = Path(path)
    _check_file(path)
    if input_kind(path) == "store":
        return _load_store(path, cfg)
    frames_rgb, raw = read_frames(path, cfg.frame_indices, keep_phi=keep_phi, salt=salt)
    raw.update(classify.classify(_header_type(raw), frames_rgb))
    mask = _effective_mask(cfg.mask, raw.get("source_kind"))
    frames, geometry = prepare_frames(frames_rgb, cfg, region=raw.get("region"), mask=mask)
    if cfg.mask == "auto" and mask == "none":
        geometry["mask"] = {"mode": "auto", "applied": False, "reason": _VIDEO_MASK_REASON}
    return Clip(frames=frames, meta=_clip_meta(path, raw, geometry, cfg), source=str(path))


@dataclass
class Codestreams:
    """An input whose frames are JPEG codestreams still to decode (on the model's device): the
    metadata :func:`load_clip` would give, less the geometry, which comes after decoding."""

    streams: list[bytes]
    meta: dict[str, Any]
    source: str
    size: tuple[int, int]  # (rows, columns) the header promises


def load_codestreams(
    path: str | os.PathLike[str], cfg: PreprocessConfig, *, keep_phi: bool = False, salt: str | None = None
) -> Codestreams | None:
    """The sampled frames of an 8-bit JPEG Baseline DICOM file as undecoded codestreams, or
    ``None`` for any other input (decode it with :func:`load_clip`). Fails like :func:`load_clip`.
    The file is read once: its identity (sha256) is hashed from the bytes the frames are cut from
    (:func:`~echoclip_cli.media.dicom.read_jpeg_codestreams`)."""
    path = Path(path)
    _check_file(path)
    if input_kind(path) != "dicom":
        return None
    with _decoder_errors(path):
        got = read_jpeg_codestreams(path, cfg.frame_indices, keep_phi=keep_phi, salt=salt)
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
    on any device, prepared together (:func:`~echoclip_cli.preprocess.prepare_frame_group`, one
    group per ultrasound region): the colour check's samples leave the device in one copy."""
    out: list[Clip | None] = [None] * len(items)
    if frames.ndim != 5 or frames.shape[2] != 3:
        return out
    picks = grey_sample_picks(frames.shape[1])
    samples = to_host(frames[:, picks, :, ::4, ::4]).permute(0, 1, 3, 4, 2).numpy()  # only the samples leave
    metas: dict[int, dict[str, Any]] = {}
    for i, (item, sample) in enumerate(zip(items, samples, strict=True)):
        if tuple(frames.shape[3:]) == item.size and mostly_grey(sample, sampled=True):
            meta = dict(item.meta)
            meta.update(classify.classify(_header_type(meta), sample))
            metas[i] = meta
    by_region: dict[tuple[int, ...] | None, list[int]] = {}
    for i, meta in metas.items():
        region = meta.get("region")
        by_region.setdefault(None if region is None else tuple(region), []).append(i)
    for region, chosen in by_region.items():
        group = frames if len(chosen) == len(items) else frames[chosen]
        prepared, geometries = prepare_frame_group(group.permute(0, 1, 3, 4, 2), cfg, region=region,
                                                   mask=_effective_mask(cfg.mask, "dicom"))
        for i, clip_frames, geometry in zip(chosen, prepared, geometries, strict=True):
            meta = metas[i]
            meta.update(geometry)
            meta["region_note"] = geometry.get("region_note") or meta.get("region_note")
            meta["decoder"] = decoder
            out[i] = Clip(frames=clip_frames, meta=meta, source=items[i].source)
    return out


_VIDEO_MASK_REASON = "video files are taken as already masked (use --mask sector to mask them)"


def _effective_mask(mode: str, source_kind: str | None) -> str:
    """``auto`` masks DICOM (burned-in overlays) and leaves video files as they are (PreprocessConfig)."""
    if mode != "auto":
        return mode
    return "none" if source_kind == "video" else "sector"
