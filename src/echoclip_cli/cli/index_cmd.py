"""``echoclip index``: the stores echoclip remembers, which a search without --store looks through."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import FormatOpt, OutputFormat, emit_records, info, warn

app = typer.Typer(help="See and edit the stores echoclip remembers (searched by `echoclip search` without --store).",
                  no_args_is_help=True)

COLUMNS = ["path", "weights", "videos", "size_mb", "updated"]


@app.command("list")
def index_list(fmt: FormatOpt = OutputFormat.auto) -> None:
    """List the stores echoclip remembers: every store `embed --out` or `store merge` wrote.

    A store that is no longer where it was written (moved or deleted) is dropped from the list
    with a note; `echoclip index add` remembers it where it is now. The embedding cache, also
    searched, is shown by `echoclip cache info`.

    Examples:

        echoclip index list

        echoclip index list --format jsonl | jq -r .path
    """
    from .. import api

    entries, notes = api.remembered_stores()
    for note in notes:
        warn(note)
    rows = [{**entry.as_dict(), "size_mb": None if entry.bytes is None else round(entry.bytes / 2**20, 2)}
            for entry in entries]
    emit_records(rows, fmt, columns=COLUMNS)
    cached = sum(held.cached_videos for held in api.holdings().held)
    info(f"{len(rows)} store{'s' if len(rows) != 1 else ''} remembered; {cached} videos in the embedding cache")


@app.command("add")
def index_add(store: Annotated[Path, typer.Argument(help="Embedding store folder.")]) -> None:
    """Remember a store, so that `echoclip search` without --store looks through it.

    Stores are remembered when written; add one moved by hand or written elsewhere.

    Examples:

        echoclip index add /archive/moved.store
    """
    from .. import api

    entry = api.remember_store(store)
    info(f"remembered {entry.path} ({entry.videos} videos, weights {entry.weights})")


@app.command("forget")
def index_forget(
    store: Annotated[Path, typer.Argument(help="A remembered store (as `echoclip index list` shows it).")],
) -> None:
    """Forget a store: `echoclip search` without --store no longer looks through it (its files stay).

    Examples:

        echoclip index forget old.store

        echoclip index forget /archive/2019.store
    """
    from .. import api

    entry = api.forget_store(store)
    info(f"forgot {entry.path} (the store itself is untouched)")
