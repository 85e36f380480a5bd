"""``echoclip embed``: video (or text) embeddings, printed or appended to a store."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer

from .common import (DeterministicOpt, DeviceOpt, FormatOpt, OutputFormat, PrecisionOpt, RecordSink, emit_records,
                     err_console, info, resolve_format)
from .inputs import (BatchOpt, DirOpt, FramesOpt, InputsArg, KeepPhiOpt, MaskOpt, QuietOpt, StartOpt, StrideOpt,
                     WorkersOpt, gather_inputs, progress_bar, sampling, shard_slice)

VIDEO_COLUMNS = ["source", "n_frames", "weights", "preprocess", "error"]

if TYPE_CHECKING:  # the model stack (torch) loads when a command runs, not when --help is built
    from ..inference import EchoClip
    from ..pipeline import VideoEmbedding


def device_for_rank(device: str) -> str:
    """Under torchrun, ``auto`` means this process's own GPU (LOCAL_RANK)."""
    if device == "auto" and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


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


def stream_with_progress(results: Iterator["VideoEmbedding"], total: int, quiet: bool) -> Iterator["VideoEmbedding"]:
    start, frames = time.perf_counter(), 0
    with progress_bar(total, quiet) as advance:
        for result in results:
            frames += result.n_frames
            advance(rate=f"{frames / max(time.perf_counter() - start, 1e-9):.1f} frames/s")
            yield result


def embed(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Append to this embedding store (resumable).")] = None,
    weights: Annotated[str, typer.Option("--weights", "-w", help="Weights name or path.")] = "echo-clip",
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = None,
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

        echoclip embed --weights echo-clip-r --reports reports.txt --format jsonl > reports.jsonl
    """
    from ..inference import load_model
    from ..pipeline import embed_videos

    model = load_model(weights, device=device_for_rank(device), precision=precision, deterministic=deterministic,
                       compile=compile_model)
    if text or reports:
        _embed_texts(model, list(text or []), reports, fmt)
        return
    cfg = sampling(model.preprocess, frames, stride, start, mask)
    files, _ = gather_inputs(inputs, folder)
    files = shard_slice(files, shard)
    with_vector = resolve_format(fmt) is OutputFormat.jsonl
    if out is not None:
        failures = _embed_into_store(model, files, cfg, out, batch_size, workers, keep_frames, keep_phi, quiet, fmt,
                                     flush_every)
    else:
        results = embed_videos(files, model, cfg=cfg, batch_size=batch_size, workers=workers, keep_phi=keep_phi)
        failures = 0
        with RecordSink(fmt, columns=VIDEO_COLUMNS if not with_vector else None) as sink:
            for result in stream_with_progress(results, len(files), quiet):
                record = video_record(result, model, with_vector)
                if record["error"]:
                    report_failure(record)
                    failures += 1
                sink.write(record)
    if failures:
        raise typer.Exit(1)


def _embed_into_store(model: "EchoClip", files: list[Path], cfg: Any, out: Path, batch_size: int, workers: Optional[int],
                      keep_frames: bool, keep_phi: bool, quiet: bool, fmt: OutputFormat, flush_every: int) -> int:
    from ..pipeline import embed_videos, input_key
    from ..store import StoreWriter

    writer = StoreWriter(out, weights_name=model.bundle.name, weights_sha256=model.weights_sha256, cfg=cfg,
                         embed_dim=model.embed_dim, keep_frames=keep_frames, flush_every=flush_every)
    done = writer.done_keys()
    todo = [f for f in files if not done or input_key(f) not in done]
    if len(todo) < len(files):
        info(f"{len(files) - len(todo)} inputs already in {out}; embedding {len(todo)}")
    failures = 0
    with writer, RecordSink(fmt, columns=VIDEO_COLUMNS) as sink:
        results = embed_videos(todo, model, cfg=cfg, batch_size=batch_size, workers=workers,
                               keep_frames=keep_frames, keep_phi=keep_phi)
        for result in stream_with_progress(results, len(todo), quiet):
            writer.add(result)
            record = video_record(result, model, with_vector=False)
            if record["error"]:
                report_failure(record)
                failures += 1
            sink.write(record)
    return failures


def _embed_texts(model: "EchoClip", texts: list[str], reports: Optional[Path], fmt: OutputFormat) -> None:
    from ..text_embed import embed_texts

    if reports is not None:
        texts += [line.strip() for line in reports.read_text(encoding="utf-8").splitlines() if line.strip()]
    vectors = embed_texts(texts, model)
    records = [{"text": t, "weights": model.bundle.name, "weights_sha256": model.weights_sha256,
                "embedding": [round(float(x), 6) for x in v]} for t, v in zip(texts, vectors)]
    emit_records(records, fmt, columns=["text", "weights"])
