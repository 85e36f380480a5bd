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
    store: Annotated[Optional[list[Path]], typer.Option(
        "--store", "-s", show_default=False,
        help="Embedding store to search (from `echoclip embed --out`); repeat to search several of one weights "
             "together. Default: every store echoclip has written and the embedding cache (`echoclip index list`).")] = None,
    index: Annotated[Optional[list[Path]], typer.Option("--index", "-i", hidden=True,
                                                        help="The old spelling of --store (kept for one release).")] = None,
    video: Annotated[Optional[Path], typer.Option("--video", help="Rank --reports for this video instead.")] = None,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Report texts: CSV (id,text), JSONL (id/text) or one per line.")] = None,
    weights: weights_option(f"the weights of what echoclip holds, {SEARCH_WEIGHTS} (EchoCLIP-R) first; with "  # type: ignore[valid-type]
                            f"--video, {SEARCH_WEIGHTS}", store="--store") = None,
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

    Without --store, search looks through what echoclip holds: every store `embed --out` wrote
    (`echoclip index list`) and the embedding cache (videos any model command embedded), of one
    weights: EchoCLIP-R's where its vectors are held and it is installed, else EchoCLIP's (a line
    on stderr says which, and what was searched; --weights chooses). Each video record names the
    store it came from (`store`: a path, or `cache`).

    EchoCLIP-R only knows its 770 report sentences, so the query is first rewritten the way reports
    are written (MR → MITRAL REGURGITATION, EF 35 → EJECTION FRACTION 35%, severely → SEVERE) and
    matched onto the closest report phrases, their severity and number slots filled from the query;
    several findings may be separated by commas or "and". A query that matches no phrase well
    enough (under half of its words found) is an error, never arbitrary ranks. With --weights
    echo-clip the rewritten text is embedded as it is. Ranking is exact cosine similarity.

    Examples:

        echoclip search "severe MR"

        echoclip search "severe MR" --store archive.store --explain

        echoclip search "dilated LA, EF 30%" --store archive.store --level study --top-k 20 --format csv

        echoclip search --video study/a4c.dcm --reports reports.csv
    """
    from .. import api

    if store and index:
        raise UsageError("give the stores as --store (--index is its old spelling), not both")
    stores = store or index or None
    if query is not None and video is None and reports is None:
        _search_videos(query, stores, weights, top_k, level, explain, template_vocab, fmt, (device, precision, backend))
    elif video is not None and reports is not None and query is None and stores is None:
        for path in (video, reports):
            if not path.is_file():
                raise UsageError(f"no such file: {path}")
        model = open_model(weights, default=SEARCH_WEIGHTS, device=device, precision=precision, backend=backend)
        ranking = api.search_reports(model, video, reports, k=top_k, template_vocab=template_vocab)
        if ranking.skipped:
            warn(f"{len(ranking.skipped)} of {ranking.n_reports} reports hold no sentence the tokenizer knows and were left out "
                 f"(first: {', '.join(ranking.skipped[:3])})")
        emit_records([r.as_dict() for r in ranking.records], fmt, columns=["level", "rank", "score", "id", "text"])
    else:
        raise UsageError("give a QUERY (with --store STORE, or none to search what echoclip holds), "
                         "or --video FILE with --reports FILE",
                         hint='e.g. echoclip search "severe MR"')


def _search_videos(query: str, stores: Optional[list[Path]], weights: Optional[str], top_k: int, level: Level,
                   explain: bool, template_vocab: Optional[Path], fmt: OutputFormat,
                   model_args: tuple[str, str, str]) -> None:
    """Rank the videos of ``stores`` (none: of what echoclip holds) and write the records."""
    from .. import api

    api.check_search(query, stores, level=level.value, template_vocab=template_vocab)
    if stores is None and weights is None:
        choice = api.holdings().preferred_weights()
        info(choice.note)
        weights = choice.name
    device, precision, backend = model_args
    model = open_model(weights, default=SEARCH_WEIGHTS, store=stores[0] if stores else None, device=device,
                       precision=precision, backend=backend)
    result = api.search(model, query, stores, k=top_k, level=level.value, template_vocab=template_vocab)
    for message in result.warnings:
        warn(message)
    for line in result.notes:
        info(line)
    if explain:
        for line in result.plan.explain():
            info(line)
    columns = ["level", "rank", "score", "source", "study", "n_videos", "study_date"]
    emit_records([r.as_dict() for r in result.records], fmt, columns=columns + (["store"] if stores is None else []))  # where each came from
