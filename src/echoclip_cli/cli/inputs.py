"""Options and helpers shared by the commands that read videos: inputs, sampling, batching, progress."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import UsageError
from ..preprocess_config import PreprocessConfig
from .common import err_console
from .models import store_header

InputsArg = Annotated[
    Optional[list[Path]],
    typer.Argument(help="DICOM files (any extension), AVI/MP4 videos, preprocessed .safetensors, or folders.", show_default=False),
]
DirOpt = Annotated[Optional[Path], typer.Option("--dir", help="Folder to search recursively for inputs.")]
FramesOpt = Annotated[Optional[int], typer.Option("--frames", help="Frames per video (default 20).", min=1)]
StrideOpt = Annotated[Optional[int], typer.Option("--stride", help="Take every Nth frame (default 2).", min=1)]
StartOpt = Annotated[Optional[int], typer.Option("--start", help="First frame (default 0).", min=0)]
class MaskMode(str, Enum):
    auto = "auto"
    sector = "sector"
    none = "none"


MaskOpt = Annotated[
    Optional[MaskMode],
    typer.Option("--mask", help="auto (mask DICOM outside the moving sector, leave videos), sector (always) or none."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Frames per model batch.", min=1)]
WorkersOpt = Annotated[
    Optional[int],
    typer.Option("--workers", "-j", min=0,
                 help="Decode processes (0: inline). Default: 0 on the CPU, CPU cores - 1 (max 16) with a GPU."),
]
JpegDecodeOpt = Annotated[
    Optional[str],
    typer.Option("--jpeg-decode", metavar="auto|workers|device",
                 help="Where JPEG Baseline DICOM frames are decoded: device (nvJPEG on the GPU, needs "
                      "echoclip[gpu]), workers (CPU processes) or auto (device when nvJPEG works). "
                      "Default: $ECHOCLIP_JPEG_DECODE, else auto."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
KeepPhiOpt = Annotated[bool, typer.Option("--keep-phi", help="Keep patient names, birth dates and raw IDs in outputs.")]


def gather_inputs(inputs: Optional[list[Path]], folder: Optional[Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Candidate files in a stable order, and records for what was skipped (DICOMDIR, non-image …),
    each of which is also reported as one line on stderr."""
    from ..media import find_inputs

    paths = list(inputs or []) + ([folder] if folder else [])
    if not paths:
        raise UsageError("no inputs: give files or folders, or --dir DIR")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing[:3])}")
    files, skipped = find_inputs(paths)
    for record in skipped:
        err_console.print(record["error"], markup=False, highlight=False)
    return files, skipped


def inputs_or_store(inputs: Optional[list[Path]], folder: Optional[Path], store: Optional[Path]) -> list[Path] | None:
    """The input files (checked: given, existing), or None when a ``--store`` is read instead."""
    if store is not None:
        if inputs or folder:
            raise UsageError("give INPUTS (or --dir) or --store, not both")
        store_header(store)  # not a readable store: a usage error now, before any model loads
        return None
    files, _ = gather_inputs(inputs, folder)
    return files


def sampling(base: PreprocessConfig, frames: Optional[int], stride: Optional[int], start: Optional[int],
             mask: Optional[MaskMode | str]) -> PreprocessConfig:
    mask = mask.value if isinstance(mask, MaskMode) else mask
    changes = {k: v for k, v in (("frames", frames), ("stride", stride), ("start", start), ("mask", mask)) if v is not None}
    return base.replace(**changes) if changes else base


def shard_slice(items: list[Path], shard: Optional[str]) -> list[Path]:
    """``--shard I/N`` (or torchrun's RANK/WORLD_SIZE): every Nth input from the I-th, 0-based."""
    if shard is None and "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        shard = f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}"
    if shard is None:
        return items
    try:
        index, count = (int(x) for x in shard.split("/"))
    except ValueError:
        raise UsageError(f"--shard must be I/N (e.g. 0/4), not {shard!r}") from None
    if not 0 <= index < count:
        raise UsageError(f"--shard {shard}: I must be in 0..N-1")
    return items[index::count]

