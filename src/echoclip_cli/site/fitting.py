"""Fit a head: split the labelled studies, choose the regularisation by CV, calibrate, measure.

1. The labelled studies are split at random (``seed``): ``calibration`` of them are held out; the
   head never trains on them.
2. On the rest, the penalty is chosen by ``folds``-fold cross-validation over whole studies
   (ridge: squared error; logistic: log loss), and the head is fitted on all of them with it.
3. On the held-out studies: the conformal half-width (regression) or set threshold (binary) at
   ``coverage``, and the distance threshold at ``abstain_quantile`` (:mod:`.conformal`).
4. Metrics, each beside the zero-shot score's on the same rows: cross-validated (out-of-fold) on
   the training studies, and on the held-out calibration studies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from .. import evaluation as E
from ..options import FitOptions
from ..records import Record
from .conformal import capped_quantile, conformal_quantile, fit_distance
from .embeddings import EmbeddingTable, match_rows
from .features import design
from .head import Head
from .linear import folds_of, logistic, logistic_cv, ridge, ridge_cv, sigmoid


@dataclass(frozen=True)
class TrainingSet:
    """Labelled video embeddings: one row per video, its study's (or its own) label."""

    vectors: np.ndarray  # (N,E)
    y: np.ndarray  # (N,) float (binary: 0/1)
    groups: np.ndarray  # (N,) study keys: a study's rows stay together in every split
    zero_shot: np.ndarray | None = None  # (N,) the zero-shot score of each row

    @property
    def n(self) -> int:
        return int(self.y.size)


def training_set(table: EmbeddingTable, labels: E.Labels, column: str, kind: str) -> TrainingSet:
    """The rows of ``table`` that ``labels`` label in ``column`` (a study label labels each of its videos)."""
    truth = labels.numeric(column) if kind == "regression" else labels.binary(column)
    keys = [(row.get(labels.key) or "").strip() for row in labels.rows]
    rows, values = [], []
    for found, value in zip(match_rows(table, labels.key, keys), truth, strict=True):
        if value is None or not found.size:
            continue
        rows.append(found)
        values.append(np.full(found.size, float(value)))
    if not rows:
        raise E.LabelsError(f"no labelled {column} matches an embedding of {table.source}",
                            hint=f"labels are matched by {labels.key}: "
                                 + ("StudyInstanceUID, else the folder" if labels.key == "study" else "path, else file name"))
    index = np.concatenate(rows)
    taken = table.take(index)
    return TrainingSet(vectors=taken.vectors, y=np.concatenate(values), groups=taken.studies)


@dataclass(kw_only=True)
class FitMetric(Record):
    """One metric of the fitted head or of the zero-shot score, on cross-validation or calibration rows."""

    task: str
    model: str  # head or zero-shot
    split: str  # cv (out-of-fold, training studies) or calibration (held-out studies)
    metric: str
    value: float | None
    n: int


@dataclass(frozen=True)
class FitResult:
    """The fitted head (``head.save(path)`` writes it) and its metrics beside the zero-shot score's."""

    head: Head
    metrics: list[FitMetric]


def _split(groups: np.ndarray, share: float, seed: int) -> np.ndarray:
    """True for the rows of the held-out (calibration) studies."""
    names = np.unique(groups.astype(str))
    order = np.random.default_rng(seed).permutation(names.size)
    held = set(names[order[:max(1, int(round(share * names.size)))]].tolist())
    return np.asarray([g in held for g in groups.astype(str)])


def _check_sizes(data: TrainingSet, calibration: np.ndarray, options: FitOptions, kind: str) -> None:
    n_cal, studies = int(calibration.sum()), np.unique(data.groups.astype(str)).size
    need = int(math.ceil(options.coverage / (1.0 - options.coverage) - 1e-9))
    train_studies = np.unique(data.groups[~calibration].astype(str)).size
    if n_cal < need or train_studies < 2:
        raise E.LabelsError(f"{data.n} labelled videos of {studies} studies are too few: {n_cal} calibration rows "
                            f"(need {need} for {options.coverage:g} coverage) and {train_studies} training studies",
                            hint="label more studies, or lower --coverage / raise --calibration")
    if kind == "binary":
        y = data.y[~calibration]
        if y.min() == y.max():
            raise E.LabelsError(f"the training studies hold only {'positive' if y[0] else 'negative'} labels")


def fit_head(data: TrainingSet, task: str, kind: str, options: FitOptions, provenance: dict[str, Any],
             progress: Callable[[str], None] = lambda message: None) -> FitResult:
    """Fit, calibrate and measure a head for ``task`` (regression or binary) on ``data``."""
    calibration = _split(data.groups, options.calibration, options.seed)
    _check_sizes(data, calibration, options, kind)
    train = ~calibration
    E_dim = data.vectors.shape[1]  # the embedding's dimensions share one scale in the penalty
    zs = data.zero_shot
    Xt = design(data.vectors[train], zs[train] if options.zero_shot and zs is not None else None)
    Xc = design(data.vectors[calibration], zs[calibration] if options.zero_shot and zs is not None else None)
    yt, yc = data.y[train], data.y[calibration]
    n_folds = min(options.folds, np.unique(data.groups[train].astype(str)).size)
    folds = folds_of(data.groups[train], n_folds, options.seed)
    progress(f"fitting on {yt.size} videos, {n_folds}-fold CV over the penalty; {yc.size} held out to calibrate")
    if kind == "regression":
        cv = ridge_cv(Xt, yt, folds, pooled=E_dim)
        linear = ridge(Xt, yt, cv.alpha, cv.moments, pooled=E_dim)
        predicted = linear.decision(Xc)
        quantile = conformal_quantile(np.abs(yc - predicted), options.coverage)
    else:
        cv = logistic_cv(Xt, yt, folds, pooled=E_dim)
        linear = logistic(Xt, yt, cv.alpha, pooled=E_dim)
        predicted = sigmoid(linear.decision(Xc))
        quantile = conformal_quantile(1.0 - np.where(yc > 0.5, predicted, 1.0 - predicted), options.coverage)
    moments = cv.moments.first(E_dim) if cv.moments is not None else None
    distance = fit_distance(Xt[:, :E_dim], options.components, moments)
    threshold = capped_quantile(distance.of(Xc[:, :E_dim]), options.abstain_quantile)
    head = Head(task=task, kind=kind, linear=linear, zero_shot=options.zero_shot, distance=distance,
                distance_threshold=threshold, coverage=options.coverage, quantile=quantile,
                provenance={**provenance, "n": data.n, "n_train": int(train.sum()),
                            "n_calibration": int(calibration.sum()),
                            "n_studies": int(np.unique(data.groups.astype(str)).size), "alpha": cv.alpha,
                            "folds": n_folds, "seed": options.seed, "abstain_quantile": options.abstain_quantile,
                            "components": int(distance.axes.shape[0]),
                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    metrics = _metrics(task, kind, data.y, zs, train, calibration, cv.out_of_fold, predicted)
    return FitResult(head, metrics)


def _scores(kind: str, truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if kind == "regression":
        return {"mae": E.mae(truth, predicted), "rmse": E.rmse(truth, predicted), "r2": E.r2(truth, predicted)}
    return {"auc": E.roc_auc(truth > 0.5, predicted)}


def _metrics(task: str, kind: str, y: np.ndarray, zs: np.ndarray | None, train: np.ndarray, calibration: np.ndarray,
             out_of_fold: np.ndarray, predicted: np.ndarray) -> list[FitMetric]:
    rows = []
    for split, mask, head_values in (("cv", train, out_of_fold), ("calibration", calibration, predicted)):
        models = [("head", head_values)] + ([("zero-shot", zs[mask])] if zs is not None else [])
        for model, values in models:
            for name, value in _scores(kind, y[mask], values).items():
                rows.append(FitMetric(task=task, model=model, split=split, metric=name,
                                      value=round(value, 4) if math.isfinite(value) else None, n=int(mask.sum())))
    return rows
