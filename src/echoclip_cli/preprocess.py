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
from functools import lru_cache
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


@lru_cache(maxsize=64)  # a run meets a handful of frame sizes; 64 pairs of operators are a few MB
def _resize_operator(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, list | None]:
    """The resize matrix of :func:`cubic_resize_matrix` on ``device`` and, on the CPU, its bands:
    built once per size and device, not per clip (shared: never written to)."""
    matrix = cubic_resize_matrix(in_size, out_size, device)
    if device.type == "cuda":  # the copy may still be in flight; another stream may use it next
        torch.cuda.current_stream(device).synchronize()
    return matrix, _bands(matrix, _BAND) if device.type == "cpu" else None


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
    rows, row_bands = _resize_operator(in_h, out_h, src.device)  # (out_h, in_h)
    cols, col_bands = _resize_operator(in_w, out_w, src.device)  # (out_w, in_w)
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

_host_syncs = 0


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` copied to the host. Frame preparation leaves the device only through here (or
    :func:`count_host_sync`): on a GPU each copy makes the host wait for the device, so each is
    counted, on every device alike, for benchmarks and tests to read (:func:`host_syncs`)."""
    count_host_sync()
    return tensor.cpu()


def count_host_sync() -> None:
    """Count one host synchronisation made while preparing frames."""
    global _host_syncs
    _host_syncs += 1


def host_syncs() -> int:
    """Host synchronisations made while preparing frames so far, in this process."""
    return _host_syncs


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
    """(..., H, W) bool, on the frames' device: pixels that change across (..., T, H, W, 3) frames
    and are not dark in most of them. (Integer arithmetic: numpy on the CPU, several times faster
    there than torch's uint8 reductions; torch elsewhere; the same result either way.)"""
    need = math.ceil(_LIT_FRACTION * frames.shape[-4])
    if frames.device.type == "cpu":
        array = frames.numpy()
        grey = np.maximum(np.maximum(array[..., 0], array[..., 1]), array[..., 2])  # (..., T, H, W)
        spread = grey.max(axis=-3).astype(np.int16) - grey.min(axis=-3).astype(np.int16)
        lit = (grey > _DARK).sum(axis=-3, dtype=np.int32) >= need
        return torch.from_numpy((spread > _MOTION_RANGE) & lit)
    grey = torch.maximum(torch.maximum(frames[..., 0], frames[..., 1]), frames[..., 2])
    low, high = torch.aminmax(grey, dim=-3)
    lit = (grey > _DARK).sum(dim=-3, dtype=torch.int32) >= need
    return ((high.to(torch.int16) - low.to(torch.int16)) > _MOTION_RANGE) & lit


def _block_grid(live: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Pool live pixels (..., H, W) into square blocks and open them (:func:`_open3`): ((N, h, w)
    bool grids on the pixels' device, block side in pixels)."""
    height, width = live.shape[-2:]
    block = max(1, min(height, width) // _GRID)
    frac = F.avg_pool2d(live.reshape(-1, 1, height, width).float(), block, ceil_mode=True)
    return _open3(frac[:, 0] >= _BLOCK_LIVE), block


def _open3(grids: torch.Tensor) -> torch.Tensor:
    """Morphological opening of (N, h, w) bool grids with a 3×3 square (erode, then dilate), on
    their device (exact: max-pooling of 0/1 values)."""
    x = grids.float()[:, None]
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return F.max_pool2d(eroded, 3, stride=1, padding=1)[:, 0] > 0


def largest_component(grid: torch.Tensor) -> torch.Tensor:
    """The largest 8-connected group of non-zero cells of a 2-D grid (bool tensor); ties keep
    the group met first in raster order (:func:`largest_components`)."""
    return torch.from_numpy(largest_components((grid > 0).numpy()[None])[0])


def largest_components(grids: np.ndarray) -> np.ndarray:
    """The largest 8-connected group of set cells of each (N, H, W) bool grid, with no Python
    loop over cells or runs.

    The cells of each row form runs; a run is linked to the runs of the row above that touch it
    (diagonals included), never across grids; linked runs are grouped by label propagation
    (:func:`_components`), each group named by its first run in raster order, which also
    decides ties.
    """
    n, height, width = grids.shape
    rows, starts, ends = _row_runs(grids.reshape(n * height, width))
    keep = np.zeros((n * height, width + 1), dtype=np.int32)
    if rows.size == 0:
        return keep[:, :width].astype(bool).reshape(grids.shape)
    label = _components(rows.size, *_run_links(rows, starts, ends, width, height))
    size = np.bincount(label, weights=ends - starts, minlength=rows.size)
    roots = np.flatnonzero(label == np.arange(rows.size))
    grid_of = rows[roots] // height
    order = np.lexsort((roots, -size[roots], grid_of))  # by grid, then largest, then first met
    firsts = order[np.r_[True, grid_of[order][1:] != grid_of[order][:-1]]]
    chosen = np.zeros(rows.size, dtype=bool)
    chosen[roots[firsts]] = True
    take = chosen[label]
    np.add.at(keep, (rows[take], starts[take]), 1)  # paint the kept runs: +1 at a start, -1 past the end
    np.add.at(keep, (rows[take], ends[take]), -1)
    return (np.cumsum(keep, axis=1)[:, :width] > 0).reshape(grids.shape)


def _row_runs(on: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of set cells of each row of a 2-D bool array, in raster order: (row, start, end), end exclusive."""
    padded = np.zeros((on.shape[0], on.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = on
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows, starts, ends


def _run_links(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int,
               height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (run, run of the row above) that touch, diagonals included; rows of different grids
    (every ``height`` rows) are not linked. Found by binary search in raster order."""
    stride = width + 2  # key = row * stride + column orders runs as raster order does
    up = (rows - 1) * stride
    first = np.searchsorted(rows * stride + ends, up + starts, "left")  # above ends at or past our start
    past = np.searchsorted(rows * stride + starts, up + ends, "right")  # above starts at or before our end
    count = np.where(rows % height == 0, 0, np.maximum(past - first, 0))
    current = np.repeat(np.arange(rows.size), count)
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return current, np.repeat(first, count) + offset


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of ``n`` nodes, the smallest node linked to it through the pairs ``(a[i], b[i])``.

    Each round hooks every group's root under the smallest root it links to, then points every
    node straight at its root; a round that changes nothing ends it (a few rounds for a scan
    sector: its runs form a chain that pointer jumping shortens by halves)."""
    label = np.arange(n)
    while True:
        la, lb = label[a], label[b]
        low = np.minimum(la, lb)
        hooked = label.copy()
        np.minimum.at(hooked, la, low)
        np.minimum.at(hooked, lb, low)
        while True:
            jumped = hooked[hooked]
            if np.array_equal(jumped, hooked):
                break
            hooked = jumped
        if np.array_equal(hooked, label):
            return label
        label = hooked


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


def _hull_of_cells(cells: np.ndarray, block: int, height: int, width: int) -> np.ndarray:
    """Hull polygon (pixel corners) around the first and last cell of each grid row: the outer
    corners of those cells (the inner ones lie on the row's span, inside the hull anyway).
    :func:`convex_hull` gets only the points that may be corners of the hull
    (:func:`_hull_candidates`): the same polygon, from a few dozen points instead of hundreds."""
    return convex_hull(_hull_candidates(_cell_corners(cells, block, height, width)))


def _cell_corners(cells: np.ndarray, block: int, height: int, width: int) -> np.ndarray:
    """The (N, 2) pixel corners :func:`_hull_of_cells` takes the hull of."""
    on = cells.astype(bool)
    rows = np.flatnonzero(on.any(axis=1))
    first = on[rows].argmax(axis=1)
    last = on.shape[1] - 1 - on[rows, ::-1].argmax(axis=1)
    xs = np.concatenate([first, first, last + 1, last + 1])
    ys = np.concatenate([rows, rows + 1, rows, rows + 1])
    pts = np.stack([xs, ys], axis=1).astype(np.int64) * block
    pts[:, 0] = pts[:, 0].clip(0, width)
    pts[:, 1] = pts[:, 1].clip(0, height)
    return pts


def _hull_candidates(pts: np.ndarray) -> np.ndarray:
    """The points of ``pts`` that may be strict corners of their convex hull; the others are
    dropped, which leaves the hull, and so :func:`convex_hull`'s polygon, as it is (the monotone
    chain keeps strict corners only, in an order fixed by the corners alone).

    Per row (one y), only the leftmost and rightmost points can be corners. A leftmost point
    that lies on or to the right of the chord between its neighbours on the left side, while its
    row reaches further right, lies between two points of the hull: not a corner; likewise on
    the right side: such points are not corners whatever else is dropped, so each round drops
    all it finds, until a round finds none (exact integer arithmetic)."""
    if len(pts) <= 3:
        return pts
    order = np.lexsort((pts[:, 0], pts[:, 1]))  # by y, then x
    ys, xs = pts[order, 1], pts[order, 0]
    starts = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    ends = np.r_[starts[1:], len(ys)] - 1
    row_y, left, right = ys[starts], xs[starts], xs[ends]
    keep_left = _convex_side(row_y, left, right, sign=1)
    keep_right = _convex_side(row_y, right, left, sign=-1)
    chosen = np.concatenate([np.stack([left[keep_left], row_y[keep_left]], axis=1),
                             np.stack([right[keep_right], row_y[keep_right]], axis=1)])
    return chosen


def _convex_side(ys: np.ndarray, xs: np.ndarray, other: np.ndarray, sign: int) -> np.ndarray:
    """Which of one side's points (one per row, rows ascending) may be hull corners: a point is
    dropped when it is not strictly outside (``sign`` 1: left, -1: right) the chord between its
    kept neighbours and its row's other end lies strictly inside of it."""
    keep = np.ones(len(xs), dtype=bool)
    while True:
        index = np.flatnonzero(keep)
        if len(index) < 3:
            return keep
        a, b, c = index[:-2], index[1:-1], index[2:]
        # x of the chord a–c at b's row, compared without division: (x_b - x_chord) * (y_c - y_a)
        offset = (xs[b] - xs[a]) * (ys[c] - ys[a]) - (xs[c] - xs[a]) * (ys[b] - ys[a])
        inside = (sign * offset >= 0) & (sign * (other[b] - xs[b]) > 0)
        if not inside.any():
            return keep
        # each flagged point lies between two points of the hull (its chord's point at its row
        # and its row's other end), whatever else is dropped: all go in one round
        keep[b[inside]] = False


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
    return motion_masks(_as_frames(frames)[None])[0]


def motion_masks(frames: torch.Tensor) -> list[tuple[np.ndarray | None, dict[str, Any]]]:
    """:func:`motion_mask` of each of N clips of one size, (N, T, H, W, 3) uint8 on any device,
    found together: one pass over the frames and the opening of their block grids where the
    frames are (:func:`sector_grids`), one copy of the grids to the host, one labelling of all the
    grids; only the hull and its polygon are per clip (:func:`sectors_from_grids`)."""
    search = sector_grids(frames)
    if isinstance(search, list):
        return search
    grids, block = search
    return sectors_from_grids(to_host(grids).numpy(), block, *frames.shape[2:4])


def sector_grids(frames: torch.Tensor) -> tuple[torch.Tensor, int] | list[tuple[None, dict[str, Any]]]:
    """The device half of :func:`motion_masks`: the opened (N, h, w) bool block grids of live
    pixels on the frames' device and the block side, or, when masking is skipped for every clip
    (a single frame, frames too small), each clip's (None, info)."""
    n, t, h, w = frames.shape[:4]
    if t < 2:
        return [(None, {"applied": False, "reason": "single frame: no motion to find the scan sector"}) for _ in range(n)]
    if min(h, w) < _MIN_MASK_SIDE:
        return [(None, {"applied": False, "reason": f"frame too small to mask ({w}×{h})"}) for _ in range(n)]
    return _block_grid(_live_pixels(frames))


def sectors_from_grids(grids: np.ndarray, block: int, height: int,
                       width: int) -> list[tuple[np.ndarray | None, dict[str, Any]]]:
    """The host half of :func:`motion_masks`, from the (N, h, w) grids of :func:`sector_grids`."""
    return [_sector_of(cells, block, height, width) for cells in largest_components(grids)]


def _sector_of(cells: np.ndarray, block: int, height: int, width: int) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The mask and info of :func:`motion_mask` from a clip's largest group of live blocks."""
    if torch.from_numpy(cells).float().mean() < _MIN_MASK_FRACTION:  # float32, as it always was
        return None, {"applied": False, "reason": "no moving region large enough for a scan sector"}
    polygon = _hull_of_cells(cells, block, height, width)
    mask = polygon_mask(polygon, height, width)
    kept = np.count_nonzero(mask) / mask.size  # mask.mean()'s value (a float64 of whole counts)
    return mask, {"applied": True, "kept_fraction": round(kept, 4), "polygon": polygon.tolist()}


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


def _find_masks(frames: torch.Tensor, mask: str | np.ndarray | None) -> list[tuple[np.ndarray | None, dict[str, Any]]]:
    """(keep, info) of each (N, T, H, W, 3) clip for ``mask`` = "auto"/"sector" (motion mask),
    "none", or an (H, W) bool array."""
    n = frames.shape[0]
    if mask is None or (isinstance(mask, str) and mask == "none"):
        return [(None, {"mode": "none", "applied": False}) for _ in range(n)]
    if isinstance(mask, str):
        if mask not in ("auto", "sector"):
            raise UsageError(f"mask must be 'auto', 'sector', 'none' or an array, not {mask!r}")
        return [(keep, {"mode": mask, **info}) for keep, info in motion_masks(frames)]
    keep = np.asarray(mask, dtype=bool)
    if keep.shape != tuple(frames.shape[2:4]):
        raise UsageError(f"mask shape {keep.shape} differs from the frame size {tuple(frames.shape[2:4])}")
    return [(keep, {"mode": "given", "applied": True, "kept_fraction": round(float(keep.mean()), 4)})
            for _ in range(n)]


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
    out, geometries = prepare_frame_group(_as_frames(frames_rgb)[None], cfg, region=region, mask=mask)
    return out[0], geometries[0]


def region_view(frames: torch.Tensor, region: Sequence[int] | None) -> tuple[torch.Tensor, Box | None, str | None]:
    """(N, T, H, W, 3) clips cropped to ``region`` when it fits (:func:`clip_region`): (a view,
    the box used, why not when it does not fit)."""
    box, note = clip_region(region, *frames.shape[2:4])
    return (frames[:, :, box[1] : box[3], box[0] : box[2]] if box else frames), box, note


def prepare_frame_group(
    frames: torch.Tensor,
    cfg: PreprocessConfig,
    *,
    region: Sequence[int] | None = None,
    mask: str | np.ndarray | None = None,
    found: list[tuple[np.ndarray | None, dict[str, Any]]] | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """:func:`prepare_frames` of N clips of one size and region, (N, T, H, W, 3) uint8 on any
    device, together: one pass of mask statistics, one copy of their block grids to the host,
    one crop, mask and resize. Returns (N, T, 3, S, S) and each clip's geometry; each clip
    comes out exactly as it would alone. ``found``: each clip's (keep, info) of the mask,
    already found by the caller (from :func:`sector_grids` of the region's frames and
    :func:`sectors_from_grids`, with ``mode`` in the info), instead of finding it here."""
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8 or 0 in frames.shape:
        raise UsageError(f"expected (N, T, H, W, 3) uint8 RGB clips, got {frames.dtype} {tuple(frames.shape)}")
    height, width = frames.shape[2:4]
    frames, box, region_note = region_view(frames, region)
    rx, ry = (box[0], box[1]) if box else (0, 0)
    if found is None:
        found = _find_masks(frames, cfg.mask if mask is None else mask)
    x0, y0, x1, y1 = square_zoom_box(frames.shape[2], frames.shape[3], cfg.zoom)
    crop = frames[:, :, y0:y1, x0:x1].permute(0, 1, 4, 2, 3).contiguous()  # one copy, of the kept pixels
    if any(keep is not None for keep, _ in found):  # masking the crop equals cropping the masked frame
        keeps = np.stack([np.ones((y1 - y0, x1 - x0), bool) if keep is None else keep[y0:y1, x0:x1]
                          for keep, _ in found])
        crop.mul_(_upload(torch.from_numpy(keeps), crop.device)[:, None, None])
    out = _resize_clips(crop, cfg.image_size)
    geometries = [{
        "original_size": [int(height), int(width)],
        "region": list(box) if box else None,
        "region_note": region_note,
        "crop_box": [x0 + rx, y0 + ry, x1 + rx, y1 + ry],
        "mask": _offset_polygon(info, rx, ry),
    } for _, info in found]
    return out, geometries


def _upload(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``: on CUDA through pinned memory, without the host waiting for
    the copy (the pinned block is not reused before the copy is done)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _resize_clips(crop: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, T, 3, h, w) clips: all in one product, except on the CPU, where each clip is
    resized alone because the CPU's matrix products split their work by the number of planes
    and so may round a plane differently in a larger stack."""
    if crop.device.type != "cpu" or crop.shape[0] == 1:
        return resize_bicubic(crop, size)
    return torch.stack([resize_bicubic(clip, size) for clip in crop])


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
    mean, std = _normalisation(tuple(cfg.mean), tuple(cfg.std), x.device)
    return (x - mean) / std


@lru_cache(maxsize=16)
def _normalisation(mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as (1, 3, 1, 1) float32 tensors on ``device``, made once (on a GPU, building
    them per batch is a host-to-device copy each time); shared, never written to."""
    made = [torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1).to(device) for v in (mean, std)]
    if device.type == "cuda":  # the copies may still be in flight; another stream may use them next
        torch.cuda.current_stream(device).synchronize()
    return made[0], made[1]
