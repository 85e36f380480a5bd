"""The host's part of preparing a group, made cheaper without changing a bit: hull corners
found from a few candidate points, colour check and clip type from counts made where the frames
are, the mask's opening on the device, one copy of it all to the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoclip_cli import preprocess
from echoclip_cli.media import classify, colour
from tests.media_factory import echo_frames


def _blobs(rng, n, h, w):
    """Random grids of 1-4 filled shapes (discs, boxes, fans, lines), some clipped at the edges."""
    yy, xx = np.mgrid[0:h, 0:w]
    grids = np.zeros((n, h, w), bool)
    for grid in grids:
        for _ in range(int(rng.integers(1, 5))):
            cy, cx, r = rng.integers(-5, h + 5), rng.integers(-5, w + 5), rng.integers(1, max(2, h // 2))
            kind = rng.integers(0, 4)
            if kind == 0:
                grid |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif kind == 1:
                grid |= (abs(yy - cy) <= r) & (abs(xx - cx) <= rng.integers(0, r + 1))
            elif kind == 2:
                grid |= (yy >= cy) & (abs(xx - cx) <= (yy - cy) * rng.uniform(0.2, 2)) & ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
            else:
                grid[np.clip(cy, 0, h - 1), :] = True
    return grids


def _as_if_not_cpu(run):
    """Run ``run`` with every tensor saying it lives on another device: the torch branch of a
    function that takes numpy's on the CPU, run here."""
    import unittest.mock

    with unittest.mock.patch.object(torch.Tensor, "device", property(lambda t: torch.device("meta"))):
        return run()


def test_the_hull_from_candidates_is_the_hull_of_every_corner():
    rng = np.random.default_rng(0)
    for h, w in ((12, 17), (40, 30), (150, 200)):
        for cells in _blobs(rng, 60, h, w):
            if not cells.any():
                continue
            block = int(rng.integers(1, 6))
            height, width = h * block - int(rng.integers(0, block)), w * block - int(rng.integers(0, block))
            corners = preprocess._cell_corners(cells, block, height, width)
            expected = preprocess.convex_hull(corners)
            got = preprocess._hull_of_cells(cells, block, height, width)
            assert np.array_equal(got, expected), (h, w, block)


def test_counts_made_with_torch_give_the_numpy_verdicts():
    rng = np.random.default_rng(1)
    clips = [echo_frames(3, 40, 52, seed=s, text=s % 2 == 0, ecg=s % 3 == 0) for s in range(6)]
    coloured = echo_frames(3, 40, 52, seed=9)
    coloured[:, 10:30, 10:40, 0] = 250
    clips += [coloured, np.zeros((3, 40, 52, 3), np.uint8), np.repeat(clips[0][:1], 3, axis=0),
              rng.integers(0, 256, (3, 40, 52, 3), dtype=np.uint8)]
    clips += [c[:1] for c in clips[:2]]  # one frame: a still
    for clip in clips:
        sample = torch.from_numpy(clip)[None]
        on_cpu = colour.grey_counts(sample), classify.pixel_counts(sample)
        as_elsewhere = _as_if_not_cpu(lambda: (sample.device.type, colour.grey_counts(sample),
                                               classify.pixel_counts(sample)))
        assert as_elsewhere[0] == "meta"
        as_elsewhere = as_elsewhere[1:]
        for got, other in zip(on_cpu, as_elsewhere, strict=True):  # numpy on the CPU, torch elsewhere
            assert torch.equal(got, other)
        lit, grey = (int(v) for v in on_cpu[0][0])
        assert colour.mostly_grey_counts(lit, grey) == colour.mostly_grey(clip, sampled=True)
        counts = [int(v) for v in on_cpu[1][0]]
        assert classify.classify_counts(None, clip.shape[0], *counts) == classify.classify(None, clip)
        assert classify.from_pixel_counts(clip.shape[0], *counts) == classify.from_pixels(clip)
    header = ("2d", "the header's main ultrasound region is 2D tissue")
    assert classify.classify_counts(header, 3, 0, 0, 0, 1) == classify.classify(header, clips[0])


@pytest.mark.parametrize("size", [(48, 64), (120, 160)])
def test_the_mask_found_in_two_halves_is_the_mask_found_whole(size):
    frames = torch.stack([torch.from_numpy(echo_frames(8, *size, seed=s, text=True, ecg=True)) for s in range(3)])
    grids, block = preprocess.sector_grids(frames)
    halves = preprocess.sectors_from_grids(grids.numpy(), block, *size)
    for (keep, info), clip in zip(halves, frames, strict=True):
        alone_keep, alone_info = preprocess.motion_mask(clip)
        assert info == alone_info and (keep is None) == (alone_keep is None)
        assert keep is None or np.array_equal(keep, alone_keep)
