"""Zero-shot scoring: compare normalised frame embeddings with normalised prompt embeddings.

The protocols are the ones the released EchoCLIP example code uses (``../shared/docs/ECHO.md``,
"Zero-shot protocols"):

- **regression** (EF, pressures): every template is expanded for each integer in the task's range
  (EF: 2 templates × 0–100 = 202 candidates). For each frame the candidates are ranked by cosine
  similarity; the candidates' *values* are averaged rank by rank across frames; the estimate is
  the median of the first 20 % of that averaged ranking (40 of 202). ``aggregation="paper"`` is the
  paper's variant: per frame the median of its top 20 %, then the mean over the first 10 frames.
- **binary** (devices): score = mean over prompts and frames of cosine(frame, prompt); a call is
  made only where a threshold exists (published or calibrated by the user).
- **categorical**: each class's score is the mean cosine over its prompts and the frames; the
  highest wins.

**Median.** Every median here is ``torch.median``'s, as the released code takes it: for an even
count, the *lower* of the two middle values (not their mean, numpy's definition). The released
estimate is a median of 40 values, so this matters: on the full-size parity checkpoint the two
definitions differ by 1.2 EF points. The paper variant and the per-frame estimates use the same
lower median, so every number in a record follows one definition.

**Ties.** Candidates with exactly equal similarity are ordered by a stable sort (template order,
then value order). The released code calls ``torch.argsort(descending=True)``, which promises no
order among equal keys (on the CPU it does not keep input order for 202 candidates), so its order
on exact ties is not determinable; exact ties between distinct prompts' float embeddings do not
occur with real weights. Similarities are computed in float64, the released code's in float32:
candidates whose similarities differ by less than float32's resolution may rank differently.
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
    # (T,) what each frame alone would give: the (lower) median of its own top 20 %. A video's
    # estimate averages rankings before taking the median, so it need not lie between these.
    single_frame_estimates: np.ndarray
    n_frames: int

    @property
    def single_frame_sd(self) -> float:
        """Standard deviation of the single-frame estimates (how much the frames disagree)."""
        return float(np.std(self.single_frame_estimates)) if self.n_frames > 1 else 0.0


def lower_median(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """``torch.median``'s median along ``axis``: the lower middle value when the count is even."""
    values = np.sort(values, axis=axis)
    middle = (values.shape[axis] - 1) // 2
    return np.take(values, middle, axis=axis)


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
    single_frame = lower_median(ranked[:, :top], axis=1)  # T
    if aggregation == "released":
        estimate = float(lower_median(ranked.mean(axis=0)[:top]))
    elif aggregation == "paper":
        estimate = float(single_frame[:PAPER_FRAMES].mean())
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}: use released or paper")
    return RegressionResult(estimate=estimate, single_frame_estimates=single_frame, n_frames=len(frames))


def binary_score(frames: np.ndarray, prompts: np.ndarray) -> float:
    """Mean cosine over prompts and frames (inputs normalised)."""
    return float((frames.astype(np.float64) @ prompts.astype(np.float64).T).mean())


def categorical_scores(frames: np.ndarray, class_prompts: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean cosine per class over its prompts and the frames."""
    return {label: binary_score(frames, prompts) for label, prompts in class_prompts.items()}


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
