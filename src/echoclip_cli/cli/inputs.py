"""Options and helpers shared by the commands that read videos: inputs, sampling, batching, progress."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..errors import UsageError
from ..preprocess_config import Sampling
from .common import err_console, report_failure, safe_text

if TYPE_CHECKING:
    from ..api import Found
    from ..dicomweb import Archive
    from ..options import RunOptions

InputsArg = Annotated[
    Optional[list[Path]],
    typer.Argument(help="DICOM files (any extension), AVI/MP4 videos, preprocessed .safetensors, or folders.", show_default=False),
]
DirOpt = Annotated[Optional[list[Path]], typer.Option("--dir", help="Folder to search recursively for inputs (repeatable).")]
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
BatchOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", "-b", min=1, show_default=False,
    help="Frames per model batch (default: 16 on the CPU, 64 on a GPU; measured, see docs/BENCHMARKS.md).")]
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
ClipTypesOpt = Annotated[
    Optional[str],
    typer.Option("--clip-types", metavar="TYPE,…|all",
                 help="Clip types to score: 2d, 2d_colour, spectral_doppler, m_mode, still, or all (ultrasound); "
                      "others get a record saying why they were skipped."),
]
DicomwebOpt = Annotated[Optional[str], typer.Option(
    "--dicomweb", metavar="URL", rich_help_panel="DICOMweb input",
    help="Read studies from this DICOMweb server (e.g. https://pacs.example.org/dicom-web) instead of files: "
         "metadata first, then only the sampled frames. Credentials: ECHOCLIP_DICOMWEB_USER and "
         "ECHOCLIP_DICOMWEB_PASSWORD, ECHOCLIP_DICOMWEB_TOKEN, or a ~/.netrc entry; never in the URL.")]
StudyOpt = Annotated[Optional[list[str]], typer.Option(
    "--study", metavar="UID", rich_help_panel="DICOMweb input", help="A Study Instance UID to read (repeatable).")]
QueryOpt = Annotated[Optional[list[str]], typer.Option(
    "--query", metavar="KEY=VALUE", rich_help_panel="DICOMweb input",
    help="QIDO-RS study search filter (repeatable), e.g. ModalitiesInStudy=US, StudyDate=20240101-20240131.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Embed again instead of reusing cached frame embeddings (`echoclip cache info`).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
KeepPhiOpt = Annotated[bool, typer.Option("--keep-phi", help="Keep patient names, birth dates and raw IDs in outputs.")]


def gather_inputs(inputs: Optional[list[Path]], folders: Optional[list[Path]]) -> "Found":
    """The input files (checked: given, existing), each path that is not an input reported as
    one line on stderr (DICOMDIR, non-image DICOM, a FIFO, an unreadable folder …). Finding no
    input at all is an error (exit 1): nothing could be processed."""
    from ..api import find
    from ..errors import MediaError

    given = list(inputs or []) + list(folders or [])
    found = find(given)
    for record in found.skipped:
        if record["kind"] == "error":
            report_failure(record["error"])
        else:
            err_console.print(safe_text(record["error"]), markup=False, highlight=False)
    if not found:
        raise MediaError(f"no DICOM or video files found in {', '.join(safe_text(str(p)) for p in given[:3])}")
    return found


def discovery_failed(files: "Found | None") -> bool:
    """Whether finding the inputs met an error (an unreadable folder, a FIFO given by name)."""
    return files is not None and any(r["kind"] == "error" for r in getattr(files, "skipped", ()))


def inputs_or_store(inputs: Optional[list[Path]], folder: Optional[list[Path]], store: Optional[Path],
                    dicomweb: Optional[str] = None, study: Optional[list[str]] = None,
                    query: Optional[list[str]] = None) -> "Found | Archive | None":
    """The input files, a DICOMweb :class:`~echoclip_cli.dicomweb.Archive`, or None when a
    ``--store`` is read instead (a usage error unless exactly one is given and readable)."""
    from ..api import inputs_or_store as check

    archive = archive_of(dicomweb, study, query)
    if archive is not None:
        if inputs or folder or store is not None:
            raise UsageError("give files (INPUTS or --dir), --store or --dicomweb, not several")
        return archive
    if store is not None:
        return check(list(inputs or []) + list(folder or []), store)
    return gather_inputs(inputs, folder)


def archive_of(dicomweb: Optional[str], study: Optional[list[str]], query: Optional[list[str]]) -> "Archive | None":
    """The archive ``--dicomweb URL --study UID --query KEY=VALUE`` name (checked: a usage error
    for a URL with credentials, a malformed UID or filter), or None without ``--dicomweb``."""
    if dicomweb is None:
        if study or query:
            raise UsageError("--study and --query choose studies on a DICOMweb server: give --dicomweb URL too")
        return None
    from ..dicomweb import Archive
    from ..dicomweb.archive import parse_query

    return Archive(dicomweb, studies=tuple(study or ()), query=parse_query(query or ()))


def count_inputs(files: "Found | Archive | None") -> int | None:
    """How many inputs a run has, where that is known before it starts (files: yes)."""
    return len(files) if isinstance(files, list) else None


def sampling(frames: Optional[int], stride: Optional[int], start: Optional[int], mask: Optional[MaskMode]) -> Sampling:
    """The sampling options as the library's one value."""
    return Sampling(frames=frames, stride=stride, start=start, mask=mask.value if mask else None)


def run_options(*, batch_size: Optional[int], workers: Optional[int], sampled: Optional[Sampling] = None,
                clip_types: Optional[tuple[str, ...]] = None, no_cache: bool = False,
                jpeg_decode: Optional[str] = None, keep_phi: bool = False) -> "RunOptions":
    """The command's options as the library's one value (:class:`~echoclip_cli.options.RunOptions`)."""
    from ..options import RunOptions

    return RunOptions(sampling=sampled, batch_size=batch_size, workers=workers, clip_types=clip_types,
                      cache=not no_cache, jpeg_decode=jpeg_decode, keep_phi=keep_phi)


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

