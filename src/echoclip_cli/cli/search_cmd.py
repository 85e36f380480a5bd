"""``echoclip search`` (alias ``search-reports``): videos by text, or report texts by a video."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..defaults import RETRIEVAL_WEIGHTS as SEARCH_WEIGHTS
from ..errors import UsageError
from .common import DeviceOpt, FormatOpt, OutputFormat, BackendOpt, PrecisionOpt, emit_records, info, warn, weights_option
from .models import open_model

class Level(str, Enum):
    video = "video"
    study = "study"
    both = "both"


def search(
    query: Annotated[Optional[str], typer.Argument(
        help="What to look for: report wording or echo shorthand ('severe MR', 'LVEF 35%', 'dilated LA').",
        show_default=False)] = None,
    store: Annotated[Optional[Path], typer.Option("--store", "-s", help="Embedding store to search (from `echoclip embed --out`).")] = None,
    index: Annotated[Optional[Path], typer.Option("--index", "-i", hidden=True,
                                                  help="The old spelling of --store (kept for one release).")] = None,
    video: Annotated[Optional[Path], typer.Option("--video", help="Rank --reports for this video instead.")] = None,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Report texts: CSV (id,text), JSONL (id/text) or one per line.")] = None,
    weights: weights_option(f"{SEARCH_WEIGHTS} (EchoCLIP-R)", store="--store") = None,  # type: ignore[valid-type]
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many results (per level).", min=1)] = 10,
    level: Annotated[Level, typer.Option("--level", help="Rank videos, studies or both.")] = Level.both,
    explain: Annotated[bool, typer.Option("--explain", help="Show on stderr the text and token ids actually embedded.")] = False,
    template_vocab: Annotated[Optional[Path], typer.Option("--template-vocab", help="EchoCLIP-R's template_vocab.txt, if the bundle lacks it.")] = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    backend: BackendOpt = "auto",
) -> None:
    """Rank stored echo videos and studies by a text query, or report texts by a video.

    EchoCLIP-R only knows its 770 report sentences, so the query is first rewritten the way reports
    are written (MR → MITRAL REGURGITATION, EF 35 → EJECTION FRACTION 35%, severely → SEVERE) and
    matched onto the closest report phrases, their severity and number slots filled from the query;
    several findings may be separated by commas or "and". A query that matches no phrase well
    enough (under half of its words found) is an error, never arbitrary ranks. With --weights
    echo-clip the rewritten text is embedded as it is. Ranking is exact cosine similarity.

    Examples:

        echoclip search "severe MR" --store archive.store --explain

        echoclip search "dilated LA, EF 30%" --store archive.store --level study --top-k 20 --format csv

        echoclip search --video study/a4c.dcm --reports reports.csv
    """
    from .. import api

    if store is not None and index is not None:
        raise UsageError("give the store once, as --store (--index is its old spelling)")
    index = store if store is not None else index
    if query is not None and index is not None and video is None:
        api.check_search(query, index, level=level.value, template_vocab=template_vocab)
        model = open_model(weights, default=SEARCH_WEIGHTS, store=index, device=device, precision=precision,
                           backend=backend)
        result = api.search(model, query, index, k=top_k, level=level.value, template_vocab=template_vocab)
        for message in result.warnings:
            warn(message)
        if explain:
            for line in result.plan.explain():
                info(line)
        emit_records(result.records, fmt, columns=["level", "rank", "score", "source", "study", "n_videos",
                                                   "study_date"])
    elif video is not None and reports is not None and query is None and index is None:
        for path in (video, reports):
            if not path.is_file():
                raise UsageError(f"no such file: {path}")
        model = open_model(weights, default=SEARCH_WEIGHTS, device=device, precision=precision, backend=backend)
        ranking = api.search_reports(model, video, reports, k=top_k, template_vocab=template_vocab)
        if ranking.skipped:
            warn(f"{len(ranking.skipped)} of {ranking.n_reports} reports hold no sentence the tokenizer knows and were left out "
                 f"(first: {', '.join(ranking.skipped[:3])})")
        emit_records(ranking.records, fmt, columns=["level", "rank", "score", "id", "text"])
    else:
        raise UsageError("give a QUERY with --store STORE, or --video FILE with --reports FILE",
                         hint='e.g. echoclip search "severe MR" --store archive.store')
