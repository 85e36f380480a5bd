"""Zero-shot tasks over videos: EF prediction, device detection, other findings.

Scoring yields typed records (:class:`EFVideo`, :class:`BinaryVideo`, …), one per video (and task),
and :func:`with_studies` adds one summary per study, each naming the weights, prompts and
aggregation used; a failed input is a record with ``error`` set and no numbers. Frame embeddings come from the embedding pipeline or, with a store that kept them,
from the store, so nothing is embedded twice. Prompt embeddings come from the text cache.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import zeroshot
from .errors import UsageError
from .inference import EchoClip
from .prompts import Task
from .records import StudyRecord, VideoRecord, identity, numerics, study_key
from .text_embed import TextEmbeddingCache, embed_token_ids
from .tokenizer import tokenizer_for

if TYPE_CHECKING:
    from .site import Head

# Why EchoCLIP-R is refused for zero-shot tasks (Christensen et al. 2024, EF MAE 16.9 vs 7.1).
RETRIEVAL_MODEL_REASON = (
    "EchoCLIP-R (template tokenizer) is a retrieval model: the paper reports EF MAE 16.9 with it "
    "against 7.1 with EchoCLIP, and it was not validated for device detection"
)


@dataclass(frozen=True)
class FrameSet:
    """One video's normalised frame embeddings (or why it has none)."""

    source: str
    frames: np.ndarray | None  # (T,E)
    meta: Mapping[str, Any]
    error: str | None = None
    skipped: str | None = None  # read but not scored: its clip type (media.classify)


@dataclass(frozen=True)
class PreparedTask:
    """A task with its prompts embedded (normalised) by one model."""

    task: Task
    prompts: np.ndarray | None = None  # regression/binary: (K,E)
    values: np.ndarray | None = None  # regression: (K,)
    classes: Mapping[str, np.ndarray] | None = None  # categorical: label -> (P,E)
    prompt_source: str = "default"


def check_zero_shot_model(model: EchoClip, force: bool) -> None:
    """Refuse EchoCLIP-R for zero-shot tasks unless forced."""
    if model.bundle.tokenizer_kind == "template" and not force:
        raise UsageError(f"{RETRIEVAL_MODEL_REASON}; use --weights echo-clip", hint="pass --force to run it anyway")


def prepare(model: EchoClip, task: Task, prompt_source: str = "default") -> PreparedTask:
    """Embed a task's prompts with ``model`` (through the on-disk cache)."""
    tokenizer = tokenizer_for(model.bundle)
    with TextEmbeddingCache() as cache:
        def embed(texts: Sequence[str]) -> np.ndarray:
            return zeroshot.normalise(embed_token_ids(model, tokenizer(list(texts)), cache=cache).numpy())

        if task.mode == "categorical":
            classes = {label: embed(prompts) for label, prompts in task.classes.items()}
            return PreparedTask(task, classes=classes, prompt_source=prompt_source)
        values = np.asarray(task.text_values()) if task.mode == "regression" else None
        return PreparedTask(task, prompts=embed(task.texts()), values=values, prompt_source=prompt_source)


def task_numbers(model: EchoClip) -> Callable[[list[np.ndarray]], dict[str, list[float]]] | None:
    """EF and the device scores of per-video frame embeddings (normalised, T×E each), with
    ``model``'s prompts: how a CPU backend's check measures what its numerics do to the zero-shot
    tasks. None for retrieval weights (no zero-shot numbers to keep)."""
    if model.bundle.tokenizer_kind == "template":
        return None
    from .defaults import DEVICE_TASKS
    from .prompts import select_tasks

    prepared = {name: prepare(model, task) for name, task in select_tasks(["ejection_fraction", *DEVICE_TASKS]).items()}

    def numbers(per_video: list[np.ndarray]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for name, p in prepared.items():
            assert p.prompts is not None
            if p.task.mode == "regression":
                assert p.values is not None
                out[name] = [zeroshot.regression(f, p.prompts, p.values).estimate for f in per_video]
            elif p.task.mode == "binary":
                out[name] = [zeroshot.binary_score(f, p.prompts) for f in per_video]
        return out

    return numbers


# --------------------------------------------------------------------------- records


HEAD_FIELDS = frozenset({"head", "abstain", "abstain_reason"})  # left out of records made without a head


@dataclass(kw_only=True)
class Headed:
    """What a record says of a site head (``echoclip fit``), beside its task's own head fields:
    the head's name, and whether it abstained (then why, and no head numbers)."""

    head: str | None = None
    abstain: bool | None = None
    abstain_reason: str | None = None


@dataclass(kw_only=True)
class EFVideo(Headed, VideoRecord):
    """A video's zero-shot EF. ``single_frame_ef_sd`` is the spread of the EFs single frames alone
    would give; the video's EF averages the frames' rankings first, so it is not bounded by them.
    With a head (``echoclip fit``): ``head_ef`` beside it, its conformal interval ``ef_low`` …
    ``ef_high``, or ``abstain`` with the reason (then no head numbers)."""

    OPTIONAL: ClassVar[frozenset[str]] = VideoRecord.OPTIONAL | HEAD_FIELDS | {"head_ef", "ef_low", "ef_high"}

    task: str = "ejection_fraction"
    ef: float | None = None
    single_frame_ef_sd: float | None = None
    aggregation: str | None = None
    prompts: str | None = None
    head_ef: float | None = None
    ef_low: float | None = None
    ef_high: float | None = None

    def summary(self, members: Sequence["EFVideo"]) -> "EFStudy":
        heads = _head_summary(members, "head_ef", "ef_low", "ef_high")
        return EFStudy(**_study_base(members), ef=_mean([m.ef for m in members]), aggregation=self.aggregation,
                       prompts=self.prompts, **heads)


@dataclass(kw_only=True)
class EFStudy(Headed, StudyRecord):
    """A study's EF: the mean of its videos'; with a head, the mean of the head values of its
    videos that did not abstain, and the mean of their interval bounds (each video's interval
    has the head's coverage; the mean's is not calibrated)."""

    OPTIONAL: ClassVar[frozenset[str]] = StudyRecord.OPTIONAL | HEAD_FIELDS | {"head_ef", "ef_low", "ef_high"}

    ef: float
    aggregation: str | None = None
    prompts: str | None = None
    head_ef: float | None = None
    ef_low: float | None = None
    ef_high: float | None = None


@dataclass(kw_only=True)
class BinaryVideo(Headed, VideoRecord):
    """A video's score for one binary task (a device); a call only where a threshold exists."""

    task: str | None = None
    score: float | None = None
    threshold: float | None = None
    calibrated: bool | None = None
    detected: bool | None = None
    threshold_source: str | None = None
    prompts: str | None = None
    head_probability: float | None = None
    head_set: list[str] | None = None  # the conformal prediction set: [yes], [no], [no, yes] (cannot tell)

    OPTIONAL: ClassVar[frozenset[str]] = VideoRecord.OPTIONAL | HEAD_FIELDS | {"head_probability", "head_set"}

    def summary(self, members: Sequence["BinaryVideo"]) -> "BinaryStudy":
        score = _mean([m.score for m in members])
        detected = bool(score >= self.threshold) if self.threshold is not None else None
        heads = _head_summary(members, "head_probability")
        return BinaryStudy(**_study_base(members), score=score, threshold=self.threshold, detected=detected,
                           prompts=self.prompts, **heads)


@dataclass(kw_only=True)
class BinaryStudy(Headed, StudyRecord):
    OPTIONAL: ClassVar[frozenset[str]] = StudyRecord.OPTIONAL | HEAD_FIELDS | {"head_probability"}

    score: float
    threshold: float | None = None
    detected: bool | None = None
    prompts: str | None = None
    head_probability: float | None = None


@dataclass(kw_only=True)
class RegressionVideo(Headed, VideoRecord):
    """A video's estimate for a regression task other than EF (e.g. PA pressure)."""

    task: str | None = None
    value: float | None = None
    unit: str | None = None
    single_frame_sd: float | None = None
    aggregation: str | None = None
    prompts: str | None = None
    head_value: float | None = None
    value_low: float | None = None
    value_high: float | None = None

    OPTIONAL: ClassVar[frozenset[str]] = VideoRecord.OPTIONAL | HEAD_FIELDS | {"head_value", "value_low", "value_high"}

    def summary(self, members: Sequence["RegressionVideo"]) -> "RegressionStudy":
        heads = _head_summary(members, "head_value", "value_low", "value_high")
        return RegressionStudy(**_study_base(members), value=_mean([m.value for m in members]), unit=self.unit,
                               aggregation=self.aggregation, prompts=self.prompts, **heads)


@dataclass(kw_only=True)
class RegressionStudy(Headed, StudyRecord):
    OPTIONAL: ClassVar[frozenset[str]] = StudyRecord.OPTIONAL | HEAD_FIELDS | {"head_value", "value_low", "value_high"}

    value: float
    unit: str | None = None
    aggregation: str | None = None
    prompts: str | None = None
    head_value: float | None = None
    value_low: float | None = None
    value_high: float | None = None


@dataclass(kw_only=True)
class CategoricalVideo(VideoRecord):
    """A video's class for a categorical task, with every class's mean cosine."""

    task: str | None = None
    prediction: str | None = None
    scores: dict[str, float] | None = None
    prompts: str | None = None

    def summary(self, members: Sequence["CategoricalVideo"]) -> "CategoricalStudy":
        return CategoricalStudy(**_study_base(members), prediction=_majority([m.prediction for m in members]),
                                prompts=self.prompts)


@dataclass(kw_only=True)
class CategoricalStudy(StudyRecord):
    prediction: str
    prompts: str | None = None


def _study_base(members: Sequence[Any]) -> dict[str, Any]:
    first = members[0]
    return {"study": first.study, "task": first.task, "n_videos": len(members), "weights": first.weights,
            "weights_sha256": first.weights_sha256, "backend": first.backend, "precision": first.precision,
            "patient_key": next((m.patient_key for m in members if m.patient_key), None),
            "study_date": next((m.study_date for m in members if m.study_date), None)}


def _head_summary(members: Sequence[Any], *names: str) -> dict[str, Any]:
    """A study's head fields: the mean of each named field over its videos that did not abstain;
    ``abstain`` when every video with a head value abstained."""
    headed = [m for m in members if m.head is not None]
    if not headed:
        return {}
    kept = [m for m in headed if not m.abstain]
    out: dict[str, Any] = {"head": headed[0].head, "abstain": not kept}
    if not kept:
        out["abstain_reason"] = f"all {len(headed)} videos abstained"
        return out
    for name in names:
        values = [getattr(m, name) for m in kept if getattr(m, name) is not None]
        out[name] = round(float(np.mean(values)), 4) if values else None
    return out


@dataclass
class _StudyCount:
    members: list[Any]
    seen: set[str]
    duplicates: int = 0


def _mean(values: Sequence[float | None]) -> float:
    return round(float(np.mean([v for v in values if v is not None])), 5)


def _majority(values: Sequence[Any]) -> Any:
    """The most frequent value (ties: the first seen)."""
    return max(dict.fromkeys(values), key=list(values).count)


def with_studies(records: Iterable[Any]) -> Iterator[Any]:
    """The video records as they come, then one summary per (study, task) of the scored clips:
    one SOP instance (or one content) counts once, and the summary says how many clips of the
    study were skipped for their type and how many were copies."""
    groups: dict[tuple[str, str], _StudyCount] = {}
    skipped: dict[str, set[str]] = defaultdict(set)
    for record in records:
        yield record
        if record.skipped is not None:
            skipped[record.study].add(record.identity or record.source)
        if not record.ok:
            continue
        group = groups.setdefault((record.study, record.task), _StudyCount([], set()))
        key = record.identity or record.source
        if key in group.seen:
            group.duplicates += 1
            continue
        group.seen.add(key)
        group.members.append(record)
    for (study, _), group in groups.items():
        summary = group.members[0].summary(group.members)
        summary.n_skipped, summary.n_duplicates = len(skipped.get(study, ())), group.duplicates
        yield summary


# --------------------------------------------------------------------------- scoring


NOT_FINITE = "holds non-finite values (NaN or infinity): no number is given for it"


def _finite(values: dict[str, Any]) -> bool:
    """Whether every number among a record's values is finite (a NaN must never read as an EF)."""
    numbers = [v for v in values.values() if isinstance(v, float)]
    numbers += [v for d in values.values() if isinstance(d, dict) for v in d.values() if isinstance(v, float)]
    return all(np.isfinite(numbers))


def _video(cls: type, fs: FrameSet, model: EchoClip, **values: Any) -> Any:
    if values and not _finite(values):
        fs = FrameSet(fs.source, fs.frames, fs.meta, error=f"{fs.source}: its score {NOT_FINITE}")
        values = {}
    return cls(source=fs.source, study=study_key(fs.source, fs.meta),
               n_frames=int(fs.frames.shape[0]) if fs.frames is not None else 0,
               weights=model.bundle.name, weights_sha256=model.weights_sha256, **numerics(fs.meta, model),
               error=fs.error, skipped=fs.skipped,
               clip_type=fs.meta.get("clip_type"), clip_reason=fs.meta.get("clip_reason"),
               warning=fs.meta.get("decode_warning"), patient_key=fs.meta.get("patient_key") or None,
               study_date=fs.meta.get("study_date") or None, identity=identity(fs.meta, fs.source), **values)


def _headed(head: "Head | None", fs: FrameSet, prepared: PreparedTask, value: str, low: str | None = None,
            high: str | None = None, prediction_set: str | None = None) -> dict[str, Any]:
    """A video's head fields under the record's names (none without a head)."""
    if head is None or fs.frames is None:
        return {}
    from .site import apply_head

    out = apply_head(head, fs.frames, prepared.prompts, prepared.values)
    fields: dict[str, Any] = {"head": out.head, "abstain": out.abstain, "abstain_reason": out.abstain_reason,
                              value: out.value}
    if low is not None and high is not None:
        fields[low], fields[high] = out.low, out.high
    if prediction_set is not None:
        fields[prediction_set] = out.prediction_set
    return fields


def ef_records(
    frame_sets: Iterable[FrameSet], model: EchoClip, prepared: PreparedTask, aggregation: str = "released",
    head: "Head | None" = None,
) -> Iterator[EFVideo]:
    """One EF record per video (an error record for a video with no frames); with ``head``, its
    value, interval and abstention beside the zero-shot EF."""
    for fs in frame_sets:
        if fs.error is not None or fs.skipped is not None or fs.frames is None:
            yield _video(EFVideo, fs, model)
            continue
        result = zeroshot.regression(fs.frames, prepared.prompts, prepared.values, aggregation)
        yield _video(EFVideo, fs, model, task=prepared.task.name, ef=round(result.estimate, 2),
                     single_frame_ef_sd=round(result.single_frame_sd, 2), aggregation=aggregation,
                     prompts=prepared.prompt_source, **_headed(head, fs, prepared, "head_ef", "ef_low", "ef_high"))


def binary_records(
    frame_sets: Iterable[FrameSet],
    model: EchoClip,
    prepared: Sequence[PreparedTask],
    thresholds: Mapping[str, float],
    heads: Mapping[str, "Head"] | None = None,
) -> Iterator[BinaryVideo]:
    """One record per video and task: score, threshold (published or user's) and the call; with a
    head for the task (``heads``), its probability and prediction set, or abstention."""
    heads = heads or {}
    for fs in frame_sets:
        if fs.error is not None or fs.skipped is not None or fs.frames is None:
            yield _video(BinaryVideo, fs, model)
            continue
        for p in prepared:
            score = zeroshot.binary_score(fs.frames, p.prompts)
            threshold = thresholds.get(p.task.name, p.task.threshold)
            source = "user" if p.task.name in thresholds else (p.task.threshold_source if threshold is not None else None)
            yield _video(BinaryVideo, fs, model, task=p.task.name, score=round(score, 5), threshold=threshold,
                         calibrated=threshold is not None,
                         detected=bool(score >= threshold) if threshold is not None else None,
                         threshold_source=source, prompts=p.prompt_source,
                         **_headed(heads.get(p.task.name), fs, p, "head_probability", prediction_set="head_set"))


def categorical_records(
    frame_sets: Iterable[FrameSet], model: EchoClip, prepared: PreparedTask
) -> Iterator[CategoricalVideo]:
    for fs in frame_sets:
        if fs.error is not None or fs.skipped is not None or fs.frames is None:
            yield _video(CategoricalVideo, fs, model)
            continue
        scores = zeroshot.categorical_scores(fs.frames, prepared.classes or {})
        best = max(scores, key=scores.get)
        yield _video(CategoricalVideo, fs, model, task=prepared.task.name, prediction=best,
                     scores={k: round(v, 5) for k, v in scores.items()}, prompts=prepared.prompt_source)


def regression_records(
    frame_sets: Iterable[FrameSet], model: EchoClip, prepared: PreparedTask, aggregation: str = "released",
    head: "Head | None" = None,
) -> Iterator[RegressionVideo]:
    for fs in frame_sets:
        if fs.error is not None or fs.skipped is not None or fs.frames is None:
            yield _video(RegressionVideo, fs, model)
            continue
        result = zeroshot.regression(fs.frames, prepared.prompts, prepared.values, aggregation)
        yield _video(RegressionVideo, fs, model, task=prepared.task.name, value=round(result.estimate, 2),
                     unit=prepared.task.unit, single_frame_sd=round(result.single_frame_sd, 2),
                     aggregation=aggregation, prompts=prepared.prompt_source,
                     **_headed(head, fs, prepared, "head_value", "value_low", "value_high"))


def frame_sets_from_results(results: Iterable[Any]) -> Iterator[FrameSet]:
    """FrameSets from :func:`echoclip_cli.pipeline.embed_videos` results (``keep_frames=True``)."""
    for r in results:
        yield checked(FrameSet(r.source, r.frame_embeddings, r.meta, r.error, r.skipped))


def checked(fs: FrameSet) -> FrameSet:
    """``fs``, or an error in its place when its frame embeddings are not all finite (damage, or a
    backend gone wrong): a NaN embedding scores as a plausible EF and a "no device" otherwise."""
    if fs.error is None and fs.frames is not None and not np.isfinite(fs.frames).all():
        return FrameSet(fs.source, None, fs.meta, error=f"{fs.source}: its frame embeddings {NOT_FINITE}")
    return fs


def frame_sets_from_store(store: Any, model: EchoClip, clip_types: Sequence[str] | None = None) -> Iterator[FrameSet]:
    """FrameSets from a store that kept per-frame embeddings, made by ``model``'s weights. Rows
    of a clip type outside ``clip_types`` are skipped; rows stored before clips were classified
    (no ``clip_type``) are scored, as they were then."""
    store.check_weights(model.bundle.name, model.weights_sha256)
    if store.frame_embeddings is None:
        raise UsageError(f"store {store.path} has no per-frame embeddings",
                         hint="zero-shot tasks need them: build it with `echoclip embed --keep-frames --out STORE`")
    for row, frames in zip(store.rows, store.frame_embeddings, strict=True):
        kind = row.get("clip_type")
        if clip_types is not None and kind is not None and kind not in clip_types:
            yield FrameSet(row.get("source", ""), None, row,
                           skipped=f"{kind} clip ({row.get('clip_reason')}), not scored")
            continue
        yield checked(FrameSet(row.get("source", ""), frames, row))
