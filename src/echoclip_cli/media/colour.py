"""Pixel values → uint8 RGB: palettes, monochrome, bit depth, and mislabelled colour spaces.

* ``PALETTE COLOR``: pydicom's ``apply_color_lut``; 16-bit LUT output is scaled to 8 bits
  (``>> 8``, exact for both the ×256 and ×257 conventions).
* ``MONOCHROME2`` / ``MONOCHROME1``: data wider than 8 bits is windowed with the header's first
  ``WindowCenter``/``WindowWidth`` (DICOM's linear formula) when present, else stretched from the
  minimum to the maximum of the sampled frames (8-bit data is left as it is); ``MONOCHROME1`` is
  then inverted; grey is copied to three channels.
* RGB wider than 8 bits keeps its top 8 bits.
* **Mislabelled colour**: JPEG Baseline cines often say ``RGB`` while their codestream is YCbCr,
  and decoders then return YCbCr as if it were RGB (green/purple frames). B-mode echo is mostly
  grey, so when a 3-channel result is not mostly grey we also read it as YCbCr, and keep that
  when it is clearly grey (:func:`fix_mislabelled_colour`). The correction is recorded in
  metadata. (The opposite trap — an RGB codestream that Pillow converts as if it were YCbCr — is
  caught in :mod:`.dicom` by comparing with pydicom's decoding.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MediaError

# "Grey" pixel: channels within _GREY_SPREAD of each other, counted among pixels brighter than
# _NOT_BLACK (black borders say nothing). Frames below _MOSTLY_GREY are suspicious; an
# alternative reading replaces them only if it reaches _CLEARLY_GREY.
_GREY_SPREAD = 12
_NOT_BLACK = 24
_MOSTLY_GREY = 0.5
_CLEARLY_GREY = 0.8
_MIN_SAMPLE = 200


def grey_fraction(frames: np.ndarray) -> float | None:
    """Share of non-black pixels whose channels agree, from up to 3 frames subsampled 1 in 4."""
    return grey_fraction_of_sample(frames[grey_sample_picks(len(frames)), ::4, ::4])


def grey_sample_picks(n_frames: int) -> list[int]:
    """The frames :func:`grey_fraction` looks at: first, middle and last."""
    return sorted({0, n_frames // 2, n_frames - 1})


def grey_fraction_of_sample(sample: np.ndarray) -> float | None:
    """:func:`grey_fraction` of frames already picked and subsampled (a GPU sends only those)."""
    channels = [sample[..., k] for k in range(sample.shape[-1])]
    high = np.maximum.reduce(channels).astype(np.int16)  # faster than max(axis=-1) over 3 channels
    low = np.minimum.reduce(channels).astype(np.int16)
    lit = high >= _NOT_BLACK
    if int(lit.sum()) < _MIN_SAMPLE:
        return None
    return float(((high - low)[lit] <= _GREY_SPREAD).mean())


def ybr_to_rgb(frames: np.ndarray) -> np.ndarray:
    """Full-range YCbCr (JPEG/JFIF, DICOM YBR_FULL) → RGB, uint8, one frame at a time."""
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        y, cb, cr = (frame[..., k].astype(np.float32) for k in range(3))
        cb -= 128.0
        cr -= 128.0
        rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
        out[i] = np.clip(np.rint(rgb), 0, 255)
    return out


YCBCR_FIX = "YCbCr labelled RGB: converted to RGB"


def grey_counts(samples: Any) -> Any:
    """:func:`grey_fraction_of_sample`'s counts for N clips at once where their frames are:
    ``samples`` is (N, T, H, W, 3) uint8 (frames picked and subsampled); returns an (N, 2) int64
    tensor (pixels not black, of which grey) on its device (:func:`mostly_grey_counts`)."""
    import torch

    if samples.device.type == "cpu":  # numpy's uint8 reductions are several times faster there
        array = samples.numpy()
        high = np.maximum(np.maximum(array[..., 0], array[..., 1]), array[..., 2])
        low = np.minimum(np.minimum(array[..., 0], array[..., 1]), array[..., 2])
        lit = high >= _NOT_BLACK
        grey = lit & ((high - low) <= _GREY_SPREAD)
        return torch.from_numpy(np.stack([lit.sum(axis=(1, 2, 3)), grey.sum(axis=(1, 2, 3))], axis=1).astype(np.int64))
    high, low = samples.amax(dim=-1), samples.amin(dim=-1)
    lit = high >= _NOT_BLACK
    grey = lit & ((high - low) <= _GREY_SPREAD)
    return torch.stack([lit.sum(dim=(1, 2, 3)), grey.sum(dim=(1, 2, 3))], dim=1)


def mostly_grey_counts(lit: int, grey: int) -> bool:
    """:func:`mostly_grey` of a sample from its :func:`grey_counts` (the share is a quotient of
    whole counts: the same float as numpy's mean)."""
    return lit < _MIN_SAMPLE or float(grey) / lit >= _MOSTLY_GREY


def mostly_grey(frames: np.ndarray, *, sampled: bool = False) -> bool:
    """Whether frames pass the B-mode sanity check (or are too dark to judge); ``sampled``: the
    frames are already :func:`grey_fraction`'s sample."""
    score = grey_fraction_of_sample(frames) if sampled else grey_fraction(frames)
    return score is None or score >= _MOSTLY_GREY


def fix_mislabelled_colour(frames: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Return (frames, note): converted from YCbCr when the frames as given are not mostly grey
    and the conversion makes them clearly grey (see module); else the frames unchanged."""
    if mostly_grey(frames):
        return frames, None
    score = grey_fraction(ybr_to_rgb(frames[grey_sample_picks(len(frames))]))
    if score is None or score < _CLEARLY_GREY:
        return frames, None
    return ybr_to_rgb(frames), YCBCR_FIX


def _to_uint8(arr: np.ndarray, bits_stored: int) -> np.ndarray:
    """Unsigned data of ``bits_stored`` bits → uint8 by keeping the top 8 bits."""
    if arr.dtype == np.uint8:
        return arr
    shift = max(0, bits_stored - 8)
    return (np.clip(arr, 0, None).astype(np.uint32) >> shift).clip(0, 255).astype(np.uint8)


def palette_to_rgb(frame: np.ndarray, ds: Any) -> np.ndarray:
    """One palette-index frame → (H, W, 3) uint8 RGB through the header's colour LUTs."""
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(frame, ds)
    except (ValueError, KeyError, AttributeError, IndexError) as exc:
        raise MediaError(f"cannot apply the palette colour lookup table ({exc})") from None
    if rgb.dtype == np.uint8:
        return rgb
    return (rgb.astype(np.uint32) >> 8).astype(np.uint8)  # 16-bit LUT entries → 8 bits


def _first_number(value: Any) -> float | None:
    """A header number, or the first of several (WindowCenter may be multi-valued)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _window(ds: Any) -> tuple[float, float] | None:
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if center is None or width is None or width < 1:
        return None
    return center, width


def grey_to_uint8(frames: np.ndarray, ds: Any) -> tuple[np.ndarray, str]:
    """(T, H, W) grey data of any depth → uint8; returns the scaling used ("none", "window", "minmax")."""
    if frames.dtype == np.uint8:
        return frames, "none"
    window = _window(ds)
    values = frames.astype(np.float32)
    if window is not None:
        center, width = window
        scaled = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0) * 255.0
        return np.rint(scaled).astype(np.uint8), "window"
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 255:
        return frames.astype(np.uint8), "none"
    scaled = (values - low) * (255.0 / max(high - low, 1.0))
    return np.rint(scaled).astype(np.uint8), "minmax"


def to_rgb8(raw: list[np.ndarray], ds: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Decoded DICOM frames (any depth, 1 or 3 samples, palette) → (T, H, W, 3) uint8 RGB + notes."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    notes: dict[str, Any] = {}
    if photometric == "PALETTE COLOR":
        frames = np.stack([palette_to_rgb(f, ds) for f in raw])
    elif raw[0].ndim == 3:
        frames = np.stack([_to_uint8(f, bits_stored) for f in raw])
        frames, fix = fix_mislabelled_colour(frames)
        if fix:
            notes["colour_fix"] = fix
    else:
        grey, scaling = grey_to_uint8(np.stack(raw), ds)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        if scaling != "none":
            notes["grey_scaling"] = scaling
        frames = np.repeat(grey[..., None], 3, axis=-1)
    return np.ascontiguousarray(frames), notes
