"""Geometry and normalisation: resize parity with OpenCV, crop boxes, mask, model input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoclip_cli.errors import UsageError
from echoclip_cli.preprocess import (
    clip_region,
    convex_hull,
    host_syncs,
    largest_component,
    largest_components,
    motion_mask,
    polygon_mask,
    prepare_frame_group,
    prepare_frames,
    resize_bicubic,
    square_zoom_box,
    to_model_input,
)
from echoclip_cli.preprocess_config import PreprocessConfig
from tests.media_factory import echo_frames, overlay_pixels, sector_mask

cv2 = pytest.importorskip("cv2", reason="OpenCV (test-only dependency) checks our resize")

# (height, width) of source frames, with edge cases: 1×1, single rows/columns, odd sizes, the
# 224×225 frame the released code crashed on, and the usual echo sizes.
SOURCE_SIZES = [(1, 1), (1, 7), (9, 1), (2, 3), (5, 5), (17, 31), (224, 225), (225, 224), (180, 180),
                (224, 224), (97, 301), (480, 640), (600, 800)]
TARGET_SIZES = [(224, 224), (1, 1), (7, 5), (112, 112), (301, 97)]


def _cv2_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    return out if out.ndim == 3 else out[..., None]


@pytest.mark.parametrize("src", SOURCE_SIZES)
def test_resize_matches_opencv_inter_cubic(src):
    rng = np.random.default_rng(sum(src))
    image = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    for height, width in TARGET_SIZES:
        expected = _cv2_resize(image, height, width).astype(np.int16)
        ours = resize_bicubic(torch.from_numpy(image).permute(2, 0, 1), (height, width)).permute(1, 2, 0)
        assert ours.dtype == torch.uint8 and ours.shape == (height, width, 3)
        diff = np.abs(ours.numpy().astype(np.int16) - expected)
        assert diff.mean() <= 1.0 and diff.max() <= 1, (src, height, width)
        # OpenCV itself uses 11-bit fixed point (not float) when a source side is under 4 pixels.
        exact = 0.99 if min(src) >= 4 else 0.9
        assert (diff == 0).mean() >= exact, (src, height, width)


def test_resize_float_input_matches_opencv():
    rng = np.random.default_rng(0)
    image = rng.random((45, 61)).astype(np.float32)
    ours = resize_bicubic(image, (224, 224)).numpy()
    assert np.abs(ours - cv2.resize(image, (224, 224), interpolation=cv2.INTER_CUBIC)).max() < 1e-4


def test_resize_keeps_leading_dims_and_rejects_empty_targets():
    frames = torch.zeros((2, 3, 10, 12), dtype=torch.uint8)
    assert resize_bicubic(frames, 8).shape == (2, 3, 8, 8)
    with pytest.raises(UsageError):
        resize_bicubic(frames, 0)


@pytest.mark.parametrize(
    ("height", "width", "box"),
    [
        (224, 224, (22, 22, 202, 202)),  # released example: 10 % of 224 is 22.4 → 22 per side
        (224, 225, (22, 22, 202, 202)),  # the odd column stays on the right; never empty
        (480, 640, (128, 48, 512, 432)),  # floor(480 × 0.1) = 48
        (384, 512, (102, 38, 410, 346)),
        (1, 1, (0, 0, 1, 1)),
        (3, 1000, (498, 0, 501, 3)),
    ],
)
def test_square_zoom_box_rounding(height, width, box):
    assert square_zoom_box(height, width, 0.1) == box
    x0, y0, x1, y1 = box
    assert x1 - x0 == y1 - y0 >= 1


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (224, 225), (225, 224), (5, 800), (31, 17)])
def test_prepare_frames_works_for_every_frame_size(size):
    frames = np.random.default_rng(1).integers(0, 256, (3, *size, 3), dtype=np.uint8)
    out, geometry = prepare_frames(frames, PreprocessConfig(image_size=32))
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.uint8
    x0, y0, x1, y1 = geometry["crop_box"]
    assert x1 - x0 == y1 - y0 >= 1 and x1 <= size[1] and y1 <= size[0]
    assert geometry["original_size"] == list(size)


def test_prepare_frames_matches_crop_then_opencv():
    frames = echo_frames(4, 60, 90, seed=2)
    out, geometry = prepare_frames(frames, PreprocessConfig(mask="none", image_size=40))
    x0, y0, x1, y1 = geometry["crop_box"]
    expected = np.stack([_cv2_resize(f[y0:y1, x0:x1], 40, 40) for f in frames])
    diff = np.abs(out.permute(0, 2, 3, 1).numpy().astype(int) - expected)
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_prepare_frames_uses_region_and_reports_boxes_in_frame_pixels():
    frames = np.zeros((2, 100, 200, 3), np.uint8)
    frames[:, 20:80, 50:170] = 200
    out, geometry = prepare_frames(frames, PreprocessConfig(mask="none", image_size=16), region=[50, 20, 170, 80])
    assert geometry["region"] == [50, 20, 170, 80]
    assert geometry["crop_box"] == [86, 26, 134, 74]  # square 60 at x 80..140, minus 6 per side
    assert int(out.min()) == 200  # nothing from outside the region
    _, outside = prepare_frames(frames, PreprocessConfig(mask="none"), region=[50, 20, 400, 80])
    assert outside["region"] is None and "outside" in outside["region_note"]


def test_clip_region_clips_one_pixel_overshoot():
    assert clip_region([0, 0, 201, 101], 100, 200) == ((0, 0, 200, 100), None)
    box, note = clip_region([0, 0, 300, 100], 100, 200)
    assert box is None and "outside" in note
    assert clip_region(None, 10, 10) == (None, None)


def test_motion_mask_keeps_sector_and_drops_overlays():
    frames = echo_frames(10, seed=4, text=True, ecg=True, bar=True)
    mask, info = motion_mask(frames)
    assert info["applied"] and mask is not None
    sector = sector_mask()
    assert mask[sector].mean() > 0.97  # the scan sector is kept (its hull, so dark pools too)
    overlays = overlay_pixels()
    assert not mask[overlays].any()  # text and ECG trace are masked
    assert not mask[20:-20, -3:].any()  # the static grey bar is masked


def test_mask_auto_on_masked_video_is_nearly_identity():
    frames = echo_frames(10, seed=5)  # black outside the sector already
    auto, _ = prepare_frames(frames, PreprocessConfig(mask="auto", image_size=64))
    none, _ = prepare_frames(frames, PreprocessConfig(mask="none", image_size=64))
    assert (auto.int() - none.int()).abs().float().mean() < 0.5


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (np.full((1, 64, 64, 3), 100, np.uint8), "single frame"),
        (np.full((5, 64, 64, 3), 100, np.uint8), "no moving region"),
        (np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), "too small"),
    ],
)
def test_motion_mask_skips_when_it_cannot_see_motion(frames, reason):
    mask, info = motion_mask(frames)
    assert mask is None and not info["applied"] and reason in info["reason"]
    out, geometry = prepare_frames(frames, PreprocessConfig(image_size=8))
    assert reason in geometry["mask"]["reason"] and out.shape[0] == frames.shape[0]


def test_given_mask_array_is_applied():
    frames = np.full((2, 20, 20, 3), 200, np.uint8)
    keep = np.zeros((20, 20), bool)
    keep[:, :10] = True
    out, geometry = prepare_frames(frames, PreprocessConfig(zoom=0.0, image_size=20), mask=keep)
    assert geometry["mask"]["mode"] == "given"
    assert int(out[..., :10].min()) == 200 and int(out[..., 10:].max()) == 0


def test_largest_component_and_hull_helpers():
    grid = torch.zeros(10, 10)
    grid[1:4, 1:4] = 1  # 9 cells
    grid[6:9, 5:10] = 1  # 15 cells
    assert int(largest_component(grid).sum()) == 15
    assert not largest_component(torch.zeros(3, 3)).any()
    hull = convex_hull(np.array([[0, 0], [4, 0], [4, 4], [0, 4], [2, 2], [1, 3]]))
    assert sorted(map(tuple, hull.tolist())) == [(0, 0), (0, 4), (4, 0), (4, 4)]
    filled = polygon_mask(hull, 6, 6)
    assert filled[:4, :4].all() and not filled[5, 5]


def _flood_largest(grid: np.ndarray) -> np.ndarray:
    """Reference: the largest 8-connected group by breadth-first flood fill, the first met in
    raster order on a tie."""
    seen = np.zeros_like(grid, dtype=bool)
    best: list[tuple[int, int]] = []
    for start in zip(*np.nonzero(grid)):
        if seen[start]:
            continue
        seen[start] = True
        group, todo = [], [start]
        while todo:
            y, x = todo.pop()
            group.append((y, x))
            for ny in range(max(0, y - 1), min(grid.shape[0], y + 2)):
                for nx in range(max(0, x - 1), min(grid.shape[1], x + 2)):
                    if grid[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        todo.append((ny, nx))
        if len(group) > len(best):
            best = group
    keep = np.zeros_like(grid, dtype=bool)
    for cell in best:
        keep[cell] = True
    return keep


def test_largest_components_match_a_flood_fill_and_batch_independently():
    rng = np.random.default_rng(3)
    grids = [rng.random((int(h), int(w))) < p for h, w, p in zip(rng.integers(1, 30, 60), rng.integers(1, 30, 60),
                                                                 rng.random(60), strict=True)]
    for grid in grids:
        np.testing.assert_array_equal(largest_components(grid[None])[0], _flood_largest(grid))
    same = np.stack([rng.random((17, 23)) < p for p in np.linspace(0.1, 0.9, 9)])
    together = largest_components(same)
    for grid, kept in zip(same, together, strict=True):
        np.testing.assert_array_equal(kept, _flood_largest(grid))  # no group spills into the next grid


def test_a_group_of_clips_prepares_as_each_clip_alone():
    clips = np.stack([echo_frames(8, 96, 128, seed=s) for s in range(4)])
    clips[2] = np.repeat(clips[2][:1], 8, axis=0)  # a still clip: no sector found, not masked
    cfg = PreprocessConfig()
    for region in (None, [6, 4, 120, 90]):
        out, geometries = prepare_frame_group(torch.from_numpy(clips), cfg, region=region)
        assert out.shape == (4, 8, 3, cfg.image_size, cfg.image_size)
        for clip, frames, geometry in zip(clips, out, geometries, strict=True):
            alone, alone_geometry = prepare_frames(clip, cfg, region=region)
            assert torch.equal(frames, alone) and geometry == alone_geometry
        assert [g["mask"]["applied"] for g in geometries] == [True, True, False, True]


def test_a_group_copies_to_the_host_a_fixed_number_of_times():
    cfg = PreprocessConfig()
    counts = []
    for n in (1, 3, 6):
        clips = torch.from_numpy(np.stack([echo_frames(6, 64, 80, seed=s) for s in range(n)]))
        before = host_syncs()
        prepare_frame_group(clips, cfg)
        counts.append(host_syncs() - before)
    assert counts == [1, 1, 1]  # the block grids of every clip, in one copy


def test_prepare_frames_rejects_wrong_input():
    with pytest.raises(UsageError):
        prepare_frames(np.zeros((2, 10, 10), np.uint8), PreprocessConfig())
    with pytest.raises(UsageError):
        prepare_frames(np.zeros((2, 10, 10, 3), np.float32), PreprocessConfig())


# --------------------------------------------------------------------------- model input


def _manual(frames: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    x = frames.double() / 255
    if cfg.channel_order == "BGR":
        x = x[:, [2, 1, 0]]
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    return ((x - mean) / std).float()


@pytest.mark.parametrize("order", ["BGR", "RGB"])
def test_to_model_input_channel_order_and_normalisation(order):
    cfg = PreprocessConfig(channel_order=order)
    frames = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    frames[:, 0], frames[:, 2] = 255, 0  # pure red in RGB
    x = to_model_input(frames, cfg)
    assert x.dtype == torch.float32 and x.shape == frames.shape
    torch.testing.assert_close(x, _manual(frames, cfg), atol=1e-5, rtol=0)
    red_first = order == "RGB"
    assert (x[:, 0] > x[:, 2]).all() == red_first  # BGR feeds blue first, as the released model saw


def test_to_model_input_rejects_float_frames():
    with pytest.raises(UsageError):
        to_model_input(torch.zeros(1, 3, 4, 4), PreprocessConfig())


@pytest.mark.gpu
def test_to_model_input_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = PreprocessConfig()
    frames = torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8)
    x = to_model_input(frames, cfg, device="cuda")
    assert x.is_cuda and x.dtype == torch.float32
    torch.testing.assert_close(x.cpu(), to_model_input(frames, cfg), atol=1e-5, rtol=0)
    resized = resize_bicubic(frames.cuda(), 112)
    diff = (resized.cpu().int() - resize_bicubic(frames, 112).int()).abs()
    assert resized.is_cuda and int(diff.max()) <= 1
