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


def test_released_aggregation_averages_rankings_then_takes_median_of_top_20_percent():
    frames = np.stack([frame([2, 3]), frame([4, 2])])  # ranks: [30, 40, ...] and [50, 30, ...]
    result = zeroshot.regression(frames, PROMPTS, VALUES)
    # averaged ranking starts [40, 35]; top 20 % of 10 = 2; median = 37.5
    assert result.estimate == pytest.approx(37.5)
    assert result.frame_estimates.tolist() == [35.0, 40.0]
    assert result.spread == pytest.approx(2.5)


def test_paper_aggregation_means_frame_medians_over_first_ten_frames():
    frames = np.stack([frame([2, 3])] * 10 + [frame([9, 8])] * 5)
    paper = zeroshot.regression(frames, PROMPTS, VALUES, aggregation="paper")
    released = zeroshot.regression(frames, PROMPTS, VALUES)
    assert paper.estimate == pytest.approx(35.0)  # frames 11-15 (value 95) are ignored
    # released: rank 0 mean = (10*30 + 5*100)/15, rank 1 = (10*40 + 5*90)/15
    assert released.estimate == pytest.approx(((800 / 15) + (850 / 15)) / 2)


def test_ef_sized_candidate_set_uses_40_of_202():
    values = np.array([v for _ in range(2) for v in range(101)], dtype=float)
    rng = np.random.default_rng(0)
    prompts = zeroshot.normalise(rng.standard_normal((202, 16)))
    target = prompts[55] + prompts[101 + 55]
    frames = zeroshot.normalise(np.stack([target + 0.01 * rng.standard_normal(16) for _ in range(20)]))
    result = zeroshot.regression(frames, prompts, values)
    manual = np.median(values[np.argsort(-(frames @ prompts.T), axis=1)].mean(axis=0)[:40])
    assert result.estimate == pytest.approx(manual)
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
