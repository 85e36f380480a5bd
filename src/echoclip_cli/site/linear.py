"""Small linear heads in numpy: closed-form ridge and L2 logistic regression, regularisation by CV.

Features are centred and scaled by the training rows' standard deviation (the embedding's
dimensions by one pooled scale: they measure one thing), the intercept is not penalised, and coefficients are returned on the raw features (``X @ coef + intercept``).
The penalty ``alpha`` is relative: ``alpha × n_train`` on the standardised coefficients, so one
grid (:data:`RIDGE_ALPHAS`) serves any number of rows.

**Ridge** needs one eigendecomposition per fold: of the F×F Gram matrix when the fold trains on
more rows than features (sums of squares per fold, subtracted from the total: one pass over the
rows for all folds), else of the n×n kernel matrix (the same solution,
``(ZᵀZ + αI)⁻¹Zᵀ = Zᵀ(ZZᵀ + αI)⁻¹``). Every alpha of the grid then costs a matrix product.
Float64 throughout; row blocks are converted as they are summed, so float32 input is not copied.

**Logistic regression**: Newton's method (``newton_steps`` at most, stopped when the step is
below 1e-8), warm-started along the alpha path.

**Folds** are drawn by group (a study's videos stay in one fold), seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-5, 2, 15))
LOGISTIC_ALPHAS = tuple(float(a) for a in np.logspace(-4, 1, 6))
BLOCK = 16384  # rows summed per step (a float64 copy of one block at a time)
NEWTON_STEPS = 50


@dataclass(frozen=True)
class Linear:
    """``X @ coef + intercept`` on raw features."""

    coef: np.ndarray  # (F,)
    intercept: float

    def decision(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef + self.intercept


def folds_of(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number (0..k-1) per row; the rows of one group share one fold."""
    names, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of_group = np.empty(len(names), dtype=np.int64)
    fold_of_group[order] = np.arange(len(names)) % k
    return fold_of_group[inverse.ravel()]


@dataclass
class Moments:
    """Sums over rows about a fixed ``shift`` c (a reference point near the data, so the products
    need no float64: the big common part of the embeddings is taken out first): count, Σ(x − c),
    Σ(x − c)(x − c)ᵀ, Σy, Σ(x − c)y."""

    n: int
    sx: np.ndarray
    sxx: np.ndarray
    sy: float
    sxy: np.ndarray
    shift: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray, y: np.ndarray) -> "Moments":
        return cls.by_fold(X, y, np.zeros(X.shape[0], dtype=np.int64), 1)[0]

    @classmethod
    def by_fold(cls, X: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int) -> "list[Moments]":
        """The sums of each fold's rows, in one pass over ``X``. Products are float32 (BLAS sgemm)
        on rows centred by the first rows' mean, accumulated in float64 block by block."""
        F = X.shape[1]
        shift = np.asarray(X[:BLOCK], dtype=np.float64).mean(axis=0)
        out = [cls(0, np.zeros(F), np.zeros((F, F)), 0.0, np.zeros(F), shift) for _ in range(k)]
        for start in range(0, X.shape[0], BLOCK):
            block = (np.asarray(X[start:start + BLOCK], dtype=np.float64) - shift).astype(np.float32)
            yb = np.asarray(y[start:start + BLOCK], dtype=np.float64)
            fb = folds[start:start + BLOCK]
            for fold, m in enumerate(out):
                part, yp = (block, yb) if k == 1 else (block[fb == fold], yb[fb == fold])
                m.n += part.shape[0]
                m.sx += part.sum(axis=0, dtype=np.float64)
                m.sxx += part.T @ part
                m.sy += float(yp.sum())
                m.sxy += part.T.astype(np.float64) @ yp
        return out

    def __add__(self, other: "Moments") -> "Moments":
        return Moments(self.n + other.n, self.sx + other.sx, self.sxx + other.sxx, self.sy + other.sy,
                       self.sxy + other.sxy, self.shift)

    def __sub__(self, other: "Moments") -> "Moments":
        return Moments(self.n - other.n, self.sx - other.sx, self.sxx - other.sxx, self.sy - other.sy,
                       self.sxy - other.sxy, self.shift)

    def first(self, count: int) -> "Moments":
        """The sums of the first ``count`` features only."""
        return Moments(self.n, self.sx[:count], self.sxx[:count, :count], self.sy, self.sxy[:count],
                       self.shift[:count])

    @property
    def mean(self) -> np.ndarray:
        return self.shift + self.sx / self.n

    def covariance(self) -> np.ndarray:
        """Σ (x − μ)(x − μ)ᵀ (not divided by n)."""
        centred = self.sx / self.n
        return self.sxx - self.n * np.outer(centred, centred)

    def cross(self) -> np.ndarray:
        """Σ (x − μ)(y − ȳ)."""
        return self.sxy - self.sx * (self.sy / self.n)


def eigh(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix, by torch's LAPACK on one
    thread: a 513² eigendecomposition takes 0.04–0.1 s so, and 10–30× longer threaded when other
    processes share the cores (measured on 2 cores; numpy's threaded LAPACK alike)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        values, vectors = torch.linalg.eigh(torch.from_numpy(np.ascontiguousarray(A, dtype=np.float64)))
    finally:
        torch.set_num_threads(threads)
    return values.numpy(), vectors.numpy()


def _scale(variance: np.ndarray, pooled: int) -> np.ndarray:
    """Each feature's standard deviation; the first ``pooled`` features share their pooled one
    (embedding dimensions are one quantity: scaling each to unit variance would lift its noise
    dimensions to the signal's)."""
    variance = np.maximum(np.asarray(variance, dtype=np.float64), 0.0).copy()
    if pooled:
        variance[:pooled] = variance[:pooled].mean()
    sd = np.sqrt(variance)
    return np.where(sd > 1e-12, sd, 1.0)


Solver = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # alphas (L,) -> coef (F,L), intercepts (L,)


def _gram_solver(m: Moments, pooled: int) -> Solver:
    mu, ybar = m.mean, m.sy / m.n
    C = m.covariance()
    sd = _scale(np.diag(C) / m.n, pooled)
    Cs = C / np.outer(sd, sd)
    cs = m.cross() / sd
    s, V = eigh(Cs)
    proj = V.T @ cs

    def solve(alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coef = (V @ (proj[:, None] / (s[:, None] + alphas[None, :] * m.n))) / sd[:, None]
        return coef, ybar - mu @ coef

    return solve


def _kernel_solver(X: np.ndarray, y: np.ndarray, pooled: int) -> Solver:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mu, ybar = X.mean(axis=0), float(y.mean())
    sd = _scale(X.var(axis=0), pooled)
    Z = (X - mu) / sd
    s, U = eigh(Z @ Z.T)
    proj = U.T @ (y - ybar)
    n = X.shape[0]

    def solve(alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coef = (Z.T @ (U @ (proj[:, None] / (np.maximum(s, 0.0)[:, None] + alphas[None, :] * n)))) / sd[:, None]
        return coef, ybar - mu @ coef

    return solve


def _solver(X: np.ndarray, y: np.ndarray, moments: Moments | None, pooled: int) -> Solver:
    if X.shape[0] > X.shape[1]:
        return _gram_solver(moments if moments is not None else Moments.of(X, y), pooled)
    return _kernel_solver(X, y, pooled)


@dataclass(frozen=True)
class CVResult:
    alpha: float
    alphas: tuple[float, ...]
    losses: tuple[float, ...]  # mean CV loss per alpha (ridge: MSE; logistic: log loss)
    out_of_fold: np.ndarray  # each row's prediction by the model that did not see its fold, at ``alpha``
    moments: Moments | None = None  # the sums over every row, where the folds were solved from them


def ridge_cv(X: np.ndarray, y: np.ndarray, folds: np.ndarray, pooled: int = 0,
             alphas: tuple[float, ...] = RIDGE_ALPHAS) -> CVResult:
    """The alpha of ``alphas`` with the least cross-validated squared error (``folds``: a fold per
    row; ``pooled``: the leading features that share one scale)."""
    grid = np.asarray(alphas, dtype=np.float64)
    n_folds = int(folds.max()) + 1
    big = X.shape[0] - np.bincount(folds).max() > X.shape[1]
    parts = [np.flatnonzero(folds == k) for k in range(n_folds)]
    sums = Moments.by_fold(X, y, folds, n_folds) if big else []
    total = sum(sums[1:], sums[0]) if sums else None
    predictions = np.zeros((X.shape[0], grid.size))
    for k, rows in enumerate(parts):
        if total is not None:
            solve = _gram_solver(total - sums[k], pooled)
        else:
            train = np.flatnonzero(folds != folds[rows[0]])
            solve = _kernel_solver(X[train], y[train], pooled)
        coef, intercept = solve(grid)
        predictions[rows] = np.asarray(X[rows], dtype=np.float64) @ coef + intercept
    losses = ((predictions - np.asarray(y, dtype=np.float64)[:, None]) ** 2).mean(axis=0)
    best = int(np.argmin(losses))
    return CVResult(float(grid[best]), tuple(alphas), tuple(float(v) for v in losses), predictions[:, best], total)


def ridge(X: np.ndarray, y: np.ndarray, alpha: float, moments: Moments | None = None, pooled: int = 0) -> Linear:
    """The ridge fit at one relative ``alpha``."""
    coef, intercept = _solver(X, y, moments, pooled)(np.asarray([alpha]))
    return Linear(coef[:, 0], float(intercept[0]))


# --------------------------------------------------------------------------- logistic regression


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _logistic_path(X: np.ndarray, y: np.ndarray, alphas: np.ndarray, pooled: int) -> list[Linear]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mu, sd = X.mean(axis=0), _scale(X.var(axis=0), pooled)
    Z = np.hstack([np.ones((X.shape[0], 1)), (X - mu) / sd])
    n, width = Z.shape
    w = np.zeros(width)
    out = []
    for alpha in alphas:
        penalty = np.full(width, alpha * n)
        penalty[0] = 0.0
        for _ in range(NEWTON_STEPS):
            p = sigmoid(Z @ w)
            gradient = Z.T @ (p - y) + penalty * w
            hessian = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(penalty) + 1e-10 * np.eye(width)
            step = np.linalg.solve(hessian, gradient)
            w = w - step
            if np.max(np.abs(step)) < 1e-8:
                break
        coef = w[1:] / sd
        out.append(Linear(coef, float(w[0] - mu @ coef)))
    return out


def _log_loss(y: np.ndarray, z: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def logistic_cv(X: np.ndarray, y: np.ndarray, folds: np.ndarray, pooled: int = 0,
                alphas: tuple[float, ...] = LOGISTIC_ALPHAS) -> CVResult:
    """The alpha with the least cross-validated log loss; out-of-fold probabilities at it."""
    grid = np.asarray(sorted(alphas, reverse=True), dtype=np.float64)  # strong to weak: warm starts stay near
    decisions = np.zeros((X.shape[0], grid.size))
    for k in range(int(folds.max()) + 1):
        rows, train = np.flatnonzero(folds == k), np.flatnonzero(folds != k)
        for j, model in enumerate(_logistic_path(X[train], y[train], grid, pooled)):
            decisions[rows, j] = model.decision(X[rows])
    losses = np.asarray([_log_loss(np.asarray(y, dtype=np.float64), decisions[:, j]) for j in range(grid.size)])
    best = int(np.argmin(losses))
    return CVResult(float(grid[best]), tuple(float(a) for a in grid), tuple(float(v) for v in losses),
                    sigmoid(decisions[:, best]))


def logistic(X: np.ndarray, y: np.ndarray, alpha: float, pooled: int = 0) -> Linear:
    """The L2 logistic fit at one relative ``alpha`` (``decision`` gives log-odds)."""
    return _logistic_path(X, y, np.asarray([alpha]), pooled)[0]
