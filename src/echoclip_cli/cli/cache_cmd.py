"""``echoclip cache``: the embedding cache that lets one embedding pass answer many commands."""

from __future__ import annotations

import typer

from .common import FormatOpt, OutputFormat, emit_records, info

app = typer.Typer(help="Show or clear the cache of frame embeddings (reused by predict-ef, detect-devices, "
                       "zero-shot).", no_args_is_help=True)


@app.command("info")
def cache_info(fmt: FormatOpt = OutputFormat.auto) -> None:
    """Show what the embedding cache holds: one row per weights and preprocessing.

    The cache lives in the weights home and is capped by ECHOCLIP_CACHE_MB (default 2048);
    the least recently used parts go first.

    Examples:

        echoclip cache info

        ECHOCLIP_CACHE_MB=500 echoclip predict-ef --dir studies/
    """
    from .. import frame_cache

    summary = frame_cache.info()
    info(f"{summary['path']}: {summary['size_mb']} MB of {summary['cap_mb']} MB")
    emit_records(summary["entries"], fmt, columns=["weights", "clips", "size_mb", "last_used", "folder"])


@app.command("clear")
def cache_clear() -> None:
    """Delete every cached frame embedding (the next run embeds again).

    Examples:

        echoclip cache clear
    """
    from .. import frame_cache

    freed = frame_cache.clear()
    info(f"freed {freed / 2**20:.1f} MB")
