"""Search: rank stored videos and studies by a text query, or report texts by a video.

Three parts, each usable on its own:

1. **Exact cosine top-k** (:func:`topk_cosine`, :class:`VectorIndex`): one matrix product per
   chunk of database rows, ``torch.topk`` per chunk, and a running merge of the per-chunk winners,
   so memory stays at one chunk of scores (at most :data:`SCORE_BUDGET` floats) however many
   vectors there are. Exact (no approximate index): with one million 512-d fp32 vectors a query
   is one pass over 2 GB of memory, 75-150 ms on a 2-core CPU (``bench/bench_search.py``).
2. **Query understanding** (:func:`understand_query`): EchoCLIP-R's template tokenizer only knows
   its 770 report sentences, so free text such as ``"severe MR"`` would encode to nothing. The
   query is rewritten in report language (abbreviations expanded, severity words and numbers
   normalised) and matched onto the report-template phrases; the phrase's ``<#>`` slots are filled
   with the query's severities and numbers, so the model embeds a sentence it was trained on.
   With EchoCLIP (BPE tokenizer) the rewritten free text is embedded as it is.
3. **Ranking** (:func:`search_store`, :func:`rank_reports`): videos and studies of an embedding
   store by a query, or a corpus of report texts by one video. :func:`pool` joins several stores
   of one weights (and the frame cache) into one, each row naming the store it came from.

Query understanding lives in :mod:`echoclip_cli.query`.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from .errors import UsageError
from .query import QueryPlan, understand_query
from .records import ReportHit, StudyHit, VideoHit, study_key

if TYPE_CHECKING:
    from .inference import EchoClip
    from .store import Store
    from .tokenizer import Tokenizer

# Scores held at once by topk_cosine: 2^26 floats = 256 MiB. Chunks are sized from this budget
# (rows = budget / queries), so a single query scores up to 67 M rows in one product. Measured on
# the 2-core CPU with 1M × 512 vectors: one product per query 75-150 ms; 16 chunks of 65,536 rows
# the same when both cores are free but up to 250 ms when another tenant holds a core (each chunk's
# two-thread product waits for the slower thread), so the fewer synchronisation points the better.
SCORE_BUDGET = 1 << 26
# --------------------------------------------------------------------------- exact top-k


def as_matrix(vectors: np.ndarray | torch.Tensor, *, normalise_rows: bool = True) -> torch.Tensor:
    """A contiguous fp32 (N,E) tensor, each row L2-normalised (zero rows stay zero)."""
    matrix = vectors if isinstance(vectors, torch.Tensor) else torch.from_numpy(np.asarray(vectors))
    matrix = matrix.to(torch.float32)
    if matrix.ndim == 1:
        matrix = matrix[None]
    if normalise_rows:
        matrix = torch.nn.functional.normalize(matrix, dim=-1)
    return matrix.contiguous()


def topk_cosine(
    matrix: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    *,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and row indices (Q,k), best first, of the ``k`` rows of ``matrix`` nearest each query.

    ``matrix`` (N,E) and ``queries`` (Q,E) or (E,) should be L2-normalised already (then the dot
    product is the cosine). Exact: chunks of ``chunk_rows`` rows (default: as many as
    :data:`SCORE_BUDGET` allows) are scored by one matrix product (``torch.mv`` for a single
    query, which reads the chunk once), their top ``k`` kept, and the winners merged with the
    running best. Works on whatever device ``matrix`` is on.
    """
    queries = queries.to(device=matrix.device, dtype=matrix.dtype)
    if queries.ndim == 1:
        queries = queries[None]
    n_queries, n_rows = queries.shape[0], matrix.shape[0]
    chunk_rows = chunk_rows or max(1, SCORE_BUDGET // max(n_queries, 1))
    k = min(k, n_rows)
    best_scores = torch.empty((n_queries, 0), device=matrix.device)
    best_index = torch.empty((n_queries, 0), dtype=torch.long, device=matrix.device)
    if k <= 0:
        return best_scores, best_index
    for start in range(0, n_rows, chunk_rows):
        block = matrix[start : start + chunk_rows]
        if n_queries == 1:
            scores = torch.mv(block, queries[0])[None]  # (1,c)
        else:
            scores = queries @ block.T  # (Q,c)
        top_scores, top_index = torch.topk(scores.float(), min(k, scores.shape[1]), dim=1)
        merged_scores = torch.cat([best_scores, top_scores], dim=1)
        merged_index = torch.cat([best_index, top_index + start], dim=1)
        best_scores, order = torch.topk(merged_scores, min(k, merged_scores.shape[1]), dim=1)
        best_index = merged_index.gather(1, order)
    return best_scores, best_index


class VectorIndex:
    """Normalised vectors held once (contiguous, fp32 or fp16) for repeated exact top-k queries."""

    def __init__(
        self,
        vectors: np.ndarray | torch.Tensor,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        chunk_rows: int | None = None,
    ) -> None:
        from .device import resolve_device

        self.device = resolve_device(device)
        self.matrix = as_matrix(vectors).to(device=self.device, dtype=dtype).contiguous()
        self.chunk_rows = chunk_rows

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) as numpy arrays (Q,k) for normalised or raw query vectors."""
        q = as_matrix(queries).to(self.device)
        scores, index = topk_cosine(self.matrix, q, k, chunk_rows=self.chunk_rows)
        return scores.float().cpu().numpy(), index.cpu().numpy()


# --------------------------------------------------------------------------- studies


@dataclass
class Studies:
    """Videos grouped into studies: one normalised vector per study and what its videos say."""

    keys: list[str]  # StudyInstanceUID, else the folder of the video
    vectors: np.ndarray  # (S,E) float32, normalised mean of the videos' normalised embeddings
    members: list[list[int]]  # video indices of each study
    info: list[dict[str, Any]]  # per study: n_videos, study_date, patient_key(s)

    def __len__(self) -> int:
        return len(self.keys)


def study_of(source: str, meta: Mapping[str, Any]) -> str:
    """A video's study: StudyInstanceUID when it has one, else its folder (one rule for every use case)."""
    return study_key(source, meta)


def group_studies(embeddings: np.ndarray, rows: Sequence[Mapping[str, Any]]) -> Studies:
    """Study vectors: the normalised mean of each study's normalised video embeddings."""
    videos = as_matrix(embeddings).numpy()
    by_study: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_study[study_of(str(row.get("source", "")), row)].append(i)
    keys = list(by_study)
    members = [by_study[key] for key in keys]
    dim = videos.shape[1] if videos.ndim == 2 else 0
    means = np.stack([videos[m].mean(axis=0) for m in members]) if members else np.zeros((0, dim), np.float32)
    return Studies(keys, as_matrix(means).numpy(), members, [_study_info(rows, m) for m in members])


def _study_info(rows: Sequence[Mapping[str, Any]], members: list[int]) -> dict[str, Any]:
    dates = sorted({str(rows[i]["study_date"]) for i in members if rows[i].get("study_date")})
    keys = sorted({str(rows[i]["patient_key"]) for i in members if rows[i].get("patient_key")})
    return {
        "n_videos": len(members),
        "study_date": dates[0] if dates else None,
        "patient_key": keys[0] if len(keys) == 1 else None,
        "patient_keys": keys,
        "stores": sorted({str(rows[i]["store"]) for i in members if rows[i].get("store")}),  # see pool()
    }


# --------------------------------------------------------------------------- ranking


def embed_query(model: "EchoClip", plan: QueryPlan, *, use_cache: bool = True) -> np.ndarray:
    """The query vector (E,): the normalised mean of the normalised embeddings of the plan's texts."""
    from .text_embed import embed_ids

    ids = torch.tensor(plan.padded, dtype=torch.long)  # (T,L): exactly the ids --explain shows, padded
    vectors = as_matrix(embed_ids(model, ids, use_cache=use_cache))
    return as_matrix(vectors.mean(dim=0)).numpy()[0]


def rank_videos(store: "Store", query_vector: np.ndarray, k: int, *, studies: Studies | None = None,
                level: str = "both") -> list[VideoHit | StudyHit]:
    """Records (best first) for the top-``k`` videos and/or studies of a store for one vector."""
    if level not in ("video", "study", "both"):
        raise UsageError(f"--level must be video, study or both, not {level!r}")
    records: list[VideoHit | StudyHit] = []
    if level in ("video", "both"):
        scores, index = VectorIndex(store.embeddings).search(query_vector, k)
        for rank, (score, i) in enumerate(zip(scores[0], index[0]), start=1):
            row = store.rows[int(i)]
            records.append(VideoHit(rank=rank, score=round(float(score), 5), source=row.get("source"),
                                    study=study_of(str(row.get("source", "")), row),
                                    study_date=row.get("study_date"), store=row.get("store")))
    if level in ("study", "both"):
        studies = studies or group_studies(store.embeddings, store.rows)
        scores, index = VectorIndex(studies.vectors).search(query_vector, k)
        for rank, (score, i) in enumerate(zip(scores[0], index[0]), start=1):
            info = studies.info[int(i)]
            records.append(StudyHit(rank=rank, score=round(float(score), 5), study=studies.keys[int(i)],
                                    n_videos=info["n_videos"], study_date=info["study_date"], stores=info["stores"]))
    return records


def pool(labelled: Sequence[tuple[str, "Store"]]) -> "Store":
    """Several stores of one weights searched as one: every row gains ``store``, the label of
    the store it came from (its path, or ``cache``); a video held twice (same content, e.g. in a
    store and in the frame cache) counts once, from the first store that holds it."""
    from .store import Store

    if not labelled:
        raise ValueError("pool needs at least one store")
    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    seen: set[str] = set()
    for label, store in labelled:
        keep = []
        for i, row in enumerate(store.rows):
            key = str(row.get("source_sha256") or row.get("source"))
            if key not in seen:
                seen.add(key)
                keep.append(i)
                rows.append({**row, "store": label})
        vectors.append(store.embeddings[keep])
    first = labelled[0][1]
    damaged = [message for _, store in labelled for message in store.damaged]
    return Store(first.path, first.header, np.concatenate(vectors).astype(np.float32), rows, damaged=damaged)


@dataclass
class SearchResult:
    plan: QueryPlan
    records: list[VideoHit | StudyHit]  # typed (echoclip_cli.records); .as_dict() is the JSONL line
    warnings: tuple[str, ...] = ()  # e.g. store parts left out as damaged
    notes: tuple[str, ...] = ()  # what was searched, when echoclip chose it (no --store)


def search_store(store: "Store", model: "EchoClip", query: str, *, k: int = 10, level: str = "both",
                 tokenizer: "Tokenizer | None" = None) -> SearchResult:
    """Rank a store's videos and studies by a text query (understood as in :func:`understand_query`)."""
    from .tokenizer import tokenizer_for

    store.check_weights(model.bundle.name, model.weights_sha256)
    if len(store) == 0:
        raise UsageError(f"store {store.path} holds no videos")
    plan = understand_query(query, tokenizer or tokenizer_for(model.bundle))
    return SearchResult(plan, rank_videos(store, embed_query(model, plan), k, level=level))


@dataclass(frozen=True)
class Report:
    id: str
    text: str


def read_reports(path: str | os.PathLike[str]) -> list[Report]:
    """Report texts: CSV with ``id`` and ``text`` columns, JSONL with id/text, or text one per line."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read reports {path}: {exc.strerror or type(exc).__name__}") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        reports = _reports_jsonl(path, raw)
    elif path.suffix.lower() == ".csv":
        reports = _reports_csv(path, raw)
    else:
        reports = [Report(str(i), line.strip()) for i, line in enumerate(raw.splitlines(), start=1) if line.strip()]
    if not reports:
        raise UsageError(f"{path} holds no reports")
    return reports


def _reports_csv(path: Path, raw: str) -> list[Report]:
    reader = csv.DictReader(raw.splitlines())
    fields = {f.lower().strip(): f for f in reader.fieldnames or []}
    if "id" not in fields or "text" not in fields:
        raise UsageError(f"{path}: a reports CSV needs 'id' and 'text' columns (has {', '.join(fields) or 'none'})")
    return [Report(str(row[fields["id"]]), str(row[fields["text"]] or "")) for row in reader
            if (row[fields["text"]] or "").strip()]


def _reports_jsonl(path: Path, raw: str) -> list[Report]:
    reports = []
    for line_no, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path}:{line_no}: not a JSON object") from None
        if not isinstance(item, dict) or "text" not in item:
            raise UsageError(f"{path}:{line_no}: each line needs an 'id' and a 'text'")
        reports.append(Report(str(item.get("id", line_no)), str(item["text"])))
    return [r for r in reports if r.text.strip()]


@dataclass
class ReportRanking:
    records: list[ReportHit]
    skipped: list[str]  # ids of reports the tokenizer found nothing in
    n_reports: int = 0  # reports read


def rank_reports(video_vector: np.ndarray, reports: Sequence[Report], model: "EchoClip", k: int,
                 *, tokenizer: "Tokenizer | None" = None) -> ReportRanking:
    """Rank report texts by cosine to one video; reports with no known phrase are left out."""
    from .text_embed import embed_ids
    from .tokenizer import tokenizer_for

    tokenizer = tokenizer or tokenizer_for(model.bundle)
    encodings = [tokenizer.encode(r.text) for r in reports]
    keep = [i for i, e in enumerate(encodings) if len(e.pieces) > 2]
    kept = set(keep)
    skipped = [reports[i].id for i in range(len(reports)) if i not in kept]
    if not keep:
        raise UsageError("no report holds a sentence the model's tokenizer knows")
    ids = torch.tensor([encodings[i].ids for i in keep], dtype=torch.long)
    matrix = as_matrix(embed_ids(model, ids))
    scores, index = topk_cosine(matrix, as_matrix(video_vector)[0], k)
    records = []
    for rank, (score, j) in enumerate(zip(scores[0].tolist(), index[0].tolist()), start=1):
        report = reports[keep[j]]
        records.append(ReportHit(rank=rank, score=round(score, 5), id=report.id,
                                 text=report.text if len(report.text) <= 200 else report.text[:197] + "..."))
    return ReportRanking(records, skipped, len(reports))


__all__ = [
    "SCORE_BUDGET", "Report", "ReportRanking", "SearchResult", "Studies", "VectorIndex", "embed_query",
    "group_studies", "pool", "rank_reports", "rank_videos", "read_reports", "search_store", "study_of", "topk_cosine",
]
