"""``echoclip embed``: video (or text) embeddings, printed or appended to a store."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer

from ..errors import UsageError
from ..defaults import DEFAULT_WEIGHTS
from .common import (DeterministicOpt, DeviceOpt, FormatOpt, OutputFormat, PrecisionOpt, RecordSink, emit_records,
                     err_console, info, resolve_format)
from .models import open_model, weights_for
from .inputs import (BatchOpt, DirOpt, FramesOpt, InputsArg, JpegDecodeOpt, KeepPhiOpt, MaskOpt, QuietOpt, StartOpt,
                     StrideOpt, WorkersOpt, gather_inputs, sampling, shard_slice)
from .progress import progress_bar

VIDEO_COLUMNS = ["source", "n_frames", "weights", "preprocess", "error"]

if TYPE_CHECKING:  # the model stack (torch) loads when a command runs, not when --help is built
    from ..inference import EchoClip
    from ..records import VideoEmbedding


def report_failure(record: dict[str, Any]) -> None:
    err_console.print(f"[red]error:[/red] {record['error']}", markup=True, highlight=False)


def video_record(result: "VideoEmbedding", model: "EchoClip", with_vector: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "source": result.source,
        "n_frames": result.n_frames,
        "weights": model.bundle.name,
        "weights_sha256": model.weights_sha256,
        "preprocess": result.meta.get("preprocess_digest") or model.preprocess.digest(),
        "error": result.error,
    }
    for key in ("study_uid", "series_uid", "sop_uid", "study_date", "patient_key"):
        if result.meta.get(key):
            record[key] = result.meta[key]
    if with_vector and result.embedding is not None:
        record["embedding"] = [round(float(x), 6) for x in result.embedding]
    return record


def embed(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Append to this embedding store (resumable).")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Weights name or path (default: an existing --out store's, else echo-clip).", show_default=False)] = None,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = None,
    jpeg_decode: JpegDecodeOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    keep_frames: Annotated[bool, typer.Option("--keep-frames", help="Store per-frame embeddings (for zero-shot tasks).")] = False,
    flush_every: Annotated[int, typer.Option("--flush-every", help="Videos per store part (a crash loses at most these).", min=1)] = 256,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Take slice I/N of the inputs (SLURM arrays).")] = None,
    text: Annotated[Optional[list[str]], typer.Option("--text", help="Embed this text instead of videos (repeatable).")] = None,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Embed report texts, one per line.")] = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    deterministic: DeterministicOpt = False,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the image tower (GPU: faster after a one-off warm-up).")] = False,
    keep_phi: KeepPhiOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed echo videos (or report texts) with an EchoCLIP model.

    Each video's embedding is the mean of its L2-normalised frame embeddings (frames 0, 2, …, 38
    by default). Records go to stdout (JSONL includes the 512 numbers); with --out they are
    appended to a store, and a rerun skips what the store already holds.

    Examples:

        echoclip embed study.dcm

        echoclip embed --dir studies/ --out archive.store --keep-frames --workers 8

        echoclip embed --dir studies/ --device cuda --jpeg-decode device --batch-size 256 --out archive.store

        echoclip embed --weights echo-clip-r --reports reports.txt --format jsonl > reports.jsonl
    """
    if text or reports:
        if inputs or folder or out is not None:
            raise UsageError("--text/--reports embed texts: give no video inputs and no --out",
                             hint="texts go to stdout; write them to a file with --format jsonl > FILE")
        if reports is not None and not reports.is_file():
            raise UsageError(f"no such reports file: {reports}")
        model = open_model(weights or DEFAULT_WEIGHTS, device=device, precision=precision, quiet=quiet)
        _embed_texts(model, list(text or []), reports, fmt)
        return
    files, _ = gather_inputs(inputs, folder)
    files = shard_slice(files, shard)
    existing = out if out is not None and out.exists() else None
    model = open_model(weights_for(weights, existing, DEFAULT_WEIGHTS), device=device, precision=precision,
                       deterministic=deterministic, compile=compile_model, quiet=quiet)
    cfg = sampling(model.preprocess, frames, stride, start, mask)
    writer = _store_writer(model, cfg, out, keep_frames, flush_every) if out is not None else None
    if writer is not None:
        files = _not_yet_stored(writer, files)
    with_vector = writer is None and resolve_format(fmt) is OutputFormat.jsonl
    failures = done = 0
    try:
        with writer or nullcontext(), RecordSink(fmt, columns=None if with_vector else VIDEO_COLUMNS) as sink:
            for result in embed_files(model, files, cfg, batch_size=batch_size, workers=workers, quiet=quiet,
                                      keep_frames=keep_frames and writer is not None, keep_phi=keep_phi,
                                      jpeg_decode=jpeg_decode):
                if writer is not None:
                    writer.add(result)
                record = video_record(result, model, with_vector)
                if record["error"]:
                    report_failure(record)
                    failures += 1
                done += 1
                sink.write(record)
    except KeyboardInterrupt:
        if writer is not None:  # the writer has flushed on the way out
            info(f"interrupted after {done} of {len(files)} inputs; what finished is in {out}. "
                 "Run the same command again to go on from there.")
        raise
    if failures:
        raise typer.Exit(1)


def embed_files(model: "EchoClip", files: list[Path], cfg: Any, *, batch_size: int, workers: Optional[int],
                quiet: bool, keep_frames: bool = False, keep_phi: bool = False,
                jpeg_decode: Optional[str] = None) -> Iterator["VideoEmbedding"]:
    """Results of the embedding pipeline for ``files``, in order, with a progress bar on stderr
    that advances per batch of frames."""
    from ..pipeline import embed_videos

    with progress_bar(len(files), quiet, frames_per_item=cfg.frames) as bar:
        for result in embed_videos(files, model, cfg=cfg, batch_size=batch_size, workers=workers,
                                   keep_frames=keep_frames, keep_phi=keep_phi, jpeg_decode=jpeg_decode,
                                   on_frames=bar.frames):
            bar.item(result.n_frames)
            yield result


def embed_inputs(model: "EchoClip", files: list[Path], sampling_opts: dict[str, Any], *, batch_size: int,
                 workers: Optional[int], quiet: bool, keep_frames: bool = False) -> Iterator["VideoEmbedding"]:
    """``files`` embedded with the model's sampling plus the command line's overrides."""
    cfg = sampling(model.preprocess, **sampling_opts)
    return embed_files(model, files, cfg, batch_size=batch_size, workers=workers, quiet=quiet, keep_frames=keep_frames)


def _store_writer(model: "EchoClip", cfg: Any, out: Path, keep_frames: bool, flush_every: int) -> Any:
    from ..store import StoreWriter

    return StoreWriter(out, weights_name=model.bundle.name, weights_sha256=model.weights_sha256, cfg=cfg,
                       embed_dim=model.embed_dim, keep_frames=keep_frames, flush_every=flush_every)


def _not_yet_stored(writer: Any, files: list[Path]) -> list[Path]:
    """The inputs the store does not hold yet (a rerun resumes). Files unchanged since they were
    stored are known by path, size and modification time, without reading them; any other file
    is hashed (a few threads; hashing costs far less than embedding) and skipped when its content
    is stored already, e.g. the same study exported again."""
    from concurrent.futures import ThreadPoolExecutor

    from ..media.clip import stat_key
    from ..pipeline import input_key

    stats, contents = writer.resume_index()
    if not contents:
        return files

    def unchanged(path: Path) -> bool:
        try:
            return stat_key(path) in stats
        except OSError:
            return False

    def content(path: Path) -> str | None:
        try:
            return input_key(path)
        except OSError:
            return None  # gone or unreadable since it was found: the pipeline reports it

    changed = [f for f in files if not unchanged(f)]
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        hashes = zip(changed, pool.map(content, changed), strict=True)
        known = {f for f, key in hashes if key is not None and key in contents}
    todo = [f for f in changed if f not in known]
    if len(todo) < len(files):
        info(f"{len(files) - len(todo)} inputs already in {writer.path}; embedding {len(todo)}")
    return todo


def _embed_texts(model: "EchoClip", texts: list[str], reports: Optional[Path], fmt: OutputFormat) -> None:
    from ..text_embed import embed_texts

    if reports is not None:
        texts += [line.strip() for line in reports.read_text(encoding="utf-8").splitlines() if line.strip()]
    vectors = embed_texts(texts, model)
    records = [{"text": t, "weights": model.bundle.name, "weights_sha256": model.weights_sha256,
                "embedding": [round(float(x), 6) for x in v]} for t, v in zip(texts, vectors)]
    emit_records(records, fmt, columns=["text", "weights"])
