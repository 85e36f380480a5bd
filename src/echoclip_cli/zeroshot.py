"""Zero-shot scoring: compare normalised frame embeddings with normalised prompt embeddings.

The protocols are the ones the released EchoCLIP example code uses (see ``docs/ZEROSHOT.md``):

- **regression** (EF, pressures): every template is expanded for each integer in the task's range
  (EF: 2 templates × 0–100 = 202 candidates). For each frame the candidates are ranked by cosine
  similarity; the candidates' *values* are averaged rank by rank across frames; the estimate is
  the median of the first 20 % of that averaged ranking (40 of 202). ``aggregation="paper"`` is the
  paper's variant: per frame the median of its top 20 %, then the mean over the first 10 frames.
  Medians of an even count are the mean of the two middle values (numpy's definition).
- **binary** (devices): score = mean over prompts and frames of cosine(frame, prompt); a call is
  made only where a threshold exists (published or calibrated by the user).
- **categorical**: each class's score is the mean cosine over its prompts and the frames; the
  highest wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

TOP_FRACTION = 0.2  # share of the ranking whose median is the estimate
PAPER_FRAMES = 10  # the paper's variant averages the first 10 frames


@dataclass(frozen=True)
class RegressionResult:
    estimate: float
    frame_estimates: np.ndarray  # (T,) each frame's own median-of-top-20 % estimate
    n_frames: int

    @property
    def spread(self) -> float:
        """Standard deviation of the frame-level estimates."""
        return float(np.std(self.frame_estimates)) if self.n_frames > 1 else 0.0


def _top_count(n_candidates: int) -> int:
    return max(1, int(n_candidates * TOP_FRACTION))


def _ranked_values(frames: np.ndarray, prompts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(T,K): for each frame, candidate values in order of decreasing similarity."""
    similarity = frames @ prompts.T  # T,K
    order = np.argsort(-similarity, axis=1, kind="stable")
    return values[order]


def regression(
    frames: np.ndarray, prompts: np.ndarray, values: Sequence[float], aggregation: str = "released"
) -> RegressionResult:
    """Estimate a value from frame embeddings (T,E) and candidate prompt embeddings (K,E), both normalised."""
    values = np.asarray(values, dtype=np.float64)
    if frames.ndim != 2 or not len(frames):
        raise ValueError("regression needs at least one frame embedding")
    ranked = _ranked_values(frames.astype(np.float64), prompts.astype(np.float64), values)  # T,K
    top = _top_count(ranked.shape[1])
    frame_estimates = np.median(ranked[:, :top], axis=1)  # T
    if aggregation == "released":
        estimate = float(np.median(ranked.mean(axis=0)[:top]))
    elif aggregation == "paper":
        estimate = float(frame_estimates[:PAPER_FRAMES].mean())
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}: use released or paper")
    return RegressionResult(estimate=estimate, frame_estimates=frame_estimates, n_frames=len(frames))


def binary_score(frames: np.ndarray, prompts: np.ndarray) -> float:
    """Mean cosine over prompts and frames (inputs normalised)."""
    return float((frames.astype(np.float64) @ prompts.astype(np.float64).T).mean())


def categorical_scores(frames: np.ndarray, class_prompts: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean cosine per class over its prompts and the frames."""
    return {label: binary_score(frames, prompts) for label, prompts in class_prompts.items()}


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
