"""Zero-shot tasks over videos: EF prediction, device detection, other findings.

Library entry points return plain records (dicts ready for JSONL/CSV), one per video and one per
study, each naming the weights, prompts and aggregation used; a failed input is a record with
``error`` set. Frame embeddings come from the embedding pipeline or, with a store that kept them,
from the store, so nothing is embedded twice. Prompt embeddings come from the text cache.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import zeroshot
from .errors import UsageError
from .inference import EchoClip
from .prompts import Task
from .text_embed import TextEmbeddingCache, embed_token_ids
from .tokenizer import tokenizer_for

DEVICE_TASKS = ("pacemaker", "tavr", "mitraclip", "impella")
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


def _base(fs: FrameSet, model: EchoClip) -> dict[str, Any]:
    return {
        "level": "video",
        "source": fs.source,
        "study": study_key(fs),
        "n_frames": int(fs.frames.shape[0]) if fs.frames is not None else 0,
        "weights": model.bundle.name,
        "weights_sha256": model.weights_sha256,
    }


def study_key(fs: FrameSet) -> str:
    """StudyInstanceUID when the input had one, else its folder."""
    uid = fs.meta.get("study_instance_uid") or fs.meta.get("study_uid")
    return str(uid) if uid else str(Path(fs.source).parent)


def _error_record(fs: FrameSet, model: EchoClip) -> dict[str, Any]:
    return {**_base(fs, model), "error": fs.error}


def ef_records(
    frame_sets: Iterable[FrameSet], model: EchoClip, prepared: PreparedTask, aggregation: str = "released"
) -> Iterator[dict[str, Any]]:
    """One record per video: the EF estimate, its frames, and how much single frames disagree.

    ``single_frame_ef_sd`` is the standard deviation of the EFs each frame alone would give; the
    video's EF averages the frames' rankings first, so it is not bounded by those single-frame EFs.
    """
    for fs in frame_sets:
        if fs.error is not None or fs.frames is None:
            yield _error_record(fs, model)
            continue
        result = zeroshot.regression(fs.frames, prepared.prompts, prepared.values, aggregation)
        yield {
            **_base(fs, model),
            "task": prepared.task.name,
            "ef": round(result.estimate, 2),
            "single_frame_ef_sd": round(result.single_frame_sd, 2),
            "aggregation": aggregation,
            "prompts": prepared.prompt_source,
            "error": None,
        }


def binary_records(
    frame_sets: Iterable[FrameSet],
    model: EchoClip,
    prepared: Sequence[PreparedTask],
    thresholds: Mapping[str, float],
) -> Iterator[dict[str, Any]]:
    """One record per video and task: score, threshold (published or user's) and the call."""
    for fs in frame_sets:
        if fs.error is not None or fs.frames is None:
            yield _error_record(fs, model)
            continue
        for p in prepared:
            score = zeroshot.binary_score(fs.frames, p.prompts)
            threshold = thresholds.get(p.task.name, p.task.threshold)
            source = "user" if p.task.name in thresholds else (p.task.threshold_source if threshold is not None else None)
            yield {
                **_base(fs, model),
                "task": p.task.name,
                "score": round(score, 5),
                "threshold": threshold,
                "calibrated": threshold is not None,
                "detected": bool(score >= threshold) if threshold is not None else None,
                "threshold_source": source,
                "prompts": p.prompt_source,
                "error": None,
            }


def categorical_records(
    frame_sets: Iterable[FrameSet], model: EchoClip, prepared: PreparedTask
) -> Iterator[dict[str, Any]]:
    for fs in frame_sets:
        if fs.error is not None or fs.frames is None:
            yield _error_record(fs, model)
            continue
        scores = zeroshot.categorical_scores(fs.frames, prepared.classes or {})
        best = max(scores, key=scores.get)
        yield {**_base(fs, model), "task": prepared.task.name, "prediction": best,
               "scores": {k: round(v, 5) for k, v in scores.items()}, "prompts": prepared.prompt_source, "error": None}


def regression_records(
    frame_sets: Iterable[FrameSet], model: EchoClip, prepared: PreparedTask, aggregation: str = "released"
) -> Iterator[dict[str, Any]]:
    for record in ef_records(frame_sets, model, prepared, aggregation):
        if record.get("error") is None:
            record = {**record, "value": record.pop("ef"), "unit": prepared.task.unit,
                      "single_frame_sd": record.pop("single_frame_ef_sd")}
        yield record


def study_records(records: Sequence[Mapping[str, Any]], value_key: str) -> list[dict[str, Any]]:
    """Per study (and task): the mean of its videos' values and how many videos gave one."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("error") is None and r.get(value_key) is not None:
            groups[(r["study"], r.get("task", ""))].append(r)
    out = []
    for (study, task), members in groups.items():
        first = members[0]
        record = {"level": "study", "study": study, "task": task, value_key: _study_value([m[value_key] for m in members]),
                  "n_videos": len(members), "weights": first["weights"], "weights_sha256": first["weights_sha256"]}
        for key in ("threshold", "aggregation", "prompts"):
            if key in first:
                record[key] = first[key]
        if first.get("threshold") is not None:
            record["detected"] = bool(record[value_key] >= first["threshold"])
        out.append(record)
    return out


def _study_value(values: Sequence[Any]) -> Any:
    """Mean of numbers; for class labels, the most frequent (ties: first seen)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return round(float(np.mean(values)), 5)
    return max(dict.fromkeys(values), key=list(values).count)


def frame_sets_from_results(results: Iterable[Any]) -> Iterator[FrameSet]:
    """FrameSets from :func:`echoclip_cli.pipeline.embed_videos` results (``keep_frames=True``)."""
    for r in results:
        yield FrameSet(r.source, r.frame_embeddings, r.meta, r.error)


def frame_sets_from_store(store: Any, model: EchoClip) -> Iterator[FrameSet]:
    """FrameSets from a store that kept per-frame embeddings, made by ``model``'s weights."""
    if store.weights_sha256 != model.weights_sha256:
        raise UsageError(
            f"store {store.path} was made with weights {store.header['weights']['name']}, not {model.bundle.name}",
            hint="pass the --weights the store was made with",
        )
    if store.frame_embeddings is None:
        raise UsageError(f"store {store.path} has no per-frame embeddings",
                         hint="zero-shot tasks need them: build it with `echoclip embed --keep-frames --out STORE`")
    for row, frames in zip(store.rows, store.frame_embeddings):
        yield FrameSet(row.get("source", ""), frames, row)
