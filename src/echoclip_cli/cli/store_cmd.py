"""``echoclip store``: inspect and merge embedding stores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import FormatOpt, OutputFormat, emit_records, info, warn

app = typer.Typer(help="Inspect and merge embedding stores (made by `echoclip embed --out`).", no_args_is_help=True)


@app.command("merge")
def merge(
    out: Annotated[Path, typer.Argument(help="Store to create or append to.")],
    stores: Annotated[list[Path], typer.Argument(help="Shard stores to join (same weights and preprocessing).")],
) -> None:
    """Join shard stores into one; each input video ends up in it once.

    Examples:

        echoclip store merge archive.store shard.0 shard.1 shard.2

        echoclip store merge archive.store store.*
    """
    from ..store import merge_stores

    merged = merge_stores(out, stores)
    info(f"{out}: {len(merged)} videos from {len(stores)} stores")


@app.command("info")
def store_info(store: Annotated[Path, typer.Argument(help="Embedding store folder.")]) -> None:
    """Show a store's weights, preprocessing and size as JSON.

    Examples:

        echoclip store info archive.store

        echoclip store info archive.store | jq .videos
    """
    from ..store import read_store

    loaded = read_store(store)
    for message in loaded.damaged:
        warn(f"{message} (left out; echoclip store repair)")
    summary = {"damaged_parts": len(loaded.damaged),"path": str(store), "videos": len(loaded), "embed_dim": loaded.header["embed_dim"],
               "weights": loaded.header["weights"], "preprocess": loaded.header["preprocess"],
               "studies": len({r.get("study_uid") for r in loaded.rows if r.get("study_uid")})}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


@app.command("verify")
def store_verify(
    store: Annotated[Path, typer.Argument(help="Embedding store folder.")],
    fmt: FormatOpt = OutputFormat.auto,
) -> None:
    """Check every part of a store against its checksum; exit 1 when one is damaged.

    Readers leave a damaged part out (with a warning naming it); `echoclip store repair` sets
    such parts aside so that `echoclip embed --out STORE` embeds their videos again.

    Examples:

        echoclip store verify archive.store

        echoclip store verify archive.store --format jsonl | jq 'select(.ok | not)'
    """
    from ..api import store_header
    from ..store import check_parts

    store_header(store)
    rows = [{"part": part.name, "ok": problem is None, "problem": problem} for part, problem in check_parts(store)]
    emit_records(rows, fmt, columns=["part", "ok", "problem"])
    bad = sum(not r["ok"] for r in rows)
    info(f"{len(rows)} parts, {bad} damaged")
    if bad:
        raise typer.Exit(1)


@app.command("repair")
def store_repair(store: Annotated[Path, typer.Argument(help="Embedding store folder.")]) -> None:
    """Set damaged parts aside (renamed *.damaged) so readers and resumed runs do without them.

    Their videos are then missing from the store: run the same `echoclip embed --out STORE` again
    and it embeds just those.

    Examples:

        echoclip store repair archive.store && echoclip embed --dir studies/ --out archive.store
    """
    from ..api import store_header
    from ..store import check_parts, set_aside

    store_header(store)
    moved = [set_aside(part) for part, problem in check_parts(store) if problem is not None]
    for target in moved:
        info(f"set aside {target.name}")
    info(f"{len(moved)} damaged parts set aside" + ("; embed into the store again to refill it" if moved else ""))
