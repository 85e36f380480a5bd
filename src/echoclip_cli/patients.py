"""Patient identification with EchoCLIP-R: which studies look like the same heart.

EchoCLIP-R embeds echoes of one patient close together even years apart. The paper (Christensen
et al., Nat Med 2024) reports the mean cosine similarity between EchoCLIP-R video embeddings:

    different patients              0.40
    same patient, another study     0.64
    same study                      0.87
    (patient identification AUC 0.86)

From these the defaults here are derived (all can be changed; calibrate on your own data, e.g. by
checking the ``conflict`` records against studies whose patient keys you trust):

- :data:`SAME_PATIENT_THRESHOLD` **0.52** = the midpoint of 0.40 and 0.64: a pair of studies at or
  above it is called the same patient.
- :data:`MISLABEL_THRESHOLD` **0.40** = the different-patient mean: a study whose *best* similarity
  to the other studies carrying its patient key is no higher than a typical pair of different
  patients is a possible mislabelled study.
- :data:`DUPLICATE_THRESHOLD` **0.64** = the same-patient mean: two studies with *different*
  patient keys that are at least as similar as a typical same-patient pair suggest one patient
  registered twice (a possible duplicate).
- :data:`DROP_THRESHOLD` **0.52** = the midpoint again: in a timeline, a study whose similarity to
  the patient's reference study falls below it looks more like another heart than the same one
  (the paper detected heart transplant, AUC 0.79, and cardiac surgery, AUC 0.77, by comparing
  each echo within 200 days of the event with the earliest echo in that window).

A study's vector is the normalised mean of its videos' normalised embeddings. The paper's means
are between single videos; averaging a study's videos removes some acquisition noise, so study
similarities run somewhat higher than the paper's video-level numbers (for studies of one video
they are the same statistic).

All-pairs similarity is computed in blocks of rows (one matrix product per block, on the GPU when
there is one), so memory stays at one block of scores: each study's nearest ``k`` studies and the
pairs above the thresholds are kept, never the full S×S matrix. Groups of studies that appear to be
one patient are the connected components of the same-patient pairs (union-find).
"""

from __future__ import annotations

import dataclasses

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from .defaults import (DEFAULT_K, DIFFERENT_PATIENT_MEAN, DROP_THRESHOLD, DUPLICATE_THRESHOLD,  # noqa: F401
                       MISLABEL_THRESHOLD, SAME_PATIENT_MEAN, SAME_PATIENT_THRESHOLD)
from .errors import UsageError
from .records import Conflict, Neighbour, PatientGroup, Record, TimelineEntry
from .retrieval import Studies, group_studies

# Scores held per block of the all-pairs product: 16 M floats = 64 MiB.
BLOCK_ELEMENTS = 1 << 24
# Pairs above the thresholds kept in memory at most (~1 GiB of Python tuples): a threshold so low
# that more pairs pass says nothing about patients anyway.
MAX_PAIRS = 10_000_000


@dataclass
class MatchSettings:
    """Thresholds and options of :func:`match_patients` (defaults derived in the module doc)."""

    k: int = DEFAULT_K
    threshold: float = SAME_PATIENT_THRESHOLD
    mislabel_threshold: float = MISLABEL_THRESHOLD
    duplicate_threshold: float = DUPLICATE_THRESHOLD
    timeline: bool = False
    drop_threshold: float = DROP_THRESHOLD
    window_days: int | None = None
    device: str = "auto"  # where the study similarities are computed (a model's own device when it embeds)


@dataclass
class PatientMatches:
    """Everything :func:`match_patients` found, as typed records (:mod:`echoclip_cli.records`;
    ``record.as_dict()`` is the JSONL line)."""

    studies: Studies
    neighbours: list[Neighbour] = field(default_factory=list)
    groups: list[PatientGroup] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)

    warnings: tuple[str, ...] = ()  # e.g. the weights are not EchoCLIP-R (for the caller to show)
    failures: tuple[str, ...] = ()  # inputs that could not be embedded, one reason each

    def records(self) -> list[Record]:
        """Every record: neighbours, groups, conflicts, then the timeline."""
        return [*self.neighbours, *self.groups, *self.conflicts, *self.timeline]

    def with_notes(self, *, warnings: Sequence[str] = (), failures: Sequence[str] = ()) -> "PatientMatches":
        return dataclasses.replace(self, warnings=tuple(warnings), failures=tuple(failures))


NOT_R_WARNING = ("{name} is not EchoCLIP-R: the paper validated patient identification and change detection with "
                 "EchoCLIP-R (echo-clip-r); similarities from other weights do not follow its thresholds")


def is_retrieval_weights(name: str, sha256: str) -> bool:
    """Whether weights are EchoCLIP-R (template tokenizer), judged from the installed bundle with
    that sha256 (never by resolving ``name`` as a path); by name when none is installed."""
    from .defaults import RETRIEVAL_WEIGHTS
    from .weights import installed_by_sha256

    bundle = installed_by_sha256(sha256, prefer=name)
    if bundle is None:
        return name == RETRIEVAL_WEIGHTS
    return bundle.tokenizer_kind == "template"


# --------------------------------------------------------------------------- all pairs


@dataclass
class PairScan:
    """Output of :func:`scan_pairs`: each row's nearest neighbours and the pairs above a floor."""

    top_scores: np.ndarray  # (S,k)
    top_index: np.ndarray  # (S,k)
    pairs: list[tuple[int, int, float]]  # i < j, score >= floor


def scan_pairs(vectors: np.ndarray, k: int, floor: float, *, device: str | torch.device = "auto",
               block_rows: int | None = None, max_pairs: int = MAX_PAIRS) -> PairScan:
    """Nearest ``k`` other rows of each row, and every pair (i<j) scoring ``floor`` or more.

    ``vectors`` must be normalised (S,E). Rows are scored in blocks against all rows, so at most
    ``block_rows × S`` scores exist at once.
    """
    from .device import resolve_device

    n = len(vectors)
    dev = resolve_device(device)
    matrix = torch.as_tensor(np.ascontiguousarray(vectors, dtype=np.float32)).to(dev)
    block_rows = block_rows or max(1, min(n, BLOCK_ELEMENTS // max(n, 1)))
    kk = min(k, n - 1)
    top_scores, top_index, pairs = [], [], []
    for start in range(0, n, block_rows):
        scores = matrix[start : start + block_rows] @ matrix.T  # (b,S)
        rows = torch.arange(scores.shape[0], device=dev)
        scores[rows, rows + start] = -float("inf")  # a study is not its own neighbour
        if kk > 0:
            values, index = torch.topk(scores, kk, dim=1)
            top_scores.append(values.cpu())
            top_index.append(index.cpu())
        hits = (scores >= floor).nonzero()
        hits = hits[hits[:, 1] > hits[:, 0] + start]  # each pair once
        values = scores[hits[:, 0], hits[:, 1]].tolist()
        pairs.extend((i + start, j, v) for (i, j), v in zip(hits.tolist(), values))
        if len(pairs) > max_pairs:
            raise UsageError(f"more than {max_pairs:,} study pairs score {floor} or more",
                             hint="raise --threshold / --duplicate-threshold")
    if kk > 0:
        return PairScan(torch.cat(top_scores).numpy(), torch.cat(top_index).numpy(), pairs)
    return PairScan(np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64), pairs)


def connected_groups(n: int, edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (union-find) of ``n`` nodes; only those of two or more, in order."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[find(i)].append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


# --------------------------------------------------------------------------- records


def _neighbour_records(studies: Studies, scan: PairScan, threshold: float,
                       group_of: Mapping[int, str]) -> list[Neighbour]:
    records = []
    for i, key in enumerate(studies.keys):
        mine = studies.info[i].get("patient_key")
        for rank, (score, j) in enumerate(zip(scan.top_scores[i], scan.top_index[i]), start=1):
            theirs = studies.info[int(j)].get("patient_key")
            records.append(Neighbour(
                study=key, rank=rank, other=studies.keys[int(j)], score=round(float(score), 5),
                same_patient=bool(score >= threshold), same_key=(mine == theirs) if mine and theirs else None,
                group=group_of.get(i), study_date=studies.info[i].get("study_date"),
            ))
    return records


def _group_records(studies: Studies, groups: list[list[int]]) -> list[PatientGroup]:
    records = []
    for number, members in enumerate(groups, start=1):
        vectors = studies.vectors[members]
        sims = vectors @ vectors.T
        upper = sims[np.triu_indices(len(members), k=1)]
        keys = sorted({k for m in members for k in studies.info[m]["patient_keys"]})
        records.append(PatientGroup(
            group=f"G{number}", n_studies=len(members), studies=[studies.keys[m] for m in members],
            score=round(float(upper.mean()), 5), min_score=round(float(upper.min()), 5), patient_keys=keys,
        ))
    return records


def _by_patient_key(studies: Studies) -> dict[str, list[int]]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, info in enumerate(studies.info):
        if info.get("patient_key"):
            by_key[info["patient_key"]].append(i)
    return by_key


def _mislabel_records(studies: Studies, threshold: float) -> list[Conflict]:
    """Studies whose best match among their own patient key's studies is below ``threshold``."""
    records = []
    for key, members in _by_patient_key(studies).items():
        if len(members) < 2:
            continue
        sims = studies.vectors[members] @ studies.vectors[members].T
        np.fill_diagonal(sims, -np.inf)
        for row, i in enumerate(members):
            best = int(np.argmax(sims[row]))
            if sims[row, best] < threshold:
                records.append(Conflict(
                    flag="possible_mislabel", study=studies.keys[i], other=studies.keys[members[best]],
                    score=round(float(sims[row, best]), 5), threshold=threshold, patient_key=key,
                    other_patient_key=key,
                    detail=f"resembles none of the other {len(members) - 1} studies with its patient key",
                ))
    return records


def _duplicate_records(studies: Studies, pairs: Sequence[tuple[int, int, float]],
                       threshold: float) -> list[Conflict]:
    """Pairs of studies with different patient keys but a same-patient similarity."""
    records = []
    for i, j, score in pairs:
        a, b = studies.info[i].get("patient_key"), studies.info[j].get("patient_key")
        if a and b and a != b and score >= threshold:
            records.append(Conflict(
                flag="possible_duplicate", study=studies.keys[i], other=studies.keys[j], score=round(score, 5),
                threshold=threshold, patient_key=a, other_patient_key=b,
                detail="different patient keys, same-patient similarity",
            ))
    return records


def _mixed_key_records(studies: Studies) -> list[Conflict]:
    return [Conflict(flag="several_patient_keys", study=key, patient_keys=info["patient_keys"],
                     detail="the videos of one study carry different patient keys")
            for key, info in zip(studies.keys, studies.info) if len(info["patient_keys"]) > 1]


# --------------------------------------------------------------------------- timeline


def parse_study_date(value: Any) -> date | None:
    """A DICOM ``YYYYMMDD`` (or ISO ``YYYY-MM-DD``) date; ``None`` when absent or invalid."""
    text = str(value or "").strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(text[:10] if "-" in text else text[:8], fmt).date()
        except ValueError:
            continue
    return None


def _patients_for_timeline(studies: Studies, groups: list[list[int]]) -> dict[tuple[str, str], list[int]]:
    """Studies per patient: by patient key where a study has one, else by found group."""
    group_of = {m: f"G{n}" for n, members in enumerate(groups, start=1) for m in members}
    patients: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, info in enumerate(studies.info):
        if info.get("patient_key"):
            patients[("patient_key", info["patient_key"])].append(i)
        elif i in group_of:
            patients[("group", group_of[i])].append(i)
    return {p: m for p, m in patients.items() if len(m) > 1}


def _reference(order: list[int], dates: Mapping[int, date | None], pos: int, window_days: int | None) -> int:
    """The earliest dated study (within ``window_days`` before study ``pos`` when given)."""
    current = dates[order[pos]]
    if window_days is None or current is None:
        return order[0]
    for i in order[: pos + 1]:
        if dates[i] is not None and (current - dates[i]).days <= window_days:
            return i
    return order[pos]


def _timeline_records(studies: Studies, groups: list[list[int]], drop_threshold: float,
                      window_days: int | None) -> list[TimelineEntry]:
    records = []
    dates = {i: parse_study_date(info.get("study_date")) for i, info in enumerate(studies.info)}
    for (source, patient), members in sorted(_patients_for_timeline(studies, groups).items()):
        order = sorted(members, key=lambda i: (dates[i] is None, dates[i] or date.min, studies.keys[i]))
        for pos, i in enumerate(order):
            ref = _reference(order, dates, pos, window_days)
            score = None if ref == i else float(studies.vectors[i] @ studies.vectors[ref])
            days = (dates[i] - dates[ref]).days if dates[i] and dates[ref] else None
            drop = score is not None and score < drop_threshold
            flag = "reference" if ref == i else ("drop" if drop else ("no_date" if dates[i] is None else None))
            records.append(TimelineEntry(
                patient=patient, patient_source=source, order=pos + 1, study=studies.keys[i],
                study_date=studies.info[i].get("study_date"), other=studies.keys[ref], days=days,
                score=None if score is None else round(score, 5), drop=drop, flag=flag, threshold=drop_threshold,
            ))
    return records


# --------------------------------------------------------------------------- entry point


def _check(settings: MatchSettings) -> None:
    if settings.k < 0:
        raise UsageError("--top-k must be 0 or more")
    for name in ("threshold", "mislabel_threshold", "duplicate_threshold", "drop_threshold"):
        value = getattr(settings, name)
        if not -1.0 <= value <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be a cosine similarity in [-1, 1], not {value}")
    if settings.window_days is not None and settings.window_days < 0:
        raise UsageError("--window-days must be 0 or more")


def match_patients(embeddings: np.ndarray, rows: Sequence[Mapping[str, Any]], settings: MatchSettings | None = None,
                   *, device: str | torch.device = "auto", block_rows: int | None = None) -> PatientMatches:
    """Neighbours, same-patient groups, patient-key conflicts and (optionally) timelines of studies.

    ``embeddings`` (N,E) and ``rows`` are videos, as in :class:`echoclip_cli.store.Store`; videos
    are grouped into studies by StudyInstanceUID (else folder) first.
    """
    settings = settings or MatchSettings()
    _check(settings)
    if len(rows) == 0:
        raise UsageError("no videos to match")
    studies = group_studies(embeddings, rows)
    floor = min(settings.threshold, settings.duplicate_threshold)
    scan = scan_pairs(studies.vectors, settings.k, floor, device=device, block_rows=block_rows)
    groups = connected_groups(len(studies), ((i, j) for i, j, s in scan.pairs if s >= settings.threshold))
    group_of = {m: f"G{n}" for n, members in enumerate(groups, start=1) for m in members}
    result = PatientMatches(studies)
    result.neighbours = _neighbour_records(studies, scan, settings.threshold, group_of)
    result.groups = _group_records(studies, groups)
    result.conflicts = [*_mislabel_records(studies, settings.mislabel_threshold),
                        *_duplicate_records(studies, scan.pairs, settings.duplicate_threshold),
                        *_mixed_key_records(studies)]
    if settings.timeline:
        result.timeline = _timeline_records(studies, groups, settings.drop_threshold, settings.window_days)
    return result


__all__ = [
    "DROP_THRESHOLD", "DUPLICATE_THRESHOLD", "MISLABEL_THRESHOLD", "MatchSettings", "PairScan", "PatientMatches",
    "SAME_PATIENT_THRESHOLD", "connected_groups", "match_patients", "parse_study_date", "scan_pairs",
]
