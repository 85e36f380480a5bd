"""The batched embedding pipeline: inputs → decoded frames → packed batches → model → per-video vectors.

Stages, each bounded so memory stays flat whatever the number of inputs:

1. **Decode** (:class:`ClipSource`): each input is read, cropped, masked and resized to uint8
   (T,3,S,S) by :func:`echoclip_cli.media.load_clip`, in ``workers`` processes at most
   ``prefetch`` clips ahead of the model, or inline between batches when ``workers == 0`` (the
   CPU default: see :func:`default_workers`). Worker results are taken as they are ready, so one
   slow file does not stall the device; a file that fails becomes an error record and the
   stream goes on. On a GPU, JPEG Baseline DICOM frames may instead be decoded and prepared on
   the device (``jpeg_decode``, :mod:`echoclip_cli.media.jpeg_device`).
2. **Pack** (:func:`_batches`): frames of consecutive videos are packed into batches of exactly
   ``batch_size`` frames (the last may be shorter), so the device always sees full batches even
   when videos have few frames.
3. **Embed**: uint8 frames go to the device (pinned, non-blocking on CUDA), where they become
   normalised float in the configured channel order; the image tower runs under the chosen
   precision; frame embeddings are L2-normalised. On CUDA the host never waits for a batch:
   its vectors come back non-blocking into pinned memory and are collected after the next batch
   is queued (:func:`start_embedding`).
4. **Gather**: a video's embedding is the mean of its normalised frame embeddings (the released
   protocol); results leave in input order, each as soon as it and all before it are done.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import MediaError
from .inference import EchoClip
from .media.clip import not_scored
from .preprocess_config import PreprocessConfig
from .records import VideoEmbedding


@dataclass
class _Decoded:
    source: str
    frames: torch.Tensor | None
    meta: dict[str, Any]
    error: str | None = None
    index: int = 0  # position in the inputs (items may arrive out of order)
    ready: Any = None  # CUDA event: the frames are complete once it has passed (background preparation)
    skipped: str | None = None  # why this clip is not embedded (its clip type is not wanted)


def _decoded(index: int, source: str, result: Any) -> _Decoded:
    """A :func:`echoclip_cli.media.batch.iter_clips_as_ready` result as the pipeline carries it."""
    if isinstance(result, MediaError):
        return _Decoded(source, None, {}, result.message, index=index)
    if result.meta.get("refused"):  # its header gave a type the run does not score: not decoded
        return _Decoded(source, None, result.meta, index=index, skipped=not_scored(result.meta))
    if result.frames.shape[0] == 0:
        return _Decoded(source, None, {}, f"{source}: no frames", index=index)
    return _Decoded(source, result.frames, result.meta, index=index)


def default_workers(device: torch.device, n_inputs: int | None = None) -> int:
    """Decode processes when the user does not say: none on the CPU, where decoding inline costs
    less than sharing the cores with worker processes (docs/BENCHMARKS.md); on a GPU, every CPU
    core but one (at most 16), so decoding keeps up with the device."""
    if device.type != "cuda" or (n_inputs is not None and n_inputs <= 1):
        return 0
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))  # torchrun: processes on this node share its cores
    return max(1, min(16, (os.cpu_count() or 2) // ranks - 1))


JPEG_DECODE_MODES = ("auto", "workers", "device")


def resolve_jpeg_decode(mode: str | None, device: torch.device) -> torch.device | None:
    """Where JPEG Baseline DICOM frames are decoded: a device (the model's), or ``None`` for the
    worker processes. ``mode`` is ``"auto"`` (the default, also from ``ECHOCLIP_JPEG_DECODE``):
    on the GPU when the model runs on CUDA and torchvision's nvJPEG works there, else in the
    workers; ``"workers"``; or ``"device"``, which fails when the device cannot decode JPEG."""
    from .errors import UsageError
    from .media.jpeg_device import backend, unavailable_reason

    mode = (mode or os.environ.get("ECHOCLIP_JPEG_DECODE") or "auto").strip().lower()
    if mode not in JPEG_DECODE_MODES:
        raise UsageError(f"JPEG decoding must be one of {', '.join(JPEG_DECODE_MODES)}, not {mode!r}")
    if mode == "workers":
        return None
    found = backend(device)
    if mode == "auto":
        return device if device.type == "cuda" and found == "nvjpeg" else None
    if found is None:
        raise UsageError(
            f"cannot decode JPEG on {device}: {unavailable_reason(device)}. Install torchvision built for "
            "this torch (pip install 'echoclip[gpu]'), or use --jpeg-decode workers"
        )
    return device


@dataclass
class DeviceReport:
    """What preparing JPEG frames on a device (``jpeg_decode``) did in one run: clips prepared
    there, clips given back to the CPU path by reason, batches and host synchronisations. The
    first failure on the device is kept with its cause and said once through ``warn``, in the
    consumer's thread (:func:`embed_videos`); :meth:`summary` is the run's line about it."""

    warn: Callable[[str], None] | None = None
    prepared: int = 0
    batches: int = 0  # groups of same-size clips prepared together
    host_syncs: int = 0
    given_back: dict[str, int] = field(default_factory=dict)  # reason → clips
    first_error: str | None = None
    _unsaid: list[str] = field(default_factory=list)

    @property
    def fallbacks(self) -> int:
        """Clips the device gave back to the CPU path, whatever the reason."""
        return sum(self.given_back.values())

    def give_back(self, reason: str, clips: int = 1) -> None:
        self.given_back[reason] = self.given_back.get(reason, 0) + clips

    def failed(self, what: str, cause: str, clips: int) -> None:
        """Clips lost to an error on the device (``what``: the step): counted, the first said."""
        self.give_back(f"{what} error", clips)
        if self.first_error is None:
            self.first_error = f"{what}: {cause}"
            self._unsaid.append(f"JPEG frames could not be {what}d on the device ({cause}); such clips are "
                                "decoded on the CPU instead (said once; the run's summary counts them)")

    def say(self) -> None:
        """Pass what is still unsaid to ``warn``."""
        while self._unsaid and self.warn is not None:
            self.warn(self._unsaid.pop(0))

    def summary(self) -> str | None:
        """One line for the end of a run, or None when no JPEG went the device way."""
        if not self.prepared and not self.fallbacks:
            return None
        line = f"JPEG on the device: {self.prepared} clips prepared in {self.batches} batches"
        if self.fallbacks:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.given_back.items()))
            line += f"; {self.fallbacks} decoded on the CPU instead ({why})"
        return line + (f"; first error: {self.first_error}" if self.first_error else "")


class ClipSource:
    """Decoded clips, inline (``workers == 0``, in input order) or in processes, as each is ready
    (each carries its input ``index``), at most ``prefetch`` in flight: a slow file does not hold
    up the device while others are ready (:func:`echoclip_cli.parallel.completion_map`).

    With ``jpeg_device`` set, JPEG Baseline DICOM inputs arrive from the workers as undecoded
    codestreams; those of consecutive inputs are decoded together, about ``group_frames`` frames
    per call, on that device, and clips of one frame size prepared there together
    (:func:`echoclip_cli.media.clip.finish_codestream_group`). Decoding runs on a thread (and CUDA
    stream) of its own, one group ahead of preparation, so the two overlap. Their frames stay on the device;
    so do those of other inputs, moved there as they arrive. A clip the device cannot take
    (colour, a size the header did not promise, a codestream it refuses, an error on the device)
    goes back to the ordinary path, in the workers when there are some; ``report`` counts them.
    """

    def __init__(
        self,
        sources: Iterable[str],
        cfg: PreprocessConfig,
        *,
        workers: int = 0,
        prefetch: int = 8,
        keep_phi: bool = False,
        salt: str | None = None,
        jpeg_device: torch.device | None = None,
        group_frames: int = 256,
        report: DeviceReport | None = None,
        wanted_types: Sequence[str] | None = None,
    ) -> None:
        self.sources = iter(sources)
        self.wanted_types = wanted_types
        self.cfg, self.keep_phi, self.salt = cfg, keep_phi, salt
        self.workers = workers
        self.prefetch = max(prefetch, workers * 2, 1)
        self.jpeg_device, self.group_frames = jpeg_device, max(1, group_frames)
        self.report = report if report is not None else DeviceReport()
        self._again: deque[tuple[int, str]] = deque()  # (index, path) the device gave back
        self._decoder: Any = None  # the decoding thread (a one-thread executor), started on first use
        self._decode_stream: Any = None  # its CUDA stream

    def _clips(self, sources: Iterable[str], workers: int) -> Iterator[tuple[int, Path, Any]]:
        from .media.batch import iter_clips_as_ready

        return iter_clips_as_ready(sources, self.cfg, workers=workers, keep_phi=self.keep_phi, salt=self.salt,
                                   window=self.prefetch, codestreams=self.jpeg_device is not None, again=self._again,
                                   wanted_types=self.wanted_types)

    def __iter__(self) -> Iterator[_Decoded]:
        if self.jpeg_device is None:
            for index, path, result in self._clips(self.sources, self.workers):
                yield _decoded(index, str(path), result)
            return
        try:
            yield from self._overlapped(self._groups())
            while self._again:  # given back after the last input was read: the ordinary path, once more
                for index, path, result in self._clips((), min(self.workers, len(self._again))):
                    yield from self._finish(self._start([_decoded(index, str(path), result)]))
        finally:
            if self._decoder is not None:
                self._decoder.shutdown(wait=True)
                self._decoder = None

    def _groups(self) -> Iterator[list[Any]]:
        """The inputs in groups to decode together: finished :class:`_Decoded` and
        ``(index, Codestreams)`` still to decode, about ``group_frames`` frames each; an input
        with nothing to wait for goes alone, at once."""
        from .media.clip import Codestreams

        group: list[Any] = []
        waiting = held = 0  # frames still to decode; frames already decoded, held behind them
        for index, path, result in self._clips(self.sources, self.workers):
            if isinstance(result, Codestreams):
                group.append((index, result))
                waiting += len(result.streams)
            elif not group:  # nothing to wait for: pass it on at once
                yield [_decoded(index, str(path), result)]
                continue
            else:
                item = _decoded(index, str(path), result)
                group.append(item)
                held += 0 if item.frames is None else item.frames.shape[0]
            if waiting >= self.group_frames or held >= self.group_frames:
                yield group
                group, waiting, held = [], 0, 0
        if group:
            yield group

    def _overlapped(self, groups: Iterator[list[Any]]) -> Iterator[_Decoded]:
        """Each group's codestreams are decoded on the decoding thread while the group before it
        is prepared here: the rate is the slower stage's, not the sum of both. Groups leave in
        order; a group with codestreams leaves once the next group is read (or the inputs end),
        one with nothing to decode at once."""
        started = None
        for group in groups:
            ticket = self._start(group)
            if started is not None:
                yield from self._finish(started)
                started = None
            if ticket[1] is None:  # nothing to decode: no reason to hold it back
                yield from self._finish(ticket)
            else:
                started = ticket
        if started is not None:
            yield from self._finish(started)

    def _start(self, group: list[Any]) -> tuple[list[Any], Any]:
        """Queue the decoding of the group's codestreams on the decoding thread (its own CUDA
        stream); (group, future of :meth:`_decode_all`, or None when there is nothing to decode)."""
        jobs = [item[1] for item in group if isinstance(item, tuple)]
        if not jobs:
            return group, None
        if self._decoder is None:
            from concurrent.futures import ThreadPoolExecutor

            self._decoder = ThreadPoolExecutor(1, thread_name_prefix="echoclip-decode")
        return group, self._decoder.submit(self._decode_all, jobs)

    def _finish(self, ticket: tuple[list[Any], Any]) -> Iterator[_Decoded]:
        """Prepare the group's decoded frames on the device (this thread); yield the group in
        order, less the clips given back (they come again from the ordinary path)."""
        group, future = ticket
        clips = self._prepare(*future.result()) if future is not None else {}
        for item in group:
            if isinstance(item, tuple):
                index, job = item
                clip = clips.get(id(job))
                if clip is None:
                    self._again.append((index, job.source))
                    continue
                decoded = _Decoded(job.source, clip.frames, clip.meta, index=index)
                if clip.frames.shape[0] == 0:
                    decoded = _Decoded(job.source, None, {}, f"{job.source}: no frames", index=index)
                yield decoded
            else:
                if item.frames is not None:
                    item.frames = item.frames.to(self.jpeg_device)
                yield item

    def _prepare(self, jobs: list[Any], frames: dict[int, list[torch.Tensor] | None], failures: list[str],
                 ready: Any) -> dict[int, Any]:
        """Prepared clips by job id, for the jobs the device takes; clips of one frame count and
        size are prepared together (one batch: a fixed number of host synchronisations). ``ready``:
        the decoding stream's event, which this thread's stream waits for (CUDA)."""
        from .media.clip import finish_codestream_group
        from .media.jpeg_device import backend
        from .media.phi import safe_reason
        from .preprocess import host_syncs

        syncs = host_syncs()
        for cause in failures:
            self.report.failed("decode", cause, 1)
        if ready is not None:  # the frames were made on the decoding thread's stream
            consumer = torch.cuda.current_stream(self.jpeg_device)
            consumer.wait_event(ready)
            for got in frames.values():
                for tensor in got or ():
                    tensor.record_stream(consumer)
        batches: dict[tuple[int, ...], list[Any]] = {}
        for job in jobs:
            got = frames.get(id(job))
            if got is None:
                continue
            shapes = {tuple(f.shape) for f in got}
            shape = shapes.pop() if len(shapes) == 1 else None
            if shape is None or shape != (3, *job.size):
                self.report.give_back("frame size")
                continue
            batches.setdefault((len(got), *shape), []).append(job)
        out: dict[int, Any] = {}
        for shape, members in batches.items():
            self.report.batches += 1
            try:
                stacked = torch.stack([f for job in members for f in frames.pop(id(job))]).view(len(members), *shape)
                clips = finish_codestream_group(members, stacked, self.cfg, backend(self.jpeg_device) or "")
            except Exception as exc:  # noqa: BLE001 - out of GPU memory, a driver error: said once, counted; the CPU path takes these clips
                self.report.failed("prepare", f"{type(exc).__name__}: {safe_reason(exc)}", len(members))
                continue
            for job, clip in zip(members, clips, strict=True):
                if clip is None:
                    self.report.give_back("colour")
                else:
                    out[id(job)] = clip
                    self.report.prepared += 1
        self.report.host_syncs += host_syncs() - syncs
        return out

    def _decode_all(self, jobs: list[Any]) -> tuple[list[Any], dict[int, list[torch.Tensor] | None], list[str], Any]:
        """On the decoding thread: (jobs, decoded frames per job id — ``None`` for a job whose
        codestreams fail to decode —, the causes of those failures, the event that marks the
        frames done on the decoding stream or None off CUDA). The report is left to the
        preparing thread (:meth:`_prepare`)."""
        from contextlib import nullcontext

        from .media.jpeg_device import JpegDecodeError, decode_jpegs
        from .preprocess import count_host_sync

        device = self.jpeg_device
        assert device is not None
        cuda = device.type == "cuda"
        if cuda and self._decode_stream is None:
            self._decode_stream = torch.cuda.Stream(device)
        failures: list[str] = []
        with torch.cuda.stream(self._decode_stream) if cuda else nullcontext():
            if cuda:  # nvJPEG's output must not take memory that queued work on this stream still uses
                count_host_sync()
                torch.cuda.current_stream(device).synchronize()
            streams = [data for job in jobs for data in job.streams]
            try:
                decoded = decode_jpegs(streams, device)
            except JpegDecodeError:  # one damaged codestream fails the batch: find whose, per input
                out = {id(job): self._decode_one(job, failures) for job in jobs}
            else:
                out, start = {}, 0
                for job in jobs:
                    out[id(job)] = decoded[start : start + len(job.streams)]
                    start += len(job.streams)
            ready = None
            if cuda:
                ready = torch.cuda.Event()
                ready.record()
        return jobs, out, failures, ready

    def _decode_one(self, job: Any, failures: list[str]) -> list[torch.Tensor] | None:
        from .media.jpeg_device import JpegDecodeError, decode_jpegs

        try:
            return decode_jpegs(job.streams, self.jpeg_device)
        except JpegDecodeError as exc:  # a damaged file (the CPU path gives its error record), or the decoder
            failures.append(str(exc))
            return None


def in_background(items: Iterable[_Decoded], device: torch.device, depth: int) -> Iterator[_Decoded]:
    """Iterate ``items`` in a thread, at most ``depth`` ahead of the consumer.

    Preparing frames on the device costs the CPU some Python per batch and per video (the mask's
    components and hull); in a thread it overlaps the model, which waits on the GPU with the GIL released. On
    CUDA the thread queues its GPU work on a stream of its own and each item carries an event;
    the consumer's stream waits for that event before using the frames, and the frames are
    marked as used on the consumer's stream so their memory is not reused early. Exceptions in
    the thread are raised in the consumer; closing the consumer stops the thread.
    """
    import queue
    import threading
    from contextlib import nullcontext

    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                for item in items:
                    if stream is not None and item.frames is not None and item.frames.is_cuda:
                        item.ready = torch.cuda.Event()
                        item.ready.record(stream)
                    if not put("item", item):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put("error", exc)
            return
        put("end", None)

    thread = threading.Thread(target=produce, name="echoclip-prepare", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            if value.ready is not None:
                consumer = torch.cuda.current_stream(device)
                consumer.wait_event(value.ready)
                value.frames.record_stream(consumer)
                value.ready = None
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class _Batch:
    frames: torch.Tensor  # uint8 (B,3,S,S)
    owners: list[tuple[int, int, int]]  # (video slot, first frame in video, count)


def _batches(videos: Iterator[tuple[int, torch.Tensor]], batch_size: int) -> Iterator[_Batch]:
    """Pack frames of consecutive videos into batches of ``batch_size`` frames."""
    parts: list[torch.Tensor] = []
    owners: list[tuple[int, int, int]] = []
    filled = 0
    for slot, frames in videos:
        offset = 0
        while offset < frames.shape[0]:
            take = min(batch_size - filled, frames.shape[0] - offset)
            parts.append(frames[offset : offset + take])
            owners.append((slot, offset, take))
            filled += take
            offset += take
            if filled == batch_size:
                yield _Batch(torch.cat(parts), owners)
                parts, owners, filled = [], [], 0
    if filled:
        yield _Batch(torch.cat(parts), owners)


@dataclass
class _Embedding:
    """A batch's L2-normalised embeddings (B,E) on their way to the host: ``vectors`` holds them
    once ``done`` (a CUDA event, None when they are there already) has passed."""

    vectors: torch.Tensor
    done: Any = None

    def result(self) -> torch.Tensor:
        if self.done is not None:
            self.done.synchronize()
            self.done = None
        return self.vectors


def start_embedding(model: EchoClip, frames: torch.Tensor, cfg: PreprocessConfig) -> _Embedding:
    """Queue the embedding of stored uint8 frames (B,3,S,S) without waiting for it: on CUDA the
    normalised embeddings are copied, non-blocking, into pinned host memory behind the model's
    work and an event marks when they have arrived (:meth:`_Embedding.result` waits for it); on
    other devices they are on the host at once."""
    from .preprocess import to_model_input

    if model.device.type == "cuda" and frames.device.type == "cpu":
        frames = frames.pin_memory().to(model.device, non_blocking=True)
    images = to_model_input(frames, cfg, device=model.device)
    vectors = F.normalize(model.encode_image(images), dim=-1)
    if vectors.device.type != "cuda":
        return _Embedding(vectors.cpu())
    host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)
    host.copy_(vectors, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return _Embedding(host, done)


def embed_frames(model: EchoClip, frames: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """L2-normalised embeddings (B,E) on the CPU for stored uint8 frames (B,3,S,S)."""
    return start_embedding(model, frames, cfg).result()


def embed_videos(
    sources: Sequence[str | os.PathLike[str]] | Iterable[str | os.PathLike[str]],
    model: EchoClip,
    *,
    cfg: PreprocessConfig | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    keep_frames: bool = False,
    keep_phi: bool = False,
    salt: str | None = None,
    jpeg_decode: str | None = None,
    prepare_thread: bool | None = None,
    on_frames: Callable[[int], None] | None = None,
    clip_types: Sequence[str] | None = None,
    device_report: DeviceReport | None = None,
) -> Iterator[VideoEmbedding]:
    """Embed videos in input order; bad inputs come out as records with ``error`` set.

    With ``clip_types``, clips of other types (``echoclip_cli.media.classify``) are not embedded:
    their results carry ``skipped`` (why) and no vectors. Those whose DICOM header gives the type
    are not even decoded; the others are decoded and classified from their pixels.

    ``on_frames(n)`` is called after each batch with the number of frames it embedded (progress
    finer than one video: a CPU batch may hold several whole videos).

    ``jpeg_decode`` says where JPEG Baseline DICOM frames are decoded (:func:`resolve_jpeg_decode`).
    When they are decoded on the device, frames are prepared in a background thread
    (:func:`in_background`) on CUDA; ``prepare_thread`` overrides that choice. ``device_report``
    (:class:`DeviceReport`) counts what the device prepared and gave back; its first error is
    passed to its ``warn`` from this thread.
    """
    cfg = cfg or model.preprocess
    if workers is None:
        workers = default_workers(model.device, len(sources) if isinstance(sources, Sequence) else None)
    jpeg_device = resolve_jpeg_decode(jpeg_decode, model.device)
    report = device_report if device_report is not None else DeviceReport()
    decoded: Iterable[_Decoded] = ClipSource((str(s) for s in sources), cfg, workers=workers, keep_phi=keep_phi,
                                             salt=salt, jpeg_device=jpeg_device, group_frames=batch_size,
                                             report=report, wanted_types=clip_types)
    if prepare_thread if prepare_thread is not None else (jpeg_device is not None and jpeg_device.type == "cuda"):
        decoded = in_background(decoded, model.device, depth=2 * max(1, batch_size // 16))
    slots: dict[int, tuple[_Decoded, list[torch.Tensor | None]]] = {}  # by input index
    ready: deque[VideoEmbedding] = deque()
    next_out = 0  # results leave in input order

    def videos() -> Iterator[tuple[int, torch.Tensor]]:
        for item in decoded:
            report.say()
            if item.error is None and clip_types is not None and item.meta.get("clip_type") not in clip_types:
                item.skipped = not_scored(item.meta)
                item.frames = None
            if item.error is not None or item.skipped is not None:
                slots[item.index] = (item, [])
                continue
            slots[item.index] = (item, [None] * item.frames.shape[0])
            yield item.index, item.frames
            item.frames = None  # the batcher holds its own references; free as batches go

    def flush_finished() -> Iterator[VideoEmbedding]:
        nonlocal next_out
        while next_out in slots and _finished(slots[next_out]):
            item, parts = slots.pop(next_out)
            next_out += 1
            yield _result(item, parts, keep_frames)

    def collect(batch: _Batch, embedding: _Embedding) -> None:
        vectors = embedding.result()
        if on_frames is not None:
            on_frames(vectors.shape[0])
        row = 0
        for slot, first, count in batch.owners:
            slots[slot][1][first] = vectors[row : row + count]
            row += count
        ready.extend(flush_finished())

    # A batch's vectors are collected once the next batch is queued (on CUDA: no wait for the
    # device per batch); where they are on the host at once, at once.
    pending: tuple[_Batch, _Embedding] | None = None
    for batch in _batches(videos(), batch_size):
        embedding = start_embedding(model, batch.frames, cfg)
        if pending is not None:
            collect(*pending)
            pending = None
        if embedding.done is None:
            collect(batch, embedding)
        else:
            pending = (batch, embedding)
        while ready:
            yield ready.popleft()
    if pending is not None:
        collect(*pending)
        yield from ready
    report.say()
    yield from flush_finished()  # every slot is finished now, failed ones included


def _finished(entry: tuple[_Decoded, list[torch.Tensor | None]]) -> bool:
    item, parts = entry
    if item.error is not None:
        return True
    return _chunks_complete(parts)


def _chunks_complete(parts: list[torch.Tensor | None]) -> bool:
    """Parts are stored at their first frame index; complete when they tile the whole clip."""
    index = 0
    while index < len(parts):
        chunk = parts[index]
        if chunk is None:
            return False
        index += chunk.shape[0]
    return True


def _result(item: _Decoded, parts: list[torch.Tensor | None], keep_frames: bool) -> VideoEmbedding:
    if item.error is not None or item.skipped is not None:
        return VideoEmbedding(source=item.source, meta=item.meta, error=item.error, skipped=item.skipped)
    frames = torch.cat([p for p in parts if p is not None])  # (T,E) normalised
    return VideoEmbedding(
        source=item.source,
        embedding=frames.mean(dim=0).numpy(),
        frame_embeddings=frames.numpy() if keep_frames else None,
        meta=item.meta,
    )


def naive_embed_video(model: EchoClip, source: str | Path, cfg: PreprocessConfig | None = None) -> np.ndarray:
    """Reference loop as upstream does it: one video, all its frames in one call (for benchmarks/tests)."""
    from .media import load_clip

    cfg = cfg or model.preprocess
    clip = load_clip(source, cfg)
    return embed_frames(model, clip.frames, cfg).mean(dim=0).numpy()
