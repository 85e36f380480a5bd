"""``echoclip preprocess``: decode echo DICOM/video once, store the model-ready frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import MediaError, UsageError
from ..preprocess_config import PreprocessConfig
from .common import FormatOpt, OutputFormat, emit_records, info, report_failure, resolve_format, warn
from .inputs import MaskMode
from .progress import progress_bar


_COLUMNS = ("source", "status", "output", "frames", "size", "fps", "region", "mask", "error")


def _config(
    weights: str | None, frames: int | None, stride: int | None, start: int | None, mask: MaskMode | None
) -> PreprocessConfig:
    """The released defaults (or a bundle's settings) with the command-line overrides applied."""
    base = PreprocessConfig()
    if weights:
        from .. import weights as w

        base = w.resolve(weights, auto_pull=False).preprocess
    changes = {"frames": frames, "stride": stride, "start": start, "mask": mask.value if mask else None}
    return base.replace(**{k: v for k, v in changes.items() if v is not None})


def preprocess(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM files, videos or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the .safetensors files (created if needed).")],
    frames: Annotated[Optional[int], typer.Option("--frames", help="Frames to sample per video (default 20).")] = None,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Take every Nth frame (default 2).")] = None,
    start: Annotated[Optional[int], typer.Option("--start", help="First frame to take (default 0).")] = None,
    mask: Annotated[
        Optional[MaskMode], typer.Option("--mask", help="auto (mask DICOM outside the moving sector, leave videos), sector (always) or none.")
    ] = None,
    weights: Annotated[
        Optional[str], typer.Option("--weights", "-w", help="Use an installed bundle's preprocess settings.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=0, help="Decode in N processes (0: in this one).")] = 0,
    keep_phi: Annotated[
        bool, typer.Option("--keep-phi", help="Also store patient name, ID and birth date (off by default).")
    ] = False,
    salt: Annotated[
        Optional[str],
        typer.Option("--salt", envvar="ECHOCLIP_SALT", help="Salt for the patient key (default: a per-home salt)."),
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Search folders recursively.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes on stderr.")] = False,
    fmt: FormatOpt = OutputFormat.auto,
) -> None:
    """Decode echo DICOM and video files once and store model-ready frames.

    Writes one OUT/UID.safetensors per input (named by SOP Instance UID, else file hash): uint8
    frames (T×3×224×224 RGB) and metadata, with a salted patient key but no
    names, IDs or birth dates (unless --keep-phi). Other commands read these
    files without decoding again. A bad input is one error line; the others
    still run, and the exit code is then 1.

    Examples:

        echoclip preprocess study/ --out frames/

        echoclip preprocess a.dcm b.avi --out frames/ --frames 32 --stride 1 --mask none

        echoclip preprocess /pacs/export --out frames/ --workers 8 --format jsonl > log.jsonl
    """
    from ..media import find_inputs, preprocess_files

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    cfg = _config(weights, frames, stride, start, mask)
    files, notes = find_inputs(inputs, recursive=recursive)
    files = [f for f in files if not f.resolve().is_relative_to(out.resolve())]  # not our own outputs
    if not files and not notes:
        raise MediaError(f"no DICOM or video files found in {', '.join(map(str, inputs))}")
    records = [{"source": n["source"], "status": n["kind"], "error": n["error"]} for n in notes]
    for note in notes:
        _report(note["kind"], note["error"], quiet)
    stream = resolve_format(fmt) is OutputFormat.jsonl  # JSONL lines go out as inputs finish
    if stream:
        emit_records(records, fmt)
    with progress_bar(quiet, label="preprocess") as bar:
        bar.start(len(files))
        for record in preprocess_files(files, out, cfg, workers=workers, keep_phi=keep_phi, salt=salt):
            if record.error:
                _report(record.status, record.error, quiet)
            records.append(record.to_dict())
            if stream:
                emit_records(records[-1:], fmt)
            bar.item()
    if not stream:
        emit_records(records, fmt, columns=_COLUMNS, title=f"preprocessed into {out}")
    _finish(records, quiet)


def _report(kind: str, message: str, quiet: bool) -> None:
    if kind == "skipped":
        if not quiet:
            warn(message)
        return
    report_failure(message)  # control characters escaped: a file name cannot forge a line


def _finish(records: list[dict], quiet: bool) -> None:
    """Say what happened on stderr; exit 1 when any input failed (after all were processed)."""
    written = sum(r["status"] == "ok" for r in records)
    failed = sum(r["status"] == "error" for r in records)
    if not quiet:
        info(f"{written} written, {failed} failed, {len(records) - written - failed} skipped")
    if failed:
        raise typer.Exit(1)
