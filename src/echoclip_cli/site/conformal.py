"""Split-conformal intervals and prediction sets, and the distance that decides abstention.

**Intervals (regression).** On the calibration rows (labelled studies the head never trained on),
the scores are the absolute residuals |y − ŷ|; the half-width is their
⌈(n + 1)·coverage⌉-th smallest value (infinite when that exceeds n). For exchangeable new inputs
the interval ŷ ± half-width covers the truth with probability at least ``coverage`` (and, with
distinct scores, less than coverage + 1/(n + 1)). The coverage is marginal: over inputs, not for
each one.

**Sets (binary).** The scores are 1 − p̂(true class); a class belongs to an input's set when
1 − p̂(class) is at most the same quantile. ``{yes}`` or ``{no}`` is a call at that coverage;
``{no, yes}`` says the head cannot tell; an empty set says the input is unlike the calibration data.

**Distance (abstention).** The training embeddings' mean μ, their top ``components`` principal
axes (variances λⱼ), and the mean squared residual ρ off those axes. An input x has
d(x)² = Σⱼ ((x − μ)·vⱼ)² / λⱼ / m + ‖residual‖² / ρ (each part about 1 for a training input:
a Mahalanobis distance in the principal subspace plus the distance from it). The threshold is the
``abstain_quantile`` quantile of the calibration rows' distances (the ⌈(n + 1)·q⌉-th smallest,
at most the largest); an input beyond it abstains. Calibration rows are new to the distance
model, as inputs are, so about 1 − q of in-distribution inputs abstain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .linear import BLOCK, Moments, eigh


def conformal_rank(n: int, level: float) -> int:
    """⌈(n + 1)·level⌉: the rank (1-based) of the conformal quantile among n scores."""
    return int(math.ceil((n + 1) * level - 1e-12))


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The split-conformal quantile of ``scores`` (inf when too few scores for ``coverage``)."""
    k = conformal_rank(scores.size, coverage)
    return float(np.sort(scores)[k - 1]) if k <= scores.size else math.inf


def capped_quantile(scores: np.ndarray, level: float) -> float:
    """The ⌈(n + 1)·level⌉-th smallest score, at most the largest (a threshold that always exists)."""
    k = min(conformal_rank(scores.size, level), scores.size)
    return float(np.sort(scores)[k - 1])


@dataclass(frozen=True)
class Distance:
    """How far an embedding lies from the training embeddings (see the module docstring)."""

    mean: np.ndarray  # (E,)
    axes: np.ndarray  # (m, E)
    variances: np.ndarray  # (m,)
    residual: float  # mean squared residual off the axes, over the training rows

    def of(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(X.shape[0])
        for start in range(0, X.shape[0], BLOCK):
            Z = np.asarray(X[start:start + BLOCK], dtype=np.float64) - self.mean
            P = Z @ self.axes.T
            rest = np.maximum((Z * Z).sum(axis=1) - (P * P).sum(axis=1), 0.0)
            out[start:start + BLOCK] = np.sqrt((P * P / self.variances).sum(axis=1) / self.axes.shape[0]
                                               + rest / self.residual)
        return out


def fit_distance(X: np.ndarray, components: int, moments: Moments | None = None) -> Distance:
    """The distance model of the training embeddings ``X`` (``moments``: their sums, if known)."""
    n, E = X.shape
    m = max(1, min(components, n - 1, E))
    if n > E:
        sums = moments if moments is not None else Moments.of(X, np.zeros(n))
        mean = sums.mean
        values, vectors = eigh(sums.covariance() / n)
        order = np.argsort(values)[::-1]
        values, axes = values[order], vectors[:, order].T
        total = float(np.trace(sums.covariance()) / n)
    else:
        Z = np.asarray(X, dtype=np.float64)
        mean = Z.mean(axis=0)
        Z = Z - mean
        gram_values, U = eigh(Z @ Z.T)  # n×n: cheaper than the SVD of Z
        order = np.argsort(gram_values)[::-1]
        gram_values, U = np.maximum(gram_values[order], 0.0), U[:, order]
        axes = (U.T @ Z) / np.sqrt(np.maximum(gram_values, 1e-300))[:, None]
        values = gram_values / n
        total = float(values.sum())
    kept = np.maximum(values[:m], max(float(values[0]), 1e-12) * 1e-6)
    residual = max(total - float(values[:m].sum()), total * 1e-6, 1e-12)
    return Distance(mean=mean, axes=np.ascontiguousarray(axes[:m]), variances=kept, residual=residual)
