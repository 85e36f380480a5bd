"""``echoclip embed``: video (or text) embeddings, printed or appended to a store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..defaults import DEFAULT_BATCH_SIZE, DEFAULT_WEIGHTS
from ..errors import UsageError
from ..media.classify import ULTRASOUND_TYPES, parse_clip_types
from .common import (DeterministicOpt, DeviceOpt, FormatOpt, OutputFormat, BackendOpt, PrecisionOpt, RecordSink, emit_records,
                     hint, info, report_failure, resolve_format, weights_option)
from .inputs import (BatchOpt, ClipTypesOpt, DicomwebOpt, DirOpt, FramesOpt, InputsArg, JpegDecodeOpt, KeepPhiOpt, MaskOpt,
                     NoCacheOpt, QueryOpt, QuietOpt, StartOpt, StrideOpt, StudyOpt, WorkersOpt, archive_of, count_inputs,
                     discovery_failed, gather_inputs, run_options, sampling, shard_slice)
from .models import open_model
from .progress import progress_bar

VIDEO_COLUMNS = ["source", "n_frames", "clip_type", "weights", "preprocess", "skipped", "error"]

if TYPE_CHECKING:  # the model stack (torch) loads when a command runs, not when --help is built
    from ..inference import EchoClip


def embed(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    dicomweb: DicomwebOpt = None,
    study: StudyOpt = None,
    query: QueryOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Append to this embedding store (resumable).")] = None,
    weights: weights_option(DEFAULT_WEIGHTS, store="--out") = None,  # type: ignore[valid-type]
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    workers: WorkersOpt = None,
    jpeg_decode: JpegDecodeOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    clip_types: ClipTypesOpt = None,
    no_cache: NoCacheOpt = False,
    keep_frames: Annotated[bool, typer.Option("--keep-frames", help="Store per-frame embeddings (for zero-shot tasks).")] = False,
    flush_every: Annotated[int, typer.Option("--flush-every", help="Videos per store part (a crash loses at most these).", min=1)] = 256,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Take slice I/N of the inputs (SLURM arrays).")] = None,
    text: Annotated[Optional[list[str]], typer.Option("--text", help="Embed this text instead of videos (repeatable).")] = None,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Embed report texts, one per line.")] = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    backend: BackendOpt = "auto",
    deterministic: DeterministicOpt = False,
    compile_model: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the image tower: faster after a one-off warm-up (cached across runs). Default: on a GPU for 64 inputs or more, or from --dicomweb; never on a CPU (see `echoclip weights optimise`).", show_default=False)] = None,
    keep_phi: KeepPhiOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed echo videos (or report texts) with an EchoCLIP model.

    Each video's embedding is the mean of its L2-normalised frame embeddings (frames 0, 2, …, 38
    by default). Records go to stdout (JSONL and CSV include the 512 numbers; a terminal table
    does not); with --out they are appended to a store, and a rerun skips what the store already
    holds. Clips embedded before by any command come from the embedding cache (--no-cache: embed
    again).

    Examples:

        echoclip embed study.dcm

        echoclip embed --dir studies/ --out archive.store --keep-frames --workers 8

        echoclip embed --dir studies/ --device cuda --jpeg-decode device --batch-size 256 --out archive.store

        echoclip embed --weights echo-clip-r --reports reports.txt --format jsonl > reports.jsonl

        echoclip embed --dicomweb https://pacs.example.org/dicom-web --query StudyDate=20240101-20240131 --out jan.store
    """
    from .. import api

    if text or reports:
        if inputs or folder or out is not None:
            raise UsageError("--text/--reports embed texts: give no video inputs and no --out",
                             hint="texts go to stdout; write them to a file with --format jsonl > FILE")
        if reports is not None and not reports.is_file():
            raise UsageError(f"no such reports file: {reports}")
        model = open_model(weights, default=DEFAULT_WEIGHTS, device=device, precision=precision, backend=backend,
                           quiet=quiet)
        _embed_texts(model, list(text or []), reports, fmt)
        return
    types = parse_clip_types(clip_types, ULTRASOUND_TYPES)
    files: Any = archive_of(dicomweb, study, query)
    if files is not None and (inputs or folder or shard):
        raise UsageError("--dicomweb reads its studies from the server: give no INPUTS, --dir or --shard")
    if files is None:
        found = gather_inputs(inputs, folder)
        files = api.Found(shard_slice(found, shard), found.skipped)
    existing = out if out is not None and out.exists() else None
    model = open_model(weights, default=DEFAULT_WEIGHTS, store=existing, device=device, precision=precision,
                       backend=backend, deterministic=deterministic, compile=compile_model, quiet=quiet,
                       inputs=count_inputs(files))
    options = run_options(batch_size=batch_size, workers=workers, sampled=sampling(frames, stride, start, mask),
                          clip_types=types, no_cache=no_cache, jpeg_decode=jpeg_decode, keep_phi=keep_phi)
    from ..records import EmbeddingRecord

    shown = resolve_format(fmt)
    with_vectors = out is None and shown is not OutputFormat.table  # JSONL and CSV carry every field
    failures = done = 0
    try:
        with progress_bar(quiet) as bar, RecordSink(fmt, columns=VIDEO_COLUMNS, fields=EmbeddingRecord.field_names()) as sink:
            for record in api.embed(model, files, out=out, options=options, keep_frames=keep_frames,
                                    with_vectors=with_vectors, flush_every=flush_every, progress=bar):
                if record.error:
                    report_failure(record.error)
                    failures += 1
                done += 1
                sink.write(record.as_dict())
    except KeyboardInterrupt:
        if out is not None:  # the store writer has flushed on the way out
            of = f" of {count_inputs(files)}" if count_inputs(files) is not None else ""
            info(f"interrupted after {done}{of} inputs; what finished is in {out}. "
                 "Run the same command again to go on from there.")
        raise
    if shown is OutputFormat.table and done and not quiet:
        hint("a table shows no vectors: --format jsonl (or csv) writes them, --out STORE keeps them for "
             "search and the zero-shot tasks")
    if failures or discovery_failed(files):
        raise typer.Exit(1)


def _embed_texts(model: "EchoClip", texts: list[str], reports: Optional[Path], fmt: OutputFormat) -> None:
    from ..text_embed import embed_texts

    if reports is not None:
        texts += [line.strip() for line in reports.read_text(encoding="utf-8").splitlines() if line.strip()]
    vectors = embed_texts(model, texts)
    records = [{"text": t, "weights": model.bundle.name, "weights_sha256": model.weights_sha256,
                "embedding": [round(float(x), 6) for x in v]} for t, v in zip(texts, vectors, strict=True)]
    emit_records(records, fmt, columns=["text", "weights"])
