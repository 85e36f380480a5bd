"""Result records shared by the pipeline, the store and the use cases (numpy only: no torch here,
so reading a store or checking arguments does not load the model stack)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np


@dataclass
class VideoEmbedding:
    """One input's result: its embedding, or the reason it has none."""

    source: str
    embedding: np.ndarray | None = None  # (E,) mean of normalised frame embeddings
    frame_embeddings: np.ndarray | None = None  # (T,E) normalised, when asked for
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None  # why it was not embedded: a clip type the call does not score

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None

    @property
    def n_frames(self) -> int:
        return len(self.meta.get("frame_indices", [])) if self.ok else 0


def study_key(source: str, meta: Mapping[str, Any]) -> str:
    """A video's study: its StudyInstanceUID when it has one, else the folder it lies in."""
    uid = meta.get("study_instance_uid") or meta.get("study_uid")
    return str(uid) if uid else str(Path(source).parent)


@dataclass(kw_only=True)
class Record:
    """A result row. Its fields are the record schema: the names JSONL and CSV carry (README
    "Records"). Fields listed in ``OPTIONAL`` are left out of :meth:`as_dict` while they are None."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        out = {}
        for f in _public(self):
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            out[f.name] = value
        return out

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in _public(cls))


def _public(obj: Any) -> list[Any]:
    """The schema fields (internal bookkeeping fields are left out of records)."""
    return [f for f in fields(obj) if not f.metadata.get("internal")]


def numerics(meta: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """Backend and precision of an embedding: as its store row recorded them, else the model's."""
    if "backend" in meta:
        return {"backend": meta["backend"], "precision": meta.get("precision")}
    return dict(model.numerics)


def identity(meta: Mapping[str, Any], source: str) -> str:
    """What makes two inputs the same object: the SOP Instance UID, else the content hash."""
    return str(meta.get("sop_uid") or meta.get("source_sha256") or source)


@dataclass(kw_only=True)
class VideoRecord(Record):
    """One input's result for one use case; ``error`` says why it has none (then no numbers).
    ``patient_key`` (salted, never the ID) and ``study_date`` place it on a patient and a date,
    where the input carries them (DICOM); they are left out of a record while unknown."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"patient_key", "study_date"})

    level: str = "video"
    source: str
    study: str
    n_frames: int = 0
    weights: str
    weights_sha256: str
    backend: str = "torch"  # what made the image embeddings: torch, or onnx (the cpu-fast extra)
    precision: str | None = None  # fp32, bf16, fp16, or int8 (onnx); None: a store that did not record it
    clip_type: str | None = None  # media.classify: 2d, 2d_colour, spectral_doppler, m_mode, still, not_ultrasound
    clip_reason: str | None = None
    skipped: str | None = None  # why this clip has no numbers although it was read (its type)
    warning: str | None = None  # a decoder's note on a result that stands (e.g. a damaged video tail)
    error: str | None = None
    patient_key: str | None = None
    study_date: str | None = None
    identity: str = field(default="", metadata={"internal": True})  # SOP instance or content hash

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None


@dataclass(kw_only=True)
class StudyRecord(Record):
    """One study's summary for one task: its videos' mean (or, for class labels, the majority),
    with the study's ``patient_key`` and ``study_date`` where its videos carry them."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"patient_key", "study_date"})

    level: str = "study"
    study: str
    task: str
    n_videos: int  # clips whose numbers are averaged (one per SOP instance or content)
    n_skipped: int = 0  # clips of the study left out for their type (still, Doppler, not ultrasound…)
    n_duplicates: int = 0  # copies of a clip already counted (same SOP instance or content)
    weights: str
    weights_sha256: str
    backend: str = "torch"
    precision: str | None = None
    patient_key: str | None = None
    study_date: str | None = None


@dataclass(kw_only=True)
class EmbeddingRecord(VideoRecord):
    """One input's embedding: which weights and preprocessing made it, the DICOM identifiers it
    carries (no patient data: ``patient_key`` is salted), and the vector when asked for."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {"study_uid", "series_uid", "sop_uid", "study_date", "patient_key", "embedding"})

    preprocess: str
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    study_date: str | None = None
    patient_key: str | None = None
    embedding: list[float] | None = None

    @classmethod
    def of(cls, result: VideoEmbedding, model: Any, *, with_vector: bool) -> "EmbeddingRecord":
        meta = result.meta
        vector = ([round(float(x), 6) for x in result.embedding]
                  if with_vector and result.embedding is not None else None)
        return cls(source=result.source, study=study_key(result.source, meta), n_frames=result.n_frames,
                   weights=model.bundle.name, weights_sha256=model.weights_sha256, **numerics(meta, model),
                   preprocess=meta.get("preprocess_digest") or model.preprocess.digest(), error=result.error,
                   clip_type=meta.get("clip_type"), clip_reason=meta.get("clip_reason"), skipped=result.skipped,
                   warning=meta.get("decode_warning"),
                   identity=identity(meta, result.source),
                   **{k: meta.get(k) or None for k in ("study_uid", "series_uid", "sop_uid", "study_date",
                                                       "patient_key")},
                   embedding=vector)


# --------------------------------------------------------------------------- retrieval records


@dataclass(kw_only=True)
class VideoHit(Record):
    """A search hit: one video, ``rank`` 1 the best; ``store`` says where its vector came from (a
    store's path, or ``cache``: the frame-embedding cache)."""

    level: str = "video"
    rank: int
    score: float
    source: str | None
    study: str
    study_date: str | None = None
    store: str | None = None


@dataclass(kw_only=True)
class StudyHit(Record):
    """A search hit: one study (the normalised mean of its videos), with where its videos came from."""

    level: str = "study"
    rank: int
    score: float
    study: str
    n_videos: int
    study_date: str | None = None
    stores: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ReportHit(Record):
    """A report text ranked for one video (``search --video``)."""

    level: str = "report"
    rank: int
    score: float
    id: str
    text: str


@dataclass(kw_only=True)
class Neighbour(Record):
    """One of a study's nearest studies (EchoCLIP-R cosine); ``same_key`` compares their patient
    keys where both carry one."""

    level: str = "neighbour"
    study: str
    rank: int
    other: str
    score: float
    same_patient: bool
    same_key: bool | None = None
    group: str | None = None
    study_date: str | None = None


@dataclass(kw_only=True)
class PatientGroup(Record):
    """Studies that appear to be one patient (connected same-patient pairs)."""

    level: str = "group"
    group: str
    n_studies: int
    studies: list[str]
    score: float  # mean pairwise cosine
    min_score: float
    patient_keys: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Conflict(Record):
    """A patient-key conflict: ``flag`` possible_mislabel, possible_duplicate or
    several_patient_keys; the fields a flag does not use are left out of its record."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {"other", "score", "threshold", "patient_key", "other_patient_key", "patient_keys"})

    level: str = "conflict"
    flag: str
    study: str
    other: str | None = None
    score: float | None = None
    threshold: float | None = None
    patient_key: str | None = None
    other_patient_key: str | None = None
    patient_keys: list[str] | None = None
    detail: str


@dataclass(kw_only=True)
class TimelineEntry(Record):
    """One study in a patient's timeline, scored against its reference (the earliest study, or
    the earliest within the window); ``drop`` when below the threshold."""

    level: str = "timeline"
    patient: str
    patient_source: str  # patient_key, or group (a found same-patient group)
    order: int
    study: str
    study_date: str | None = None
    other: str
    days: int | None = None
    score: float | None = None
    drop: bool = False
    flag: str | None = None
    threshold: float
