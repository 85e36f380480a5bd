"""What kind of clip an input is, so each use case scores only what suits it.

A study from a PACS export holds 2D cines of many views, colour-flow clips, spectral Doppler
and M-mode strips, single-frame stills and screenshots, sometimes a CT. EchoCLIP's EF and device
results were obtained on 2D ultrasound *videos*; a number computed on a CT or a Doppler strip is
worse than no number. Every input gets a ``clip_type`` and the reason for it:

=================== ==================================================================
``2d``              multi-frame 2D ultrasound (B-mode), the kind EchoCLIP was trained on
``2d_colour``       multi-frame 2D with colour flow (Doppler colour map over the sector)
``spectral_doppler`` PW/CW Doppler spectrum as the main region
``m_mode``          M-mode strip as the main region
``still``           a single frame, or frames that do not change (a screenshot)
``not_ultrasound``  another modality (CT, MR, …) or a non-ultrasound SOP class
=================== ==================================================================

The DICOM header decides first (:func:`from_header`): Modality and SOP Class, NumberOfFrames,
then the Sequence of Ultrasound Regions — the largest region's spatial format (1 2D, 2 M-mode,
3 spectral) and, for 2D, whether a colour-flow region (data type 2) is present. Where the header
is silent (videos, DICOM without regions), the sampled pixels decide (:func:`from_pixels`): one
frame or no motion is a still; colour in more than 2 % of the lit pixels is colour flow.

By default EF and device scores use ``2d`` only: colour-flow clips are left out because the
colour map replaces the tissue the model reads for wall motion and devices, and the released
model's training set (apical-4-chamber videos) is B-mode; ``--clip-types`` lets a user add them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLIP_TYPES = ("2d", "2d_colour", "spectral_doppler", "m_mode", "still", "not_ultrasound")
ULTRASOUND_TYPES = CLIP_TYPES[:-1]
VIDEO_TYPES = ("2d",)  # what EF and device scores use by default (module doc)

# Storage SOP classes that hold ultrasound images (current and retired).
_US_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3",  # (retired) Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.6",  # (retired) Ultrasound Image Storage
}
_SPATIAL = {1: "2d", 2: "m_mode", 3: "spectral_doppler"}  # RegionSpatialFormat of image regions
_COLOUR_FLOW = 2  # RegionDataType: colour flow
_COLOUR_SHARE = 0.02  # share of lit pixels with chroma above which a clip is colour flow
_CHROMA = 40  # max - min over R, G, B that counts as colour (grey B-mode stays near 0)
_MOTION = 2.0  # mean absolute change between sampled frames (grey levels) below which nothing moves


def from_header(ds: Any) -> tuple[str, str] | None:
    """``(clip_type, reason)`` from a DICOM header, or None where it does not say."""
    modality = str(ds.get("Modality") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID") or "")
    if modality and modality != "US":
        return "not_ultrasound", f"Modality {modality}, not ultrasound (US)"
    if not modality and sop_class and sop_class not in _US_SOP_CLASSES:
        return "not_ultrasound", f"SOP class {sop_class} is not an ultrasound image"
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames <= 1:
        return "still", "a single frame"
    return _from_regions(ds.get("SequenceOfUltrasoundRegions") or [])


def _from_regions(regions: Any) -> tuple[str, str] | None:
    image = []
    for item in regions:
        fmt = item.get("RegionSpatialFormat")
        if fmt not in _SPATIAL:
            continue
        try:
            area = (int(item.get("RegionLocationMaxX1")) - int(item.get("RegionLocationMinX0"))) * (
                int(item.get("RegionLocationMaxY1")) - int(item.get("RegionLocationMinY0")))
        except (TypeError, ValueError):
            area = 0
        image.append((area, fmt, item.get("RegionDataType")))
    if not image:
        return None
    area, fmt, _ = max(image, key=lambda r: r[0])
    kind = _SPATIAL[fmt]
    if kind == "2d" and any(f == 1 and t == _COLOUR_FLOW for _, f, t in image):
        return "2d_colour", "the header's ultrasound regions include colour flow"
    reason = {"2d": "the header's main ultrasound region is 2D tissue",
              "m_mode": "the header's main ultrasound region is M-mode",
              "spectral_doppler": "the header's main ultrasound region is a spectral Doppler trace"}[kind]
    return kind, reason


def from_pixels(frames: np.ndarray) -> tuple[str, str]:
    """``(clip_type, reason)`` from the sampled frames ((T, H, W, 3) uint8 RGB, before geometry)."""
    if frames.shape[0] <= 1:
        return "still", "a single frame"
    rows, cols = _step(frames.shape[1:3])
    sample = np.ascontiguousarray(frames[:, ::rows, ::cols])
    channels = [sample[..., k] for k in range(sample.shape[-1])]
    high, low = np.maximum.reduce(channels), np.minimum.reduce(channels)  # faster than max(axis=-1)
    lit = high > 20
    chroma = (high - low) > _CHROMA  # uint8: high >= low, no wrap-around
    grey = channels[0].astype(np.int16)  # grey-scale frames: one channel shows the motion
    change = np.abs(np.diff(grey, axis=0))
    return from_pixel_counts(frames.shape[0], int(lit.sum()), int((chroma & lit).sum()), int(change.sum()),
                             change.size)


def _step(size: Any) -> tuple[int, int]:
    """The subsampling of :func:`from_pixels`: ~100 pixels a side, plenty for shares and motion."""
    step = max(1, min(int(size[0]), int(size[1])) // 96)
    return step, step


def from_pixel_counts(n_frames: int, lit: int, coloured: int, change: int, pairs: int) -> tuple[str, str]:
    """:func:`from_pixels` from its counts: lit pixels, lit pixels with chroma, the sum of the
    absolute grey change between sampled frames and the number of values it sums (the means are
    quotients of whole counts: the same floats as numpy's means)."""
    if n_frames <= 1:
        return "still", "a single frame"
    share = float(coloured) / max(1, lit)
    if share > _COLOUR_SHARE:
        return "2d_colour", f"{share:.0%} of the lit pixels are coloured (colour flow)"
    if float(change) / pairs < _MOTION:
        return "still", "the frames do not change"
    return "2d", "moving grey-scale frames"


def pixel_counts(samples: Any) -> Any:
    """The counts :func:`from_pixel_counts` takes, for N clips at once where their frames are:
    ``samples`` is an (N, T, H, W, 3) uint8 tensor; returns an (N, 4) int64 tensor (lit,
    coloured, change, pairs) on its device."""
    import torch

    rows, cols = _step(samples.shape[2:4])
    sample = samples[:, :, ::rows, ::cols]
    if sample.device.type == "cpu":  # numpy's uint8 reductions are several times faster there
        return torch.from_numpy(_pixel_counts_numpy(sample.numpy()))
    high, low = sample.amax(dim=-1), sample.amin(dim=-1)
    lit = high > 20
    coloured = (((high - low) > _CHROMA) & lit).sum(dim=(1, 2, 3))
    grey = sample[..., 0].to(torch.int16)
    change = (grey[:, 1:] - grey[:, :-1]).abs().sum(dim=(1, 2, 3), dtype=torch.int64)
    pairs = torch.full_like(change, (sample.shape[1] - 1) * sample.shape[2] * sample.shape[3])
    return torch.stack([lit.sum(dim=(1, 2, 3)), coloured, change, pairs], dim=1)


def classify(header: tuple[str, str] | None, frames: np.ndarray) -> dict[str, str]:
    """The clip type fields every record carries: the header's answer, else the pixels'."""
    clip_type, reason = header if header is not None else from_pixels(frames)
    return {"clip_type": clip_type, "clip_reason": reason}


def _pixel_counts_numpy(sample: np.ndarray) -> np.ndarray:
    """:func:`pixel_counts` of an (N, T, h, w, 3) array already subsampled."""
    channels = [sample[..., k] for k in range(sample.shape[-1])]
    high, low = np.maximum.reduce(channels), np.minimum.reduce(channels)
    lit = high > 20
    coloured = (((high - low) > _CHROMA) & lit).sum(axis=(1, 2, 3))
    grey = channels[0].astype(np.int16)
    change = np.abs(np.diff(grey, axis=1)).sum(axis=(1, 2, 3), dtype=np.int64)
    pairs = np.full_like(change, (sample.shape[1] - 1) * sample.shape[2] * sample.shape[3])
    return np.stack([lit.sum(axis=(1, 2, 3)), coloured, change, pairs], axis=1).astype(np.int64)


def classify_counts(header: tuple[str, str] | None, n_frames: int, lit: int, coloured: int, change: int,
                    pairs: int) -> dict[str, str]:
    """:func:`classify` from the counts of :func:`pixel_counts` (made where the frames are)."""
    clip_type, reason = header if header is not None else from_pixel_counts(n_frames, lit, coloured, change, pairs)
    return {"clip_type": clip_type, "clip_reason": reason}


def parse_clip_types(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """``"2d,2d_colour"`` → a checked tuple; ``"all"`` → every ultrasound type; None → ``default``."""
    if text is None:
        return default
    if text.strip() == "all":
        return ULTRASOUND_TYPES
    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in chosen if t not in CLIP_TYPES]
    if unknown or not chosen:
        from ..errors import UsageError

        raise UsageError(f"unknown clip type {', '.join(map(repr, unknown)) or '(none)'}",
                         hint=f"clip types: {', '.join(CLIP_TYPES)}, or all")
    if "not_ultrasound" in chosen:
        from ..errors import UsageError

        raise UsageError("non-ultrasound objects are never scored", hint="leave out not_ultrasound")
    return chosen
