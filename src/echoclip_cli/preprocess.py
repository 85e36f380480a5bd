"""Geometry and normalisation: decoded RGB frames → the uint8 frames we store → the model's input.

Stages, in order (:func:`prepare_frames` runs 1–4, :func:`to_model_input` runs 5):

1. **Region crop** — when a DICOM header names the 2D tissue region (``SequenceOfUltrasoundRegions``),
   keep only that box.
2. **Mask** (``mask="auto"``) — black out what lies outside the scan sector and static burned-in
   overlays (text, ECG trace, colour bars), found from the data: see :func:`motion_mask`.
3. **Square crop and zoom** — centre-crop to a square (the output's aspect), then remove
   ``zoom`` (10 %) of the side on each side, as the released pipeline did. Rounding, decided here
   and recorded in every output as ``crop_box``: for an ``h × w`` frame, ``side = min(h, w)``,
   ``x0 = (w - side) // 2``, ``y0 = (h - side) // 2`` (an odd leftover pixel stays on the right /
   bottom); then ``m = floor(side * zoom)`` pixels go from each side (at most ``(side - 1) // 2``,
   so at least one pixel is left). The box is square for every frame size — the released code
   crashed on 224×225 frames, this never does.
4. **Resize** — bicubic, a = −0.75, pixel-centre aligned, no antialias, replicated borders: the
   arithmetic of OpenCV's ``INTER_CUBIC``, which the released pipeline used, done in float32 with
   the result rounded (half to even) and clipped to uint8 as OpenCV does for uint8 images. Against
   ``cv2.resize`` (OpenCV 5) on random frames, > 99.9 % of pixels are identical and the rest differ
   by one grey level (sources under 4 pixels on a side: ~96 %, where OpenCV switches to 11-bit
   fixed-point arithmetic). No OpenCV is needed at run time.
5. **Model input** — ``/255``, channel order per config, then ``(x - mean) / std``. The released
   pipeline decoded with OpenCV and so fed the model **BGR** frames as if they were RGB, normalised
   with CLIP's RGB mean/std in that (swapped) order. ``channel_order="BGR"`` (the default)
   reproduces this: stored frames are RGB, :func:`to_model_input` reverses them to BGR and then
   applies ``mean[0]``/``std[0]`` to the first channel *as fed* (blue), exactly like the original.

Every box is ``[x0, y0, x1, y1)`` in pixels of the decoded frame, end exclusive.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .preprocess_config import PreprocessConfig

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (end exclusive)

_CUBIC_A = -0.75  # Keys' cubic convolution parameter used by OpenCV (and so by the released model)
_RESIZE_ELEMENTS = 1_500_000  # input pixels resized at a time on the CPU: float temporaries stay in cache


# --------------------------------------------------------------------------- resize


def _cubic_taps(t: torch.Tensor) -> torch.Tensor:
    """Keys cubic (a = −0.75) weights of the 4 taps at offsets −1, 0, 1, 2 for fractions ``t``."""
    a = _CUBIC_A
    x0, x1, x2 = t + 1, t, 1 - t
    w0 = ((a * x0 - 5 * a) * x0 + 8 * a) * x0 - 4 * a
    w1 = ((a + 2) * x1 - (a + 3)) * x1 * x1 + 1
    w2 = ((a + 2) * x2 - (a + 3)) * x2 * x2 + 1
    w3 = 1 - w0 - w1 - w2
    return torch.stack([w0, w1, w2, w3], dim=1)  # (out, 4)


def cubic_resize_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices (out, 4) and float32 weights (out, 4) of a 1-D bicubic resize.

    Output pixel ``d`` samples the source at ``(d + 0.5) * in/out - 0.5`` (pixel centres aligned);
    positions and weights are computed in float64, as OpenCV does, and applied in float32. Indices
    outside the source are clamped (replicated border).
    """
    scale = 1.0 / (out_size / in_size)  # as OpenCV computes it (1 / inverse scale, in double)
    pos = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5
    base = torch.floor(pos)
    weights = _cubic_taps(pos - base).to(torch.float32)
    offsets = torch.arange(-1, 3, dtype=torch.int64)
    index = (base.to(torch.int64)[:, None] + offsets[None, :]).clamp_(0, in_size - 1)
    return index, weights


def cubic_resize_matrix(in_size: int, out_size: int, device: torch.device | None = None) -> torch.Tensor:
    """The (out, in) float32 matrix of a 1-D bicubic resize: 4 taps per row, borders folded in."""
    index, weights = cubic_resize_taps(in_size, out_size)
    rows = torch.arange(out_size)[:, None].expand(-1, 4)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float32)
    matrix.index_put_((rows, index), weights, accumulate=True)
    return matrix.to(device)


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise UsageError(f"resize target must be at least 1×1, not {height}×{width}")
    return height, width


def _bands(matrix: torch.Tensor, block: int) -> list[tuple[int, int, int, int]]:
    """Blocks of ``block`` output rows of a resize matrix with the input span they touch:
    (out_start, out_end, in_start, in_end). Four taps per row keep each span short."""
    nonzero = matrix != 0
    bands = []
    for start in range(0, matrix.shape[0], block):
        cols = torch.nonzero(nonzero[start : start + block].any(dim=0)).flatten()
        bands.append((start, min(start + block, matrix.shape[0]), int(cols[0]), int(cols[-1]) + 1))
    return bands


def _banded_pass(x: torch.Tensor, matrix: torch.Tensor, bands: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """``x @ matrix.T`` over the last dimension, block by block, skipping the zeros of the matrix."""
    out = torch.empty((*x.shape[:-1], matrix.shape[0]), dtype=torch.float32)
    for o0, o1, i0, i1 in bands:
        out[..., o0:o1] = x[..., i0:i1] @ matrix[o0:o1, i0:i1].T
    return out


_BAND = 16  # output pixels per block of the CPU resize


def resize_bicubic(images: torch.Tensor | np.ndarray, size: int | Sequence[int]) -> torch.Tensor:
    """Resize the last two dimensions (..., H, W) to ``size`` (int or (height, width)).

    Matches OpenCV ``cv2.resize(..., interpolation=cv2.INTER_CUBIC)``: computed in float32; uint8
    input gives uint8 (rounded half to even, clipped), any other dtype gives float32. Works for
    every size, 1×1 included, on any device the input lives on. Each pass is a product with the
    (out, in) tap matrix, horizontal pass first as OpenCV; on the CPU only the band of the
    matrix around its four taps per row is used (several times faster for 600×800 frames).
    """
    src = torch.as_tensor(images)
    if src.ndim < 2 or src.shape[-1] < 1 or src.shape[-2] < 1:
        raise UsageError(f"cannot resize an image of shape {tuple(src.shape)}")
    out_h, out_w = _as_size(size)
    is_uint8 = src.dtype == torch.uint8
    lead, (in_h, in_w) = src.shape[:-2], src.shape[-2:]
    on_cpu = src.device.type == "cpu"
    rows = cubic_resize_matrix(in_h, out_h, src.device)  # (out_h, in_h)
    cols = cubic_resize_matrix(in_w, out_w, src.device)  # (out_w, in_w)
    row_bands, col_bands = (_bands(rows, _BAND), _bands(cols, _BAND)) if on_cpu else (None, None)
    planes = src.reshape(-1, in_h, in_w)
    out_dtype = torch.uint8 if is_uint8 else torch.float32
    result = torch.empty((planes.shape[0], out_h, out_w), dtype=out_dtype, device=src.device)
    chunk_size = max(1, min(64, _RESIZE_ELEMENTS // (in_h * in_w))) if on_cpu else max(1, planes.shape[0])
    for start in range(0, planes.shape[0], chunk_size):
        chunk = planes[start : start + chunk_size].to(torch.float32)
        if row_bands is not None and col_bands is not None:
            across = _banded_pass(chunk, cols, col_bands)  # horizontal pass first, as OpenCV
            both = _banded_pass(across.transpose(1, 2), rows, row_bands).transpose(1, 2)
        else:
            both = rows @ (chunk @ cols.T)  # (n, out_h, out_w)
        if is_uint8:
            both = torch.round(both).clamp_(0, 255)  # saturate_cast<uchar>: nearest, clipped
        result[start : start + chunk_size] = both.to(out_dtype)
    return result.reshape(*lead, out_h, out_w)


# --------------------------------------------------------------------------- boxes


def square_zoom_box(height: int, width: int, zoom: float) -> Box:
    """The centred square crop with ``zoom`` of its side removed on each side (see module doc)."""
    side = min(height, width)
    x0, y0 = (width - side) // 2, (height - side) // 2
    margin = min(int(math.floor(side * zoom + 1e-9)), (side - 1) // 2)
    return x0 + margin, y0 + margin, x0 + side - margin, y0 + side - margin


def clip_region(region: Sequence[int] | None, height: int, width: int) -> tuple[Box | None, str | None]:
    """Check a region box against the frame: (box, None) to use it, (None, reason) to ignore it.

    Vendors sometimes write bounds one pixel past the edge: those are clipped. A box that lies
    further outside (a header copied from a larger image) is ignored rather than guessed at.
    """
    if region is None:
        return None, None
    x0, y0, x1, y1 = (int(v) for v in region)
    if x0 < 0 or y0 < 0 or x1 > width + 1 or y1 > height + 1:
        return None, f"ultrasound region {[x0, y0, x1, y1]} lies outside the {width}×{height} frame"
    x1, y1 = min(x1, width), min(y1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None, f"ultrasound region {[x0, y0, x1, y1]} is empty"
    return (x0, y0, x1, y1), None


# --------------------------------------------------------------------------- mask

# A pixel is "live" (part of the moving image) when its grey level changes by more than
# _MOTION_RANGE across the sampled frames and it is brighter than _DARK in at least
# _LIT_FRACTION of them: pixels that never change (text, colour bars, black borders) or are dark
# in most frames are off. Live pixels are pooled into square blocks (about _GRID blocks on the
# short side); blocks at least _BLOCK_LIVE live are opened with a 3×3 square (removing thin lines
# such as an ECG sweep or a changing number), the largest 8-connected group is kept, and its
# convex hull (through block corners, so slightly generous) is the mask. Dark blood pools inside
# the sector are not live but lie inside the hull, so they are kept; an already-masked video
# keeps everything but its black border. What falls outside is static overlay or nearly black.
_MOTION_RANGE = 3
_DARK = 8
_LIT_FRACTION = 0.25
_BLOCK_LIVE = 0.25
_GRID = 128
_MIN_MASK_FRACTION = 0.03  # a moving region smaller than this is not a scan sector
_MIN_MASK_SIDE = 16


def _live_pixels(frames: torch.Tensor) -> torch.Tensor:
    """(H, W) bool, on the frames' device: pixels that change across (T, H, W, 3) frames and are
    not dark in most of them. (Integer arithmetic: numpy on the CPU, several times faster there
    than torch's uint8 reductions; torch elsewhere; the same result either way.)"""
    need = math.ceil(_LIT_FRACTION * frames.shape[0])
    if frames.device.type == "cpu":
        array = frames.numpy()
        grey = np.maximum(np.maximum(array[..., 0], array[..., 1]), array[..., 2])  # (T, H, W)
        spread = grey.max(axis=0).astype(np.int16) - grey.min(axis=0).astype(np.int16)
        lit = (grey > _DARK).sum(axis=0, dtype=np.int32) >= need
        return torch.from_numpy((spread > _MOTION_RANGE) & lit)
    grey = torch.maximum(torch.maximum(frames[..., 0], frames[..., 1]), frames[..., 2])
    low, high = torch.aminmax(grey, dim=0)
    lit = (grey > _DARK).sum(dim=0, dtype=torch.int32) >= need
    return ((high.to(torch.int16) - low.to(torch.int16)) > _MOTION_RANGE) & lit


def _block_grid(live: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Pool live pixels into square blocks; (grid of 0/1 float on the CPU, block side in pixels)."""
    block = max(1, min(live.shape) // _GRID)
    frac = F.avg_pool2d(live.float()[None, None], block, ceil_mode=True)
    return (frac[0, 0] >= _BLOCK_LIVE).float().cpu(), block


def _open3(grid: torch.Tensor) -> torch.Tensor:
    """Morphological opening with a 3×3 square (erode, then dilate)."""
    x = grid[None, None]
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return F.max_pool2d(eroded, 3, stride=1, padding=1)[0, 0]


def largest_component(grid: torch.Tensor) -> torch.Tensor:
    """The largest 8-connected group of non-zero cells of a 2-D grid (bool tensor).

    Two-pass labelling over row runs with union-find: each row's runs of set cells are joined
    to the runs of the row above that touch them (diagonals included). Ties keep the group met
    first in raster order.
    """
    on = (grid > 0).numpy()
    runs: list[tuple[int, int, int]] = []  # (row, start, end) with end exclusive
    parent: list[int] = []

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    above: list[int] = []
    for y, row in enumerate(on):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        current = []
        for start, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
            index = len(runs)
            runs.append((y, start, end))
            parent.append(index)
            for j in above:
                if runs[j][1] <= end and start <= runs[j][2]:  # overlapping or diagonal neighbours
                    a, b = root(index), root(j)
                    parent[max(a, b)] = min(a, b)
            current.append(index)
        above = current
    keep = np.zeros_like(on)
    if not runs:
        return torch.from_numpy(keep)
    sizes: dict[int, int] = {}
    for i, (_, start, end) in enumerate(runs):
        r = root(i)
        sizes[r] = sizes.get(r, 0) + end - start
    best = max(sizes, key=lambda r: (sizes[r], -r))
    for i, (y, start, end) in enumerate(runs):
        if root(i) == best:
            keep[y, start:end] = True
    return torch.from_numpy(keep)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points (N, 2) as a counter-clockwise polygon (monotone chain)."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) <= 2:
        return np.asarray(pts, dtype=np.int64)

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    upper: list[tuple] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.int64)


def _hull_of_cells(cells: torch.Tensor, block: int, height: int, width: int) -> np.ndarray:
    """Hull polygon (pixel corners) around the first and last cell of each grid row: the outer
    corners of those cells (the inner ones lie on the row's span, inside the hull anyway)."""
    on = cells.numpy().astype(bool)
    rows = np.flatnonzero(on.any(axis=1))
    first = on[rows].argmax(axis=1)
    last = on.shape[1] - 1 - on[rows, ::-1].argmax(axis=1)
    xs = np.concatenate([first, first, last + 1, last + 1])
    ys = np.concatenate([rows, rows + 1, rows, rows + 1])
    pts = np.stack([xs, ys], axis=1).astype(np.int64) * block
    pts[:, 0] = pts[:, 0].clip(0, width)
    pts[:, 1] = pts[:, 1].clip(0, height)
    return convex_hull(pts)


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside (or on) a convex polygon of pixel corners."""
    from PIL import Image, ImageDraw

    # Pixel (x, y) covers the square [x, x+1) × [y, y+1); Pillow fills pixels by their integer
    # coordinates, so a corner polygon drawn as-is covers every pixel touching its inside.
    image = Image.new("1", (width, height), 0)
    coords = [(float(x), float(y)) for x, y in polygon]
    if len(coords) >= 3:
        ImageDraw.Draw(image).polygon(coords, fill=1, outline=1)
    return np.asarray(image, dtype=bool)


def motion_mask(frames: np.ndarray | torch.Tensor) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Find the moving scan sector in (T, H, W, 3) uint8 frames (an array, or a tensor on any device).

    Returns (mask, info): ``mask`` is (H, W) bool (True = keep) or ``None`` when masking is
    skipped — a single frame (no motion to see), a frame too small, or no moving region large
    enough to be a scan sector; ``info`` says which, and holds the hull polygon when one is found.
    """
    frames = _as_frames(frames)
    t, h, w = frames.shape[:3]
    if t < 2:
        return None, {"applied": False, "reason": "single frame: no motion to find the scan sector"}
    if min(h, w) < _MIN_MASK_SIDE:
        return None, {"applied": False, "reason": f"frame too small to mask ({w}×{h})"}
    grid, block = _block_grid(_live_pixels(frames))
    cells = largest_component(_open3(grid))
    if cells.float().mean() < _MIN_MASK_FRACTION:
        return None, {"applied": False, "reason": "no moving region large enough for a scan sector"}
    polygon = _hull_of_cells(cells, block, h, w)
    mask = polygon_mask(polygon, h, w)
    return mask, {"applied": True, "kept_fraction": round(float(mask.mean()), 4), "polygon": polygon.tolist()}


# --------------------------------------------------------------------------- pipeline


def _as_frames(frames_rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 as a tensor (a view when possible; tensors stay on their device)."""
    frames = frames_rgb if isinstance(frames_rgb, torch.Tensor) else torch.from_numpy(np.asarray(frames_rgb))
    if frames.ndim == 3 and frames.shape[-1] == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8 or 0 in frames.shape:
        got = str(frames.dtype).replace("torch.", "")
        raise UsageError(f"expected (T, H, W, 3) uint8 RGB frames, got {got} {tuple(frames.shape)}")
    return frames


def _find_mask(frames: torch.Tensor, mask: str | np.ndarray | None) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(keep, info) for ``mask`` = "auto"/"sector" (motion mask), "none", or an (H, W) bool array."""
    if mask is None or (isinstance(mask, str) and mask == "none"):
        return None, {"mode": "none", "applied": False}
    if isinstance(mask, str):
        if mask not in ("auto", "sector"):
            raise UsageError(f"mask must be 'auto', 'sector', 'none' or an array, not {mask!r}")
        keep, info = motion_mask(frames)
        return keep, {"mode": mask, **info}
    keep = np.asarray(mask, dtype=bool)
    if keep.shape != tuple(frames.shape[1:3]):
        raise UsageError(f"mask shape {keep.shape} differs from the frame size {tuple(frames.shape[1:3])}")
    return keep, {"mode": "given", "applied": True, "kept_fraction": round(float(keep.mean()), 4)}


def prepare_frames(
    frames_rgb: np.ndarray | torch.Tensor,
    cfg: PreprocessConfig,
    *,
    region: Sequence[int] | None = None,
    mask: str | np.ndarray | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Region crop, mask, square crop + zoom and resize (T, H, W, 3) uint8 RGB frames.

    ``frames_rgb`` is an array or a tensor on any device (a channels-first tensor's
    ``permute(0, 2, 3, 1)`` view will do); the work happens where the frames are and the result
    stays there. ``region`` is a box ``[x0, y0, x1, y1)`` (e.g. the DICOM ultrasound region);
    ``mask`` is ``"auto"``, ``"none"``, an (H, W) bool array over the region, or ``None`` for
    ``cfg.mask``. Returns the uint8 (T, 3, S, S) RGB frames and the geometry metadata recorded
    in outputs.
    """
    frames = _as_frames(frames_rgb)
    height, width = frames.shape[1:3]
    box, region_note = clip_region(region, height, width)
    rx, ry = (box[0], box[1]) if box else (0, 0)
    if box:
        frames = frames[:, box[1] : box[3], box[0] : box[2]]
    keep, mask_info = _find_mask(frames, cfg.mask if mask is None else mask)
    x0, y0, x1, y1 = square_zoom_box(frames.shape[1], frames.shape[2], cfg.zoom)
    crop = frames[:, y0:y1, x0:x1].permute(0, 3, 1, 2).contiguous()  # one copy, of the kept pixels
    if keep is not None:  # masking the crop equals cropping the masked frame
        crop.mul_(torch.from_numpy(np.ascontiguousarray(keep[y0:y1, x0:x1])).to(crop.device))
    out = resize_bicubic(crop, cfg.image_size)
    geometry = {
        "original_size": [int(height), int(width)],
        "region": list(box) if box else None,
        "region_note": region_note,
        "crop_box": [x0 + rx, y0 + ry, x1 + rx, y1 + ry],
        "mask": _offset_polygon(mask_info, rx, ry),
    }
    return out.contiguous(), geometry


def _offset_polygon(info: dict[str, Any], dx: int, dy: int) -> dict[str, Any]:
    """Move a mask polygon from region coordinates to frame coordinates."""
    if "polygon" in info:
        info = {**info, "polygon": [[x + dx, y + dy] for x, y in info["polygon"]]}
    return info


def to_model_input(
    frames: torch.Tensor, cfg: PreprocessConfig, device: torch.device | str | None = None
) -> torch.Tensor:
    """Stored uint8 RGB frames (T, 3, S, S) → the normalised float32 tensor the model takes.

    The uint8 frames move to ``device`` first (4× less to copy) and are converted there:
    ``x / 255``, channels reversed when ``cfg.channel_order == "BGR"``, then
    ``(x - mean) / std`` with mean/std applied to the channels in the order fed (module doc).
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise UsageError(f"expected (T, 3, S, S) uint8 frames, got {frames.dtype} {tuple(frames.shape)}")
    x = frames.to(device, non_blocking=True) if device is not None else frames
    x = x.float().div_(255.0)
    if cfg.channel_order == "BGR":
        x = x.flip(1)
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
