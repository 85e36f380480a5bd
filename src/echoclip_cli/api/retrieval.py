"""Retrieval use cases (EchoCLIP-R): report search, reports ranked for a video, patient matching.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model(store="archive.store")     # the weights that made the store
    >>> echoclip_cli.search(model, "severe MR", "archive.store").records
    >>> echoclip_cli.search(model, "severe MR").records     # every store embed --out wrote, and the cache
    >>> echoclip_cli.match_patients(model, store="archive.store").groups
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import UsageError
from ..options import DEFAULT, RunOptions
from .archive import reads_archives
from .common import PathLike, Progress, check_model, check_vocab, damage_notes, inputs_or_store, store_header
from .embed import embed_files, embedded

if TYPE_CHECKING:
    from ..inference import EchoClip
    from ..patients import MatchSettings, PatientMatches
    from ..retrieval import ReportRanking, SearchResult
    from ..store import Store

PATIENT_TYPES = ("2d", "2d_colour")  # clips patient matching compares (videos; colour flow keeps its tissue)


Stores = PathLike | Sequence[PathLike] | None  # one store, several of one weights, or None: what echoclip holds


def check_search(query: str, store: "Stores" = None, *, level: str = "both",
                 template_vocab: PathLike | None = None) -> None:
    """Everything :func:`search` refuses, checked without loading anything heavy: with stores,
    that each is a store and all hold vectors of one weights; without, that echoclip holds
    something to search (else a :class:`~echoclip_cli.errors.NothingHeldError`, exit 1)."""
    if not query.strip():
        raise UsageError("the query is empty")
    if level not in ("video", "study", "both"):
        raise UsageError(f"level must be video, study or both, not {level!r}")
    check_vocab(template_vocab)
    stores = store_list(store)
    if stores is None:
        from ..held import holdings, nothing_held

        if not holdings().held:
            raise nothing_held()
        return
    made_by = {str(s): store_header(s)["weights"] for s in stores}
    if len({weights["sha256"] for weights in made_by.values()}) > 1:
        named = ", ".join(f"{s} ({w['name']})" for s, w in made_by.items())
        raise UsageError(f"stores searched together must hold vectors of one weights: {named}",
                         hint="search them one at a time")


def store_list(store: Stores) -> list[Path] | None:
    """``store`` as a list of paths (None stays None: search what echoclip holds)."""
    if store is None:
        return None
    paths = [Path(store)] if isinstance(store, (str, os.PathLike)) else [Path(s) for s in store]
    if not paths:
        raise UsageError("no store given: pass one or more stores, or None to search what echoclip holds")
    return paths


def search(model: "EchoClip", query: str, store: Stores = None, *, k: int = 10, level: str = "both",
           template_vocab: PathLike | None = None) -> "SearchResult":
    """Rank videos and studies by report text: those of ``store`` (a path, or a list of stores of
    one weights), or with ``store`` None everything this machine's echoclip holds for ``model``'s
    weights (the stores ``embed --out`` wrote and the frame cache: :func:`~echoclip_cli.holdings`).

    ``result.records`` are the hits (``level`` video or study, best first; ``store`` on videos and
    ``stores`` on studies name where they came from: a store's path, or ``cache``);
    ``result.plan`` says what was embedded, ``result.notes`` what was searched and
    ``result.warnings`` what was left out."""
    check_search(query, store, level=level, template_vocab=template_vocab)
    from ..retrieval import pool, search_store
    from ..tokenizer import tokenizer_for

    stores = store_list(store)
    for path in stores or [None]:
        check_model(model, "search", path)
    labelled, warnings = _given(stores) if stores is not None else _held(model)
    pooled = pool(labelled)
    if stores is None and len(pooled) == 0:
        from ..held import nothing_held

        raise nothing_held(model.bundle.name)
    notes = [] if stores is not None else [_searched(labelled, pooled, model)]
    tokenizer = tokenizer_for(model.bundle, template_vocab=template_vocab)
    result = search_store(pooled, model, query, k=k, level=level, tokenizer=tokenizer)
    return dataclasses.replace(result, warnings=(*warnings, *damage_notes(pooled)), notes=tuple(notes))


def _given(stores: list[Path]) -> tuple[list[tuple[str, "Store"]], list[str]]:
    """The stores named, each labelled with its path as the holdings remember it."""
    from ..remembered import where
    from ..store import read_store

    return [(str(where(path)), read_store(path)) for path in stores], []


def _held(model: "EchoClip") -> tuple[list[tuple[str, "Store"]], list[str]]:
    """Everything held for the model's weights; a NothingHeldError when that is nothing."""
    from .. import held as H

    held = H.holdings(model.weights_sha256)
    warnings = H.drop_gone(held.gone)
    mine = held.for_weights(model.weights_sha256)
    if mine is None:
        raise H.nothing_held(model.bundle.name, H.holdings().held)
    labelled, unreadable = H.read_held(mine)
    if not labelled:
        raise H.nothing_held(model.bundle.name)
    return labelled, [*warnings, *unreadable]


def _searched(labelled: Sequence[tuple[str, "Store"]], pooled: "Store", model: "EchoClip") -> str:
    """'searched /data/a.store (12 videos) and 5 cached videos (weights echo-clip-r)', saying how
    many cached videos are copies of stored ones (searched once, from the store)."""
    from collections import Counter

    from ..held import CACHE

    held: Counter[str] = Counter()
    for label, store in labelled:
        held[label] += len(store)
    stores = [f"{label} ({n} video{'s' if n != 1 else ''})" for label, n in held.items() if label != CACHE]
    cached = held.get(CACHE, 0)
    line = (f"searched {', '.join(stores) or 'no store'} and {cached} cached video{'s' if cached != 1 else ''} "
            f"(weights {model.bundle.name})")
    also = cached - sum(str(row["store"]) == CACHE for row in pooled.rows)
    if also:
        line += f"; {'all' if also == cached else also} of the cached videos are in the stores too: searched once"
    return line


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


@reads_archives(lambda options: options.types(PATIENT_TYPES), together=True)
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
    for result in embedded(model, files, options, progress):
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
