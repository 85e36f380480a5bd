"""``echoclip store``: inspect and merge embedding stores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import info

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
    summary = {"path": str(store), "videos": len(loaded), "embed_dim": loaded.header["embed_dim"],
               "weights": loaded.header["weights"], "preprocess": loaded.header["preprocess"],
               "studies": len({r.get("study_uid") for r in loaded.rows if r.get("study_uid")})}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
