"""Score zero-shot predictions against a site's own labels: metrics, bootstrap CIs and thresholds.

Pure numpy (no torch), so evaluation runs anywhere the prediction files can be copied to.

- **Metrics**: MAE, RMSE and R² for regression (EF, in EF points); ROC AUC for binary tasks, by
  ranks (the Mann–Whitney statistic, ties counted as half), so it equals the area under the
  step ROC curve that :func:`roc_curve` returns.
- **Thresholds**: a call is ``score >= threshold``. :func:`choose_threshold` scans every distinct
  score as a cut and keeps the one with the best F1 or Youden's J (sensitivity + specificity − 1);
  on ties the higher cut wins. The threshold written is the midpoint between that cut and the next
  lower score, so it makes the same calls on the labelled data and sits *between* the classes.
- **Confidence intervals**: percentile bootstrap (95 % by default, seeded). Resampling draws
  videos, or whole studies with ``groups`` so that videos of one study stay together.
  Resamples where a metric is undefined (an AUC with one class only) are dropped.
- **Join**: prediction records (JSONL or CSV from ``predict-ef`` / ``detect-devices`` /
  ``zero-shot``) meet a labels CSV keyed by ``source`` (exact path, else file name) or ``study``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import EchoclipError

EF_TASK = "ejection_fraction"
# Label column names that mean the EF task (predict-ef writes the value under "ef").
EF_COLUMNS = ("ef", EF_TASK)
DEFAULT_BOOTSTRAP = 1000
METHODS = ("f1", "youden")

# EchoCLIP's published results (Christensen et al., Nat Med 2024): EF MAE on the external
# EchoNet-Dynamic test set (8.4 internal), device AUCs on the internal test set.
PAPER_VALUES: dict[tuple[str, str], float] = {
    (EF_TASK, "mae"): 7.1,
    ("mitraclip", "auc"): 0.97,
    ("tavr", "auc"): 0.92,
    ("pacemaker", "auc"): 0.84,
    ("impella", "auc"): 0.98,
}

_TRUE = frozenset({"1", "1.0", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "0.0", "false", "f", "no", "n"})
_MISSING = frozenset({"", "na", "n/a", "nan", "none", "null", "?"})


class LabelsError(EchoclipError):
    """A labels or predictions file is missing a column, holds a bad value, or nothing matches."""


# --------------------------------------------------------------------------- regression metrics


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    return t, p


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error (nan when empty)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p))) if t.size else math.nan


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error (nan when empty)."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2))) if t.size else math.nan


def r2(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination 1 − SS_res/SS_tot (nan when the labels do not vary)."""
    t, p = _pair(y_true, y_pred)
    ss_tot = float(np.sum((t - t.mean()) ** 2)) if t.size else 0.0
    if ss_tot == 0.0:
        return math.nan
    return 1.0 - float(np.sum((t - p) ** 2)) / ss_tot


# --------------------------------------------------------------------------- binary metrics


def _binary(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length ({y.size} vs {s.size})")
    return y, s


def average_ranks(x: Any) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # rank of the last member of each distinct value
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve by ranks, ties as half (nan unless both classes are present)."""
    y, s = _binary(labels, scores)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    rank_sum = float(average_ranks(s)[y].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for every distinct score as a cut: (fpr, tpr, thresholds), thresholds descending.

    The first point is (0, 0) at threshold +inf; each later point counts ``score >= threshold``
    as positive. Rates are nan where a class is absent.
    """
    y, s = _binary(labels, scores)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.array([], dtype=int)
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    positives, negatives = float(y.sum()), float(y.size - y.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = np.r_[0.0, tps] / positives if positives else np.full(tps.size + 1, np.nan)
        fpr = np.r_[0.0, fps] / negatives if negatives else np.full(fps.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last]]


@dataclass(frozen=True)
class Confusion:
    """Counts and rates of ``score >= threshold`` (or of given calls) against the labels."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else math.nan

    @property
    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else math.nan


def confusion(labels: Any, calls: Any) -> Confusion:
    """Confusion counts of boolean ``calls`` against boolean ``labels``."""
    y, c = _binary(labels, np.asarray(calls, dtype=bool))
    c = c.astype(bool)
    return Confusion(tp=int(np.sum(y & c)), fp=int(np.sum(~y & c)), tn=int(np.sum(~y & ~c)), fn=int(np.sum(y & ~c)))


def sensitivity(labels: Any, calls: Any) -> float:
    return confusion(labels, calls).sensitivity


def specificity(labels: Any, calls: Any) -> float:
    return confusion(labels, calls).specificity


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold chosen on labelled scores, with how it performs there."""

    threshold: float
    method: str
    n: int
    positives: int
    auc: float
    sensitivity: float
    specificity: float
    f1: float

    def as_json(self) -> dict[str, Any]:
        """The thresholds-file entry (``prompts.load_thresholds`` reads its ``"threshold"``)."""
        return {"threshold": _round(self.threshold, 6), "method": self.method, "n": self.n,
                "positives": self.positives, "auc": _round(self.auc), "sensitivity": _round(self.sensitivity),
                "specificity": _round(self.specificity), "f1": _round(self.f1)}


def choose_threshold(labels: Any, scores: Any, method: str = "f1") -> ThresholdChoice:
    """The cut that maximises F1 (``method="f1"``) or Youden's J (``"youden"``) on these scores."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    y, s = _binary(labels, scores)
    positives, negatives = int(y.sum()), int(y.size - y.sum())
    if positives == 0 or negatives == 0:
        raise LabelsError(f"a threshold needs both positive and negative labels (got {positives} positive, "
                          f"{negatives} negative)")
    fpr, tpr, cuts = (a[1:] for a in roc_curve(y, s))  # drop the (0, 0) point at +inf
    tp, fp = tpr * positives, fpr * negatives
    objective = 2 * tp / (2 * tp + fp + (positives - tp)) if method == "f1" else tpr - fpr
    best = int(np.argmax(objective))  # first maximum: the highest cut among equals
    threshold = (cuts[best] + cuts[best + 1]) / 2.0 if best + 1 < cuts.size else cuts[best]
    counts = confusion(y, s >= threshold)
    return ThresholdChoice(threshold=float(threshold), method=method, n=int(y.size), positives=positives,
                           auc=roc_auc(y, s), sensitivity=counts.sensitivity, specificity=counts.specificity,
                           f1=counts.f1)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: Any,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``.

    Each resample draws rows with replacement, or with ``groups`` (one key per row) draws whole
    groups with replacement and keeps all their rows. Resamples where the statistic is nan are
    dropped; (nan, nan) when none is left or ``n_boot`` is 0.
    """
    columns = [np.asarray(a) for a in arrays]
    n = len(columns[0]) if columns else 0
    if n_boot <= 0 or n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draw = _group_sampler(groups, n, rng) if groups is not None else (lambda: rng.integers(0, n, n))
    values = np.empty(n_boot)
    for b in range(n_boot):
        index = draw()
        values[b] = statistic(*(c[index] for c in columns))
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _group_sampler(groups: Sequence[Any], n: int, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} keys for {n} rows")
    _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]
    return lambda: np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


# --------------------------------------------------------------------------- reading files


def read_predictions(text: str, name: str = "predictions") -> list[dict[str, Any]]:
    """Prediction records from JSONL or CSV text (as ``predict-ef`` / ``detect-devices`` write them).

    Returns the usable records normalised to ``level, source, study, task, kind, value, threshold,
    detected`` (kind "regression" or "binary"); failed inputs (``error`` set) and records with no
    value are left out.
    """
    stripped = text.lstrip()
    raw = _read_jsonl(text, name) if stripped.startswith("{") else _read_csv(text, name)
    return [r for r in (_normalise(record) for record in raw) if r is not None]


def _read_jsonl(text: str, name: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise LabelsError(f"{name}: line {number} is not JSON") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_csv(text: str, name: str) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not ({"ef", "score", "value"} & set(rows[0])):
        raise LabelsError(f"{name}: neither JSONL nor a CSV with an ef, score or value column",
                          hint="pass the output of `echoclip predict-ef` or `echoclip detect-devices`")
    return [{k: (v if v != "" else None) for k, v in row.items() if k is not None} for row in rows]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _normalise(record: Mapping[str, Any]) -> dict[str, Any] | None:
    if record.get("error"):
        return None
    if _number(record.get("ef")) is not None:
        task, kind, value = record.get("task") or EF_TASK, "regression", _number(record["ef"])
    elif _number(record.get("score")) is not None:
        task, kind, value = record.get("task"), "binary", _number(record["score"])
    elif _number(record.get("value")) is not None:
        task, kind, value = record.get("task"), "regression", _number(record["value"])
    else:
        return None
    if not task:
        return None
    threshold = _number(record.get("threshold")) if kind == "binary" else None
    detected = _flag(record.get("detected")) if threshold is not None else None
    if threshold is not None and detected is None:
        detected = value >= threshold
    return {"level": record.get("level") or ("video" if record.get("source") else "study"),
            "source": record.get("source"), "study": record.get("study"), "task": str(task), "kind": kind,
            "value": value, "threshold": threshold, "detected": detected}


@dataclass(frozen=True)
class Labels:
    """A labels CSV: its key column (``source`` or ``study``), label columns and rows (raw text)."""

    name: str
    key: str
    columns: tuple[str, ...]
    rows: tuple[Mapping[str, str], ...]

    def has(self, column: str) -> bool:
        return column in self.columns

    def numeric(self, column: str) -> list[float | None]:
        """Column as numbers (None where empty/NA); a non-number is an error naming its row."""
        out = []
        for number, row in enumerate(self.rows, 2):
            text = (row.get(column) or "").strip()
            value = None if text.lower() in _MISSING else _number(text.rstrip("%"))
            if value is None and text.lower() not in _MISSING:
                raise LabelsError(f"{self.name}: row {number}: {column} must be a number, not {text[:20]!r}")
            out.append(value)
        return out

    def binary(self, column: str) -> list[bool | None]:
        """Column as booleans from 0/1, true/false or yes/no (None where empty/NA)."""
        out = []
        for number, row in enumerate(self.rows, 2):
            text = (row.get(column) or "").strip().lower()
            value = None if text in _MISSING else _flag(text)
            if value is None and text not in _MISSING:
                raise LabelsError(f"{self.name}: row {number}: {column} must be 0/1, true/false or yes/no, "
                                  f"not {text[:20]!r}")
            out.append(value)
        return out


def read_labels(text: str, name: str = "labels") -> Labels:
    """Parse a labels CSV: a ``source`` or ``study`` column plus one column per label (names
    lower-cased); or the label records ``echoclip labels`` writes (JSONL, or CSV with
    ``measurement`` and ``value`` columns), read by :func:`labels_from_records`."""
    text = text.lstrip("\ufeff")
    if text.lstrip().startswith("{"):
        return labels_from_records(_read_jsonl(text, name), name)
    table = list(csv.reader(io.StringIO(text)))
    if table and LABEL_RECORD_COLUMNS <= {h.strip().lower() for h in table[0]}:
        return labels_from_records(list(csv.DictReader(io.StringIO(text))), name)
    header = [h.strip().lower() for h in (table[0] if table else [])]
    rows = tuple({h: v for h, v in zip(header, row) if h} for row in table[1:] if any(v.strip() for v in row))
    key = "source" if "source" in header else "study" if "study" in header else None
    if key is None:
        raise LabelsError(f"{name}: needs a 'source' or 'study' column (has: {', '.join(header) or 'none'})")
    columns = tuple(h for h in header if h and h not in ("source", "study"))
    return Labels(name=name, key=key, columns=columns, rows=rows)


LABEL_RECORD_COLUMNS = frozenset({"measurement", "value", "study"})
MACHINE_COLUMNS = ("manufacturer", "manufacturer_model")  # what results are broken down by


def labels_from_records(records: Iterable[Mapping[str, Any]], name: str = "labels") -> Labels:
    """A study-keyed labels table from label records (``echoclip labels``): per study, each
    measurement's ``primary`` value (a study in conflict has none: never averaged), and the
    machine (manufacturer, model) its records name."""
    rows: dict[str, dict[str, str]] = {}
    measurements: dict[str, None] = {}
    for record in records:
        study, measurement = str(record.get("study") or ""), str(record.get("measurement") or "")
        if record.get("error") or not _flag(record.get("primary")) or not study or not measurement:
            continue
        value = _number(record.get("value"))
        if value is None:
            continue
        row = rows.setdefault(study, {"study": study})
        row[measurement] = f"{value:g}"
        measurements[measurement] = None
        for column in MACHINE_COLUMNS:
            if record.get(column):
                row.setdefault(column, str(record[column]))
    machines = tuple(c for c in MACHINE_COLUMNS if any(c in row for row in rows.values()))
    return Labels(name=name, key="study", columns=(*measurements, *machines), rows=tuple(rows.values()))


# --------------------------------------------------------------------------- joining


@dataclass(frozen=True)
class Paired:
    """One task's labelled predictions: truth, prediction, study per row, and calls where made."""

    task: str
    kind: str  # "regression" or "binary"
    level: str  # "video" or "study"
    y_true: np.ndarray
    y_pred: np.ndarray
    groups: np.ndarray  # study key per row (for study-level bootstrap)
    detected: np.ndarray | None = None  # bool per row, when every matched prediction had a threshold
    threshold: float | None = None  # the threshold when all rows share one
    label_rows: np.ndarray | None = None  # each row's index in the labels table

    def subset(self, mask: np.ndarray) -> "Paired":
        """The rows where ``mask`` holds."""
        return dataclasses.replace(
            self, y_true=self.y_true[mask], y_pred=self.y_pred[mask], groups=self.groups[mask],
            detected=self.detected[mask] if self.detected is not None else None,
            label_rows=self.label_rows[mask] if self.label_rows is not None else None)

    @property
    def n(self) -> int:
        return int(self.y_true.size)


@dataclass(frozen=True)
class Joined:
    """The result of :func:`join`: paired data per task and what did not match."""

    pairs: dict[str, Paired]
    key: str
    label_rows: int
    unmatched: int  # label rows that matched no prediction
    by_name: int  # label rows matched by file name rather than the exact path
    missing_labels: tuple[str, ...] = ()  # prediction tasks the labels have no column for
    warnings: tuple[str, ...] = field(default=())
    unmatched_keys: tuple[str, ...] = ()  # the key (source or study) of each unmatched label row, in file order


def label_column(labels: Labels, task: str) -> str | None:
    """The labels column holding ``task`` (``ef`` for EF), if any."""
    names = EF_COLUMNS if task == EF_TASK else (task,)
    return next((c for c in names if labels.has(c)), None)


def prediction_tasks(predictions: Sequence[Mapping[str, Any]], kind: str | None = None) -> list[str]:
    """Tasks present in the prediction records, in first-seen order (optionally one kind)."""
    return list(dict.fromkeys(p["task"] for p in predictions if kind is None or p["kind"] == kind))


def join(predictions: Sequence[Mapping[str, Any]], labels: Labels, tasks: Sequence[str] | None = None) -> Joined:
    """Pair prediction records with label rows, per task.

    Labels keyed by ``source`` meet video records (exact path first, else a unique file name);
    labels keyed by ``study`` meet study records (or, where a task has none, the mean of its
    videos per study). A ``study`` column in a source-keyed labels file sets the bootstrap groups.
    """
    available = prediction_tasks(predictions)
    chosen = list(tasks) if tasks else available
    for task in chosen:
        if task not in available:
            raise LabelsError(f"no predictions for task {task!r}", hint=f"tasks there: {', '.join(available) or 'none'}")
    columns = {task: label_column(labels, task) for task in chosen}
    missing = tuple(t for t, c in columns.items() if c is None)
    if tasks and missing:
        raise LabelsError(f"{labels.name}: no label column for {', '.join(missing)}",
                          hint=f"label columns: {', '.join(labels.columns) or 'none'}")
    if len(missing) == len(chosen):
        raise LabelsError(f"{labels.name}: no label column for any predicted task ({', '.join(chosen) or 'none'})",
                          hint=f"label columns: {', '.join(labels.columns) or 'none'}; use ef, pacemaker, tavr, "
                          "mitraclip, impella")
    index = _index(predictions, labels.key)
    matches, by_name = _match(labels, index)
    pairs = {}
    for task, column in columns.items():
        if column is not None:
            pair = _pair_task(task, column, labels, matches, index)
            if pair is not None:
                pairs[task] = pair
    unmatched_keys = tuple((row.get(labels.key) or "").strip() for row, m in zip(labels.rows, matches, strict=True)
                           if m is None)
    unmatched = len(unmatched_keys)
    if not pairs:
        raise LabelsError(f"no label row of {labels.name} matched a prediction ({unmatched} of "
                          f"{len(labels.rows)} rows unmatched by {labels.key})",
                          hint="sources match the path given to predict-ef, else the file name")
    warnings = tuple(w for p in pairs.values() if (w := _range_warning(p)))
    return Joined(pairs=pairs, key=labels.key, label_rows=len(labels.rows), unmatched=unmatched,
                  by_name=by_name, missing_labels=missing, warnings=warnings, unmatched_keys=unmatched_keys)


@dataclass
class _Index:
    level: str
    records: dict[tuple[str, str], Mapping[str, Any]]  # (key, task) -> record
    keys: set[str]
    names: dict[str, list[str]]  # file name -> keys


def _index(predictions: Sequence[Mapping[str, Any]], key: str) -> _Index:
    level = "video" if key == "source" else "study"
    records: dict[tuple[str, str], Mapping[str, Any]] = {}
    for p in predictions:
        if p["level"] == level and p.get(key):
            records.setdefault((str(p[key]), p["task"]), p)
    if level == "study":
        for record in _study_means(predictions, {t for _, t in records}):
            records.setdefault((record["study"], record["task"]), record)
    keys = {k for k, _ in records}
    names: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        names[_file_name(k)].append(k)
    return _Index(level=level, records=records, keys=keys, names=names)


def _study_means(predictions: Sequence[Mapping[str, Any]], have: set[str]) -> Iterable[dict[str, Any]]:
    """Study records (mean of videos) for tasks whose predictions hold no study-level record."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for p in predictions:
        if p["level"] == "video" and p["task"] not in have and p.get("study"):
            groups[(str(p["study"]), p["task"])].append(p)
    for (study, task), members in groups.items():
        value = float(np.mean([m["value"] for m in members]))
        threshold = members[0]["threshold"]
        yield {"level": "study", "source": None, "study": study, "task": task, "kind": members[0]["kind"],
               "value": value, "threshold": threshold,
               "detected": value >= threshold if threshold is not None else None}


def _file_name(key: str) -> str:
    return PurePath(key.replace("\\", "/")).name


def _match(labels: Labels, index: _Index) -> tuple[list[str | None], int]:
    """Each label row's prediction key (None: no match) and how many matched by file name only."""
    matches: list[str | None] = []
    by_name = 0
    for row in labels.rows:
        key = (row.get(labels.key) or "").strip()
        if key in index.keys:
            matches.append(key)
            continue
        candidates = index.names.get(_file_name(key), []) if labels.key == "source" and key else []
        matches.append(candidates[0] if len(candidates) == 1 else None)
        by_name += len(candidates) == 1
    return matches, by_name


def _pair_task(task: str, column: str, labels: Labels, matches: Sequence[str | None], index: _Index) -> Paired | None:
    rows = [(i, index.records.get((key, task))) for i, key in enumerate(matches) if key is not None]
    rows = [(i, r) for i, r in rows if r is not None]
    if not rows:
        return None
    kind = rows[0][1]["kind"]
    truth = labels.numeric(column) if kind == "regression" else labels.binary(column)
    rows = [(i, r) for i, r in rows if truth[i] is not None]
    if not rows:
        return None
    y_true = np.asarray([truth[i] for i, _ in rows], dtype=np.float64 if kind == "regression" else bool)
    y_pred = np.asarray([r["value"] for _, r in rows], dtype=np.float64)
    groups = np.asarray([_group(labels.rows[i], r) for i, r in rows], dtype=object)
    detected, threshold = None, None
    if kind == "binary" and all(r["detected"] is not None for _, r in rows):
        detected = np.asarray([bool(r["detected"]) for _, r in rows])
        thresholds = {r["threshold"] for _, r in rows}
        threshold = thresholds.pop() if len(thresholds) == 1 else None
    return Paired(task=task, kind=kind, level=index.level, y_true=y_true, y_pred=y_pred, groups=groups,
                  detected=detected, threshold=threshold, label_rows=np.asarray([i for i, _ in rows], dtype=np.int64))


def _group(row: Mapping[str, str], record: Mapping[str, Any]) -> str:
    return (row.get("study") or "").strip() or str(record.get("study") or record.get("source") or "")


def _range_warning(pair: Paired) -> str | None:
    if pair.task == EF_TASK and pair.n and float(np.max(pair.y_true)) <= 1.0:
        return "EF labels are all ≤ 1: they look like fractions, but EF labels are percent (55, not 0.55)"
    return None


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Metric:
    """One metric of one task, with its bootstrap interval and the paper's value where published."""

    task: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    level: str
    paper: float | None = None
    positives: int | None = None
    threshold: float | None = None
    machine: str | None = None  # the manufacturer and model these rows were made on (a breakdown)

    def as_record(self) -> dict[str, Any]:
        record = {"task": self.task, "metric": self.metric, "value": _round(self.value), "paper": self.paper,
                  "ci_low": _round(self.ci_low), "ci_high": _round(self.ci_high), "n": self.n,
                  "positives": self.positives, "threshold": self.threshold, "level": self.level}
        if self.machine is not None:
            record["machine"] = self.machine
        return record


REGRESSION_METRICS: dict[str, Callable[[Any, Any], float]] = {"mae": mae, "rmse": rmse, "r2": r2}


def evaluate(pairs: Mapping[str, Paired], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
             by_study: bool = False) -> list[Metric]:
    """Every metric for every paired task: regression MAE/RMSE/R², binary AUC (+ sens/spec at a threshold)."""
    metrics: list[Metric] = []
    for task, pair in pairs.items():
        groups = pair.groups if by_study else None
        boot = {"n_boot": n_boot, "seed": seed, "groups": groups}
        if pair.kind == "regression":
            for name, fn in REGRESSION_METRICS.items():
                metrics.append(_metric(pair, name, fn, (pair.y_true, pair.y_pred), boot))
        else:
            metrics.append(_metric(pair, "auc", roc_auc, (pair.y_true, pair.y_pred), boot))
            if pair.detected is not None:
                for name, fn in (("sensitivity", sensitivity), ("specificity", specificity)):
                    metrics.append(_metric(pair, name, fn, (pair.y_true, pair.detected), boot))
    return metrics


def machines(pairs: Mapping[str, Paired], labels: Labels) -> dict[str, dict[str, Paired]]:
    """Each machine's rows (``"manufacturer model"`` from the labels' machine columns; "unknown"
    where a row names none): {machine: {task: paired}}; {} when the labels name no machine."""
    columns = [c for c in MACHINE_COLUMNS if labels.has(c)]
    if not columns:
        return {}
    out: dict[str, dict[str, Paired]] = defaultdict(dict)
    for task, pair in pairs.items():
        if pair.label_rows is None:
            continue
        names = np.asarray([" ".join((labels.rows[i].get(c) or "").strip() for c in columns).strip() or "unknown"
                            for i in pair.label_rows], dtype=object)
        for machine in dict.fromkeys(names):
            out[str(machine)][task] = pair.subset(names == machine)
    return dict(out)


def evaluate_by_machine(pairs: Mapping[str, Paired], labels: Labels, n_boot: int = DEFAULT_BOOTSTRAP,
                        seed: int = 0, by_study: bool = False) -> list[Metric]:
    """:func:`evaluate` on each machine's rows (``Metric.machine`` names it): which of a site's
    machines the model struggles with."""
    return [dataclasses.replace(metric, machine=machine)
            for machine, subset in machines(pairs, labels).items()
            for metric in evaluate(subset, n_boot=n_boot, seed=seed, by_study=by_study)]


def _metric(pair: Paired, name: str, fn: Callable[..., float], arrays: tuple[np.ndarray, ...],
            boot: Mapping[str, Any]) -> Metric:
    low, high = bootstrap_ci(fn, *arrays, **boot)
    at_threshold = name in ("sensitivity", "specificity")
    return Metric(task=pair.task, metric=name, value=fn(*arrays), ci_low=low, ci_high=high, n=pair.n,
                  level=pair.level, paper=PAPER_VALUES.get((pair.task, name)),
                  positives=int(pair.y_true.sum()) if pair.kind == "binary" else None,
                  threshold=pair.threshold if at_threshold else None)


def calibrate(pairs: Mapping[str, Paired], method: str = "f1") -> dict[str, ThresholdChoice]:
    """A threshold per binary task in ``pairs``; :class:`LabelsError` naming the first task that
    cannot have one (:func:`calibrate_each` calibrates the others and says why not)."""
    choices, refused = calibrate_each(pairs, method)
    if refused:
        task, why = next(iter(refused.items()))
        raise LabelsError(f"{task}: {why}")
    return choices


def calibrate_each(pairs: Mapping[str, Paired], method: str = "f1") -> tuple[dict[str, ThresholdChoice], dict[str, str]]:
    """(a threshold per binary task that can have one, why each other cannot): one task whose labels
    hold a single class (no positives, say) does not cost the others their thresholds."""
    choices: dict[str, ThresholdChoice] = {}
    refused: dict[str, str] = {}
    for task, p in pairs.items():
        if p.kind != "binary":
            continue
        try:
            choices[task] = choose_threshold(p.y_true, p.y_pred, method)
        except LabelsError as exc:
            refused[task] = exc.message
    return choices, refused


def merge_thresholds(existing: Mapping[str, Any], choices: Mapping[str, ThresholdChoice]) -> dict[str, Any]:
    """A thresholds-file object: ``existing`` with the chosen tasks replaced (others kept)."""
    merged = dict(existing)
    merged.update({task: choice.as_json() for task, choice in choices.items()})
    return merged


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)
