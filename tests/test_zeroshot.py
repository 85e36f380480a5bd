"""Zero-shot arithmetic pinned on hand-made embeddings whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from echoclip_cli import zeroshot

VALUES = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], dtype=float)
PROMPTS = np.eye(10)  # prompt k is axis k: a frame's similarity to prompt k is its k-th coordinate


def frame(preference: list[int]) -> np.ndarray:
    """A unit vector whose similarity ranks the candidates in ``preference`` order first."""
    scores = np.full(10, 0.01)
    for rank, k in enumerate(preference):
        scores[k] = 1.0 - 0.1 * rank
    return scores / np.linalg.norm(scores)


def test_released_aggregation_takes_the_lower_middle_of_an_even_count():
    frames = np.stack([frame([2, 3]), frame([4, 2])])  # ranks: [30, 40, ...] and [50, 30, ...]
    result = zeroshot.regression(frames, PROMPTS, VALUES)
    # averaged ranking starts [40, 35]; top 20 % of 10 = 2 values, sorted [35, 40]:
    # torch.median gives the lower middle, 35 (numpy's median would say 37.5)
    assert result.estimate == 35.0
    # each frame alone: lower middle of [30, 40] and of [50, 30] -> 30 and 30
    assert result.single_frame_estimates.tolist() == [30.0, 30.0]
    assert result.single_frame_sd == 0.0


def test_lower_median_is_torch_median():
    import torch

    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 40, 41):
        values = rng.integers(0, 101, size=(3, n)).astype(float)
        want = torch.median(torch.from_numpy(values), dim=1).values.numpy()
        np.testing.assert_array_equal(zeroshot.lower_median(values, axis=1), want)
    assert zeroshot.lower_median(np.array([1.0, 2.0, 3.0, 4.0])) == 2.0


def test_paper_aggregation_means_frame_medians_over_first_ten_frames():
    frames = np.stack([frame([2, 3])] * 10 + [frame([9, 8])] * 5)
    paper = zeroshot.regression(frames, PROMPTS, VALUES, aggregation="paper")
    released = zeroshot.regression(frames, PROMPTS, VALUES)
    # each of the first ten frames: lower middle of [30, 40] = 30; frames 11-15 (100, 90) are ignored
    assert paper.estimate == 30.0
    # released: rank 0 mean = (10*30 + 5*100)/15 = 53.3, rank 1 = (10*40 + 5*90)/15 = 56.7 -> lower
    assert released.estimate == pytest.approx(800 / 15)


def _released_protocol_in_torch(frames: np.ndarray, prompts: np.ndarray, values: np.ndarray) -> float:
    """The released protocol as ECHO.md states it, written with torch's own ops (not zeroshot.py's)."""
    import torch

    similarity = torch.from_numpy(frames) @ torch.from_numpy(prompts).T  # T,K
    ranked = torch.from_numpy(values)[torch.argsort(similarity, dim=-1, descending=True)]
    averaged = ranked.mean(dim=0)
    return float(averaged[: int(len(values) * 0.2)].median())


def test_ef_sized_candidate_set_matches_the_released_protocol():
    values = np.array([v for _ in range(2) for v in range(101)], dtype=float)
    rng = np.random.default_rng(0)
    prompts = zeroshot.normalise(rng.standard_normal((202, 16)))
    for seed in range(20):
        target = prompts[20 + seed] + prompts[101 + 40 + seed]
        noise = np.random.default_rng(seed).standard_normal((20, 16))
        frames = zeroshot.normalise(target + 0.3 * noise)
        result = zeroshot.regression(frames, prompts, values)
        assert result.estimate == pytest.approx(_released_protocol_in_torch(frames, prompts, values), abs=1e-9)
        assert result.n_frames == 20


def test_binary_score_is_mean_cosine_over_prompts_and_frames():
    frames = np.array([[1.0, 0.0], [0.0, 1.0]])
    prompts = np.array([[1.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5)]])
    # cosines: f1·p1=1, f1·p2=.707, f2·p1=0, f2·p2=.707 → mean (1 + 2*.7071)/4
    assert zeroshot.binary_score(frames, prompts) == pytest.approx((1 + 2 * np.sqrt(0.5)) / 4)


def test_categorical_picks_highest_mean_cosine():
    frames = np.array([[0.0, 1.0]])
    scores = zeroshot.categorical_scores(frames, {"a": np.array([[1.0, 0.0]]), "b": np.array([[0.0, 1.0]])})
    assert scores == {"a": 0.0, "b": 1.0}


def test_unknown_aggregation_and_empty_frames_are_errors():
    with pytest.raises(ValueError, match="aggregation"):
        zeroshot.regression(np.stack([frame([1])]), PROMPTS, VALUES, aggregation="mean")
    with pytest.raises(ValueError, match="at least one frame"):
        zeroshot.regression(np.zeros((0, 10)), PROMPTS, VALUES)
