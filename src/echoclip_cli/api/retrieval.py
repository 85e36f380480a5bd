"""Retrieval use cases (EchoCLIP-R): report search, reports ranked for a video, patient matching.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model(store="archive.store")     # the weights that made the store
    >>> echoclip_cli.search(model, "severe MR", "archive.store").records
    >>> echoclip_cli.match_patients(model, store="archive.store").groups
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import UsageError
from ..options import DEFAULT, RunOptions
from .common import PathLike, Progress, check_model, check_vocab, damage_notes, inputs_or_store, store_header
from .embed import embed_files

if TYPE_CHECKING:
    from ..inference import EchoClip
    from ..patients import MatchSettings, PatientMatches
    from ..retrieval import ReportRanking, SearchResult

PATIENT_TYPES = ("2d", "2d_colour")  # clips patient matching compares (videos; colour flow keeps its tissue)


def check_search(query: str, store: PathLike, *, level: str = "both", template_vocab: PathLike | None = None) -> None:
    """Everything :func:`search` refuses, checked without loading anything heavy."""
    if not query.strip():
        raise UsageError("the query is empty")
    if level not in ("video", "study", "both"):
        raise UsageError(f"level must be video, study or both, not {level!r}")
    check_vocab(template_vocab)
    store_header(store)


def search(model: "EchoClip", query: str, store: PathLike, *, k: int = 10, level: str = "both",
           template_vocab: PathLike | None = None) -> "SearchResult":
    """Rank a store's videos and studies by report text; ``result.records`` are the hits
    (``level`` video or study, best first) and ``result.plan`` says what was embedded."""
    check_search(query, store, level=level, template_vocab=template_vocab)
    from ..retrieval import search_store
    from ..store import read_store
    from ..tokenizer import tokenizer_for

    check_model(model, "search", store)
    tokenizer = tokenizer_for(model.bundle, template_vocab=template_vocab)
    loaded = read_store(store)
    result = search_store(loaded, model, query, k=k, level=level, tokenizer=tokenizer)
    return dataclasses.replace(result, warnings=tuple(damage_notes(loaded)))


def search_reports(model: "EchoClip", video: PathLike, reports: PathLike, *, k: int = 10,
                   template_vocab: PathLike | None = None) -> "ReportRanking":
    """Rank report texts (CSV id,text / JSONL / one per line) by how well they describe ``video``."""
    for path in (video, reports):
        if not Path(path).is_file():
            raise UsageError(f"no such file: {path}")
    check_vocab(template_vocab)
    from ..errors import MediaError
    from ..retrieval import rank_reports, read_reports
    from ..tokenizer import tokenizer_for

    check_model(model, "search")
    tokenizer = tokenizer_for(model.bundle, template_vocab=template_vocab)
    corpus = read_reports(Path(reports))
    result = next(iter(embed_files(model, [Path(video)])))
    if result.error is not None or result.embedding is None:
        raise MediaError(result.error or f"{video}: no embedding")
    return rank_reports(result.embedding, corpus, model, k, tokenizer=tokenizer)


def match_patients(
    model: "EchoClip | None",
    inputs: Sequence[PathLike] | None = None,
    *,
    store: PathLike | None = None,
    options: RunOptions = DEFAULT,
    settings: "MatchSettings | None" = None,
    progress: Progress | None = None,
) -> "PatientMatches":
    """Same-patient neighbours, groups, patient-key conflicts (and timelines) of the studies in
    ``inputs`` (embedded now with ``model``, EchoCLIP-R) or in a ``store`` (its vectors; ``model``
    may then be None, else it must be the store's weights). The result's ``warnings`` say when the
    weights are not EchoCLIP-R, and its ``failures`` list inputs that could not be embedded."""
    import numpy as np

    from .. import patients as P

    files = inputs_or_store(inputs, store)
    options = options.replace(clip_types=options.types(PATIENT_TYPES))
    if store is not None:
        embeddings, rows, warnings, failures = _from_store(model, store, options)
    else:
        if model is None:
            raise UsageError("match_patients needs a model to embed inputs (or a store)")
        embeddings, rows, warnings, failures = _embedded(model, files or [], options, progress)
    settings = settings or P.MatchSettings()
    result = P.match_patients(np.asarray(embeddings), rows, settings, device=settings.device)
    return result.with_notes(warnings=warnings, failures=failures)


def _from_store(model: "EchoClip | None", store: PathLike, options: RunOptions) -> tuple[Any, list, list, list]:
    """A store's video vectors and rows of the chosen clip types, with what its reader noticed."""
    from .. import patients as P
    from ..store import read_store

    if model is not None:
        check_model(model, "match-patients", store)  # the store's weights?
    loaded = read_store(store)
    warnings = damage_notes(loaded)
    name = loaded.header["weights"]["name"]
    if not P.is_retrieval_weights(name, loaded.weights_sha256):
        warnings.append(P.NOT_R_WARNING.format(name=f"the store's weights {name!r}"))
    types = options.clip_types or ()
    keep = [i for i, row in enumerate(loaded.rows) if row.get("clip_type") in (None, *types)]
    return loaded.embeddings[keep], [loaded.rows[i] for i in keep], warnings, []


def _embedded(model: "EchoClip", files: list[Path], options: RunOptions,
              progress: Progress | None) -> tuple[Any, list, list, list]:
    """The inputs embedded now: vectors and rows of the clips that could be, and what failed."""
    import numpy as np

    from .. import patients as P
    from ..errors import MediaError

    check_model(model, "match-patients")
    warnings = [] if model.bundle.tokenizer_kind == "template" else \
        [P.NOT_R_WARNING.format(name=f"weights {model.bundle.name!r}")]
    vectors, rows, failures = [], [], []
    for result in embed_files(model, files, options, progress=progress):
        if result.skipped is not None:
            continue  # not a clip to compare patients by (a still, a Doppler strip, a CT)
        if result.error is not None or result.embedding is None:
            failures.append(result.error or f"{result.source}: no embedding")
            continue
        vectors.append(result.embedding)
        rows.append({**result.meta, "source": result.source})
    if not vectors:
        raise MediaError("no input could be embedded" + (f" (first: {failures[0]})" if failures else ""))
    return np.stack(vectors), rows, warnings, failures
