"""Embedding videos: the use case every other one builds on.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip")
    >>> for record in echoclip_cli.embed(model, ["study/"], out="archive.store"):
    ...     print(record.source, record.n_frames, record.error)
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..defaults import batch_size_for
from ..media.classify import ULTRASOUND_TYPES
from ..options import DEFAULT, RunOptions
from .archive import reads_archives
from .common import PathLike, Progress, Silent, check_model, find

if TYPE_CHECKING:
    from ..inference import EchoClip
    from ..records import Record, VideoEmbedding


def embed_files(model: "EchoClip", files: Sequence[Path], options: RunOptions = DEFAULT, *,
                keep_frames: bool = False, progress: Progress | None = None) -> Iterator["VideoEmbedding"]:
    """Pipeline results for ``files`` in order, reporting frames and finished inputs to ``progress``;
    clips whose type is not among the options' clip types come
    back ``skipped`` (read, classified, not embedded; no clip types: every clip is embedded).
    ``keep_frames`` keeps per-frame embeddings."""
    from ..pipeline import DeviceReport, embed_videos

    progress = progress or Silent()
    cfg = options.sampled().apply(model.preprocess)
    progress.start(len(files), cfg.frames)
    report = DeviceReport(warn=progress.warn)
    for result in embed_videos(files, model, cfg=cfg, batch_size=batch_size_for(model.device.type, options.batch_size),
                               workers=options.workers, keep_frames=keep_frames, keep_phi=options.keep_phi,
                               jpeg_decode=options.jpeg_decode, on_frames=progress.frames,
                               clip_types=options.clip_types, device_report=report):
        result = _finite(result)
        progress.item(result.n_frames)
        if result.ok:
            result.meta.update(model.numerics)
        yield result
    summary = report.summary()
    if summary is not None:  # errors on the device show with --quiet too
        (progress.warn if report.first_error else progress.note)(summary)


def embedded(model: "EchoClip", files: Sequence[Path], options: RunOptions = DEFAULT,
             progress: Progress | None = None) -> Iterator["VideoEmbedding"]:
    """Results for ``files`` in order, with their per-frame embeddings: from the frame cache where
    it holds them (:mod:`echoclip_cli.frame_cache`; not when ``options.cache`` is off), the others
    embedded now and kept in the cache. Every command that embeds files goes through here, so
    ``embed`` after ``predict-ef`` on the same files (or the other way round) embeds nothing again."""
    from ..frame_cache import FrameCache, through_cache

    progress = progress or Silent()

    def embed_now(todo: list[Path]) -> Iterator["VideoEmbedding"]:
        return embed_files(model, todo, options, keep_frames=True, progress=progress)

    cache = None
    if options.cache:
        cfg = options.sampled().apply(model.preprocess)
        cache = FrameCache(model.bundle.name, model.weights_sha256, cfg, model.embed_dim, model.numerics)
    yield from through_cache(cache, list(files), embed_now, options.clip_types, progress.note)


def _finite(result: "VideoEmbedding") -> "VideoEmbedding":
    """``result``, or an error record in its place when its embedding is not all finite: a NaN
    vector is never stored, cached or scored (it would read as a plausible EF)."""
    import numpy as np

    vectors = [v for v in (result.embedding, result.frame_embeddings) if v is not None]
    if not result.ok or all(np.isfinite(v).all() for v in vectors):
        return result
    from dataclasses import replace

    return replace(result, embedding=None, frame_embeddings=None,
                   error=f"{result.source}: its embedding holds non-finite values (NaN or infinity)")


def _in_the_store(arguments: dict[str, Any]) -> set[str]:
    """What the store ``out`` holds already, by source (an archive's instance URLs): a resumed
    archive run fetches none of it."""
    from ..store import stored_sources

    out = arguments.get("out")
    return stored_sources(out) if out is not None else set()


@reads_archives(lambda options: options.types(ULTRASOUND_TYPES), held=_in_the_store)
def embed(
    model: "EchoClip",
    inputs: Sequence[PathLike] | None = None,
    *,
    out: PathLike | None = None,
    options: RunOptions = DEFAULT,
    keep_frames: bool = False,
    with_vectors: bool = True,
    flush_every: int = 256,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Embed videos: one :class:`~echoclip_cli.records.EmbeddingRecord` per input, in input order.

    Every ultrasound clip is embedded by default (its ``clip_type`` is recorded and stored);
    non-ultrasound objects are refused with their reason (``skipped``).

    With ``out`` the results are appended to that store (created if needed, resumable: inputs it
    holds already are skipped, and ``progress.note`` says how many); an existing store must have
    been made with ``model``'s weights. ``keep_frames`` stores per-frame embeddings (for zero-shot
    tasks later). ``with_vectors`` puts the 512 numbers in each record. Clips the frame cache holds
    (from an earlier run of any command) are not embedded again; ``options.cache`` False embeds all.
    """
    from ..records import EmbeddingRecord

    files = find(inputs)
    check_model(model, "embed", out if out is not None and Path(out).exists() else None)
    options = options.replace(clip_types=options.types(ULTRASOUND_TYPES))
    progress = progress or Silent()
    writer = _writer(model, out, options, keep_frames, flush_every)
    if writer is not None:
        todo = writer.todo(files)
        if len(todo) < len(files):
            progress.note(f"{len(files) - len(todo)} inputs already in {writer.path}; embedding {len(todo)}")
        files = todo
    with writer if writer is not None else nullcontext():
        for result in embedded(model, files, options, progress):
            if writer is not None:
                writer.add(result)
            yield EmbeddingRecord.of(result, model, with_vector=with_vectors)


def _writer(model: "EchoClip", out: PathLike | None, options: RunOptions, keep_frames: bool, flush_every: int) -> Any:
    """The store writer for ``out`` (None without one)."""
    if out is None:
        return None
    from ..store import StoreWriter

    return StoreWriter(out, weights_name=model.bundle.name, weights_sha256=model.weights_sha256,
                       cfg=options.sampled().apply(model.preprocess), embed_dim=model.embed_dim,
                       keep_frames=keep_frames, flush_every=flush_every, numerics=model.numerics)
