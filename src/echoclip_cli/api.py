"""One library call per use case; the command line is a thin face over these.

    >>> import echoclip_cli
    >>> for record in echoclip_cli.predict_ef(["study/a4c.dcm"], weights="echo-clip"):
    ...     print(record.level, record.study, record.ef)

Each call takes input paths (files or folders) or a store, and a weights name or path (or an
already loaded ``model=``), checks its arguments before any model loads, and streams typed
records (:mod:`echoclip_cli.records`, :mod:`echoclip_cli.tasks`): one per video as it finishes,
then one per study. A failed input is a record with ``error`` set; only a wrong call raises
(:class:`~echoclip_cli.errors.UsageError`). Nothing here prints: progress and notes reach a
caller through the optional ``progress`` hook (:class:`Progress`).

This module imports only light modules at the top, so that checking arguments never waits for
torch; the model stack loads inside the calls.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

from .defaults import (DEFAULT_BATCH_SIZE, DEFAULT_WEIGHTS, DEVICE_TASKS, RETRIEVAL_WEIGHTS, ZERO_SHOT_WEIGHTS,
                       batch_size_for)
from .errors import EchoclipError, UsageError
from .media.classify import ULTRASOUND_TYPES, VIDEO_TYPES, parse_clip_types
from .preprocess_config import Sampling
from .prompts import load_thresholds, select_tasks

if TYPE_CHECKING:
    from .inference import EchoClip
    from .patients import MatchSettings, PatientMatches
    from .records import Record, VideoEmbedding
    from .report_html import StudyReport
    from .retrieval import ReportRanking, SearchResult
    from .tasks import FrameSet

PathLike = str | os.PathLike[str]
PATIENT_TYPES = ("2d", "2d_colour")  # clips patient matching compares (videos; colour flow keeps its tissue)


class Progress(Protocol):
    """What a long call reports while it runs (the CLI draws a bar from it)."""

    def start(self, total: int, frames_per_item: int | None) -> None: ...
    def frames(self, count: int) -> None: ...
    def item(self, n_frames: int) -> None: ...
    def note(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...


class _Silent:
    def start(self, total: int, frames_per_item: int | None) -> None:
        pass

    def frames(self, count: int) -> None:
        pass

    def item(self, n_frames: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


# --------------------------------------------------------------------------- arguments


class Found(list):  # type: ignore[type-arg]
    """Input files found by :func:`find` (a list of paths), with ``skipped``: one record
    ``{"source", "error", "kind"}`` for each path that is not an input (DICOMDIR, SR, …). Passing
    it to a use-case call skips looking again."""

    def __init__(self, files: Sequence[Path], skipped: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(files)
        self.skipped = list(skipped)


def find(inputs: Sequence[PathLike] | None) -> Found:
    """Input files from paths (folders searched recursively), in a stable order; a usage error
    when none is given or one does not exist."""
    from .media.discover import find_inputs

    if isinstance(inputs, Found):
        return inputs
    paths = [Path(p) for p in inputs or ()]
    if not paths:
        raise UsageError("no inputs: give files or folders, or --dir DIR")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing[:3])}")
    return Found(*find_inputs(paths))


def store_header(store: PathLike) -> dict[str, Any]:
    """A store's header, or a usage error when ``store`` is not a readable store."""
    from .store import read_header

    path = Path(store)
    if not path.exists():
        raise UsageError(f"no such store: {path}")
    try:
        return read_header(path)
    except EchoclipError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None


def inputs_or_store(inputs: Sequence[PathLike] | None, store: PathLike | None) -> Found | None:
    """The input files, or None when a ``store`` is read instead (checked: one or the other)."""
    if store is not None:
        if inputs:
            raise UsageError("give INPUTS (or --dir) or --store, not both")
        store_header(store)
        return None
    return find(inputs)


def weights_for(weights: str | None, store: PathLike | None, default: str) -> str:
    """The weights to load: ``weights``, else the store's own (found by sha256 among installed
    bundles, never by taking its recorded name as a path), else ``default``. Weights that differ
    from the store's are a usage error."""
    if store is None:
        return weights or default
    from . import weights as w
    from .store import check_weights

    header = store_header(store)
    recorded = header["weights"]
    name, sha = str(recorded.get("name")), str(recorded.get("sha256"))
    if weights is not None:
        check_weights(Path(store), header, weights, w.resolve(weights, auto_pull=False).weights_sha256)
        return weights
    bundle = w.installed_by_sha256(sha, prefer=name)
    if bundle is None:
        hint = (w.manual_import_hint(name) if name in w.REGISTRY
                else "install them with `echoclip weights import CHECKPOINT --name NAME`")
        raise UsageError(f"{store} holds embeddings from weights {name!r} ({sha[:12]}…), which are not installed",
                         hint=hint)
    return bundle.name


def device_for_rank(device: str) -> str:
    """Under torchrun, ``auto`` and a bare ``cuda`` mean this process's own GPU (LOCAL_RANK modulo
    the GPUs there are), made the current device so that every CUDA call of the rank lands on it."""
    if device in ("auto", "cuda") and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            index = int(os.environ["LOCAL_RANK"]) % max(1, torch.cuda.device_count())
            torch.cuda.set_device(index)
            return f"cuda:{index}"
    return device


def _model(model: "EchoClip | None", weights: str | None, store: PathLike | None, default: str, *,
           device: str, precision: str, backend: str = "auto", task: str = "embed", deterministic: bool = False,
           compile: bool = False, inputs: int | None = None) -> "EchoClip":
    """``model`` as given (checked against the store), or the weights loaded; either way refused
    when its backend failed ``task``'s tolerances on this CPU (:func:`check_numerics`)."""
    if model is not None:
        if store is not None:
            from .store import check_weights

            check_weights(Path(store), store_header(store), model.bundle.name, model.weights_sha256)
    else:
        from .inference import load_model

        model = load_model(weights_for(weights, store, default), device=device_for_rank(device), precision=precision,
                           deterministic=deterministic, compile=compile, backend=backend, inputs=inputs)
    check_numerics(model, task)
    return model


def check_backend(backend: str, precision: str) -> None:
    """``--backend`` and ``--precision`` as words (no torch): a usage error before anything loads."""
    import importlib.util

    backend, precision = (backend or "auto").strip().lower(), (precision or "auto").strip().lower()
    if backend not in ("auto", "torch", "compiled", "onnx"):
        raise UsageError(f"unknown backend {backend!r}: use auto, torch, compiled or onnx")
    if backend == "compiled" and precision not in ("auto", "fp32"):
        raise UsageError(f"the compiled backend runs fp32, not {precision}")
    if precision not in ("auto", "fp32", "bf16", "fp16", "int8"):
        raise UsageError(f"unknown precision {precision!r}: use auto, fp32, bf16, fp16 or int8")
    if precision == "int8" and backend == "torch":
        raise UsageError("int8 runs on the onnx backend only", hint="use --backend onnx")
    if backend == "onnx" and precision in ("bf16", "fp16"):
        raise UsageError(f"the onnx backend runs fp32 or int8, not {precision}")
    if (backend == "onnx" or precision == "int8") and not all(
            importlib.util.find_spec(m) for m in ("onnxruntime", "onnx")):
        raise UsageError("the onnx backend needs onnxruntime and onnx", hint="pip install 'echoclip[cpu-fast]'")


def check_numerics(model: "EchoClip", task: str) -> None:
    """Refuse a use case on a backend whose check on this CPU failed that use case's tolerances
    (:data:`echoclip_cli.onnx_backend.TOLERANCES`); the torch backend always passes."""
    if model.backend == "torch":
        return
    from . import onnx_backend

    result = onnx_backend.read_check(model.bundle)
    reason = "no check of the ONNX backend on this CPU" if result is None else \
        onnx_backend.refusal(result, model.precision, task)
    if reason:
        raise UsageError(reason, hint="use --backend torch" + (" or --precision fp32" if model.precision != "fp32" else ""))


# --------------------------------------------------------------------------- embedding


def embed_files(model: "EchoClip", files: Sequence[Path], *, sampling: Sampling | None = None,
                batch_size: int | None = DEFAULT_BATCH_SIZE, workers: int | None = None, keep_frames: bool = False,
                keep_phi: bool = False, jpeg_decode: str | None = None, clip_types: Sequence[str] | None = None,
                progress: Progress | None = None) -> Iterator["VideoEmbedding"]:
    """Pipeline results for ``files`` in order, reporting frames and finished inputs to ``progress``;
    clips whose type is not in ``clip_types`` come back ``skipped`` (read, classified, not embedded)."""
    from .pipeline import DeviceReport, embed_videos

    progress = progress or _Silent()
    cfg = (sampling or Sampling()).apply(model.preprocess)
    progress.start(len(files), cfg.frames)
    batch_size = batch_size_for(model.device.type, batch_size)
    report = DeviceReport(warn=progress.warn)
    for result in embed_videos(files, model, cfg=cfg, batch_size=batch_size, workers=workers,
                               keep_frames=keep_frames, keep_phi=keep_phi, jpeg_decode=jpeg_decode,
                               on_frames=progress.frames, clip_types=clip_types, device_report=report):
        progress.item(result.n_frames)
        if result.ok:
            result.meta.update(model.numerics)
        yield result
    summary = report.summary()
    if summary is not None:  # errors on the device show with --quiet too
        (progress.warn if report.first_error else progress.note)(summary)


def embed(
    inputs: Sequence[PathLike] | None = None,
    *,
    weights: str | None = None,
    model: "EchoClip | None" = None,
    out: PathLike | None = None,
    sampling: Sampling | None = None,
    keep_frames: bool = False,
    with_vectors: bool = True,
    flush_every: int = 256,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    jpeg_decode: str | None = None,
    keep_phi: bool = False,
    clip_types: Sequence[str] = ULTRASOUND_TYPES,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    deterministic: bool = False,
    compile: bool = False,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Embed videos: one :class:`~echoclip_cli.records.EmbeddingRecord` per input, in input order.

    Every ultrasound clip is embedded by default (its ``clip_type`` is recorded and stored);
    non-ultrasound objects are refused with their reason (``skipped``).

    With ``out`` the results are appended to that store (created if needed, resumable: inputs it
    holds already are skipped, and ``progress.note`` says how many); the store's own weights are
    used unless ``weights`` names them. ``with_vectors`` puts the 512 numbers in each record.
    """
    from .records import EmbeddingRecord
    from .store import StoreWriter

    files = find(inputs)
    existing = out if out is not None and Path(out).exists() else None
    model = _model(model, weights, existing, DEFAULT_WEIGHTS, device=device, precision=precision, backend=backend,
                   deterministic=deterministic, compile=compile, inputs=len(files))
    progress = progress or _Silent()
    cfg = (sampling or Sampling()).apply(model.preprocess)
    writer = None
    if out is not None:
        writer = StoreWriter(out, weights_name=model.bundle.name, weights_sha256=model.weights_sha256, cfg=cfg,
                             embed_dim=model.embed_dim, keep_frames=keep_frames, flush_every=flush_every,
                             numerics=model.numerics)
        todo = writer.todo(files)
        if len(todo) < len(files):
            progress.note(f"{len(files) - len(todo)} inputs already in {writer.path}; embedding {len(todo)}")
        files = todo
    with writer if writer is not None else _nothing():
        for result in embed_files(model, files, sampling=sampling, batch_size=batch_size, workers=workers,
                                  keep_frames=keep_frames and writer is not None, keep_phi=keep_phi,
                                  jpeg_decode=jpeg_decode, clip_types=clip_types, progress=progress):
            if writer is not None:
                writer.add(result)
            yield EmbeddingRecord.of(result, model, with_vector=with_vectors)


def _nothing() -> Any:
    from contextlib import nullcontext

    return nullcontext()


# --------------------------------------------------------------------------- zero-shot


def _frame_sets(model: "EchoClip", files: list[Path] | None, store: PathLike | None, sampling: Sampling | None,
                batch_size: int | None, workers: int | None, progress: Progress | None,
                clip_types: Sequence[str], cache: bool) -> Iterator["FrameSet"]:
    """Per-video frame embeddings from a store that kept them, or from the embedding cache
    (:mod:`echoclip_cli.frame_cache`), or by embedding the files now (and caching them)."""
    from . import tasks as T
    from .frame_cache import FrameCache, through_cache

    if store is not None:
        from .store import read_store

        loaded = read_store(store, frames=True)
        for message in _damage_notes(loaded):
            (progress or _Silent()).warn(message)
        yield from T.frame_sets_from_store(loaded, model, clip_types)
        return

    def embed_now(todo: list[Path]) -> Iterator["VideoEmbedding"]:
        return embed_files(model, todo, sampling=sampling, batch_size=batch_size, workers=workers, keep_frames=True,
                           clip_types=clip_types, progress=progress)

    frame_cache = None
    if cache:
        cfg = (sampling or Sampling()).apply(model.preprocess)
        frame_cache = FrameCache(model.bundle.name, model.weights_sha256, cfg, model.embed_dim, model.numerics)
    note = progress.note if progress is not None else None
    yield from T.frame_sets_from_results(through_cache(frame_cache, files or [], embed_now, clip_types, note))


def check_tasks(task_names: Sequence[str], prompts: PathLike | None = None) -> dict[str, Any]:
    """The named tasks of the prompt library (or of ``prompts``); a usage error for an unknown
    name or a missing prompts file."""
    if prompts is not None and not Path(prompts).is_file():
        raise UsageError(f"no such prompts file: {prompts}")
    return select_tasks(task_names, prompts)


def _zero_shot_setup(task_names: Sequence[str], inputs: Sequence[PathLike] | None, store: PathLike | None,
                     prompts: PathLike | None) -> tuple[dict[str, Any], list[Path] | None]:
    return check_tasks(task_names, prompts), inputs_or_store(inputs, store)


def _zero_shot_model(model: "EchoClip | None", weights: str | None, store: PathLike | None, force: bool,
                     **load: Any) -> "EchoClip":
    from .tasks import check_zero_shot_model

    model = _model(model, weights, store, ZERO_SHOT_WEIGHTS, **load)
    check_zero_shot_model(model, force)
    return model


def predict_ef(
    inputs: Sequence[PathLike] | None = None,
    *,
    store: PathLike | None = None,
    weights: str | None = None,
    model: "EchoClip | None" = None,
    aggregation: str = "released",
    prompts: PathLike | None = None,
    force: bool = False,
    sampling: Sampling | None = None,
    clip_types: Sequence[str] = VIDEO_TYPES,
    cache: bool = True,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    deterministic: bool = False,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Zero-shot EF: an :class:`~echoclip_cli.tasks.EFVideo` per video, then an
    :class:`~echoclip_cli.tasks.EFStudy` per study (the mean of its videos)."""
    from . import tasks as T

    if aggregation not in ("released", "paper"):
        raise UsageError(f"aggregation must be released or paper, not {aggregation!r}")
    chosen, files = _zero_shot_setup(["ejection_fraction"], inputs, store, prompts)
    model = _zero_shot_model(model, weights, store, force, device=device, precision=precision,
                             inputs=len(files) if files is not None else None,
                             backend=backend, task="predict-ef",
                             deterministic=deterministic)
    prepared = T.prepare(model, chosen["ejection_fraction"], _prompt_source(prompts))
    sets = _frame_sets(model, files, store, sampling, batch_size, workers, progress, _checked_types(clip_types),
                       cache)
    yield from T.with_studies(T.ef_records(sets, model, prepared, aggregation))


def detect_devices(
    inputs: Sequence[PathLike] | None = None,
    *,
    store: PathLike | None = None,
    weights: str | None = None,
    model: "EchoClip | None" = None,
    devices: Sequence[str] | None = None,
    thresholds: PathLike | dict[str, float] | None = None,
    prompts: PathLike | None = None,
    force: bool = False,
    sampling: Sampling | None = None,
    clip_types: Sequence[str] = VIDEO_TYPES,
    cache: bool = True,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    deterministic: bool = False,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Implanted devices: a :class:`~echoclip_cli.tasks.BinaryVideo` per video and device, then a
    :class:`~echoclip_cli.tasks.BinaryStudy` per study and device. Calls (``detected``) only where a
    threshold exists: the published pacemaker one, or ``thresholds`` (a file or a dict)."""
    from . import tasks as T

    chosen, files = _zero_shot_setup(list(devices or DEVICE_TASKS), inputs, store, prompts)
    user_thresholds = thresholds if isinstance(thresholds, dict) else load_thresholds(thresholds)
    model = _zero_shot_model(model, weights, store, force, device=device, precision=precision,
                             inputs=len(files) if files is not None else None,
                             backend=backend, task="detect-devices",
                             deterministic=deterministic)
    prepared = [T.prepare(model, task, _prompt_source(prompts)) for task in chosen.values()]
    sets = _frame_sets(model, files, store, sampling, batch_size, workers, progress, _checked_types(clip_types),
                       cache)
    yield from T.with_studies(T.binary_records(sets, model, prepared, user_thresholds))


def zero_shot(
    task: str,
    inputs: Sequence[PathLike] | None = None,
    *,
    store: PathLike | None = None,
    weights: str | None = None,
    model: "EchoClip | None" = None,
    prompts: PathLike | None = None,
    thresholds: PathLike | dict[str, float] | None = None,
    force: bool = False,
    sampling: Sampling | None = None,
    clip_types: Sequence[str] = VIDEO_TYPES,
    cache: bool = True,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    deterministic: bool = False,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Any task of the prompt library (``echoclip_cli.load_prompts()``) or of ``prompts``:
    regression, binary or categorical records per video, then per study."""
    from . import tasks as T

    chosen, files = _zero_shot_setup([task], inputs, store, prompts)
    user_thresholds = thresholds if isinstance(thresholds, dict) else load_thresholds(thresholds)
    model = _zero_shot_model(model, weights, store, force, device=device, precision=precision,
                             inputs=len(files) if files is not None else None,
                             backend=backend, task="zero-shot",
                             deterministic=deterministic)
    spec = chosen[task]
    prepared = T.prepare(model, spec, _prompt_source(prompts))
    sets = _frame_sets(model, files, store, sampling, batch_size, workers, progress, _checked_types(clip_types),
                       cache)
    if spec.mode == "regression":
        records: Iterator[Any] = T.regression_records(sets, model, prepared)
    elif spec.mode == "binary":
        records = T.binary_records(sets, model, [prepared], user_thresholds)
    else:
        records = T.categorical_records(sets, model, prepared)
    yield from T.with_studies(records)


def report(
    inputs: Sequence[PathLike] | None = None,
    *,
    out: PathLike,
    store: PathLike | None = None,
    weights: str | None = None,
    model: "EchoClip | None" = None,
    devices: Sequence[str] | None = None,
    thresholds: PathLike | dict[str, float] | None = None,
    force: bool = False,
    sampling: Sampling | None = None,
    clip_types: Sequence[str] = VIDEO_TYPES,
    cache: bool = True,
    animations: bool = True,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    progress: Progress | None = None,
) -> "list[StudyReport]":
    """Score every clip for EF and devices in one embedding pass and write a static HTML report
    to ``out`` (``index.html`` + a page per study, :mod:`echoclip_cli.report`); returns the
    studies (``wide_row(tasks)`` is the one-row-per-study summary)."""
    from . import report_html as R
    from . import tasks as T
    from .records import identity

    tasks = list(devices or DEVICE_TASKS)
    chosen, files = _zero_shot_setup(["ejection_fraction", *tasks], inputs, store, None)
    user_thresholds = thresholds if isinstance(thresholds, dict) else load_thresholds(thresholds)
    model = _zero_shot_model(model, weights, store, force, device=device, precision=precision,
                             inputs=len(files) if files is not None else None,
                             backend=backend, task="zero-shot")
    ef = T.prepare(model, chosen["ejection_fraction"])
    prepared = [T.prepare(model, chosen[t]) for t in tasks]
    cfg = (sampling or Sampling()).apply(model.preprocess)
    rows = []
    for fs in _frame_sets(model, files, store, sampling, batch_size, workers, progress, _checked_types(clip_types),
                          cache):
        ef_record = next(T.ef_records([fs], model, ef))
        row = R.ClipRow(source=fs.source, study=ef_record.study, clip_type=fs.meta.get("clip_type"),
                        clip_reason=fs.meta.get("clip_reason"), skipped=fs.skipped, error=fs.error,
                        ef=ef_record.ef, identity=identity(fs.meta, fs.source))
        for record in T.binary_records([fs], model, prepared, user_thresholds):
            if record.ok:
                row.devices[record.task] = {"score": record.score, "threshold": record.threshold,
                                            "detected": record.detected}
        if animations and fs.error is None:
            row.animation = _animation(fs.source, cfg)
        rows.append(row)
    studies = R.group(rows)
    R.write_html(studies, Path(out), tasks, {t: user_thresholds.get(t, chosen[t].threshold) for t in tasks})
    return studies


def _animation(source: str, cfg: Any) -> str | None:
    """The frames the model received for ``source`` (decoded again: cheap next to embedding)."""
    from .media import load_clip
    from .report_html import animation

    try:
        return animation(load_clip(source, cfg).frames.numpy())
    except (EchoclipError, OSError):
        return None  # gone since (a store's source) or unreadable: the page says what it can


def _checked_types(clip_types: Sequence[str]) -> tuple[str, ...]:
    """The clip types a zero-shot call scores (``media.classify``; never ``not_ultrasound``)."""
    return parse_clip_types(",".join(clip_types), VIDEO_TYPES)


def _prompt_source(prompts: PathLike | None) -> str:
    return str(prompts) if prompts else "default"


# --------------------------------------------------------------------------- retrieval


def match_patients(
    inputs: Sequence[PathLike] | None = None,
    *,
    store: PathLike | None = None,
    weights: str | None = None,
    model: "EchoClip | None" = None,
    settings: "MatchSettings | None" = None,
    sampling: Sampling | None = None,
    clip_types: Sequence[str] = PATIENT_TYPES,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    progress: Progress | None = None,
) -> "PatientMatches":
    """Same-patient neighbours, groups, patient-key conflicts (and timelines) of the studies in
    ``inputs`` (embedded now with EchoCLIP-R) or in a ``store``. The result's ``warnings`` say when
    the weights are not EchoCLIP-R, and its ``failures`` list inputs that could not be embedded."""
    import numpy as np

    from . import patients as P

    files = inputs_or_store(inputs, store)
    warnings: list[str] = []
    failures: list[str] = []
    if store is not None:
        if model is not None:
            _model(model, None, store, RETRIEVAL_WEIGHTS, device=device, precision=precision)  # same weights?
        elif weights is not None:
            weights_for(weights, store, RETRIEVAL_WEIGHTS)  # a usage error unless they are the store's
        from .store import read_store

        loaded = read_store(store)
        warnings.extend(_damage_notes(loaded))
        name = loaded.header["weights"]["name"]
        if not P.is_retrieval_weights(name, loaded.weights_sha256):
            warnings.append(P.NOT_R_WARNING.format(name=f"the store's weights {name!r}"))
        keep = [i for i, row in enumerate(loaded.rows) if row.get("clip_type") in (None, *clip_types)]
        embeddings, rows = loaded.embeddings[keep], [loaded.rows[i] for i in keep]
    else:
        model = _model(model, weights, None, RETRIEVAL_WEIGHTS, device=device, precision=precision,
                             backend=backend, task="match-patients")
        if model.bundle.tokenizer_kind != "template":
            warnings.append(P.NOT_R_WARNING.format(name=f"weights {model.bundle.name!r}"))
        vectors, rows = [], []
        for result in embed_files(model, files or [], sampling=sampling, batch_size=batch_size, workers=workers,
                                  clip_types=clip_types, progress=progress):
            if result.skipped is not None:
                continue  # not a clip to compare patients by (a still, a Doppler strip, a CT)
            if result.error is not None or result.embedding is None:
                failures.append(result.error or f"{result.source}: no embedding")
                continue
            vectors.append(result.embedding)
            rows.append({**result.meta, "source": result.source})
        if not vectors:
            from .errors import MediaError

            raise MediaError("no input could be embedded" + (f" (first: {failures[0]})" if failures else ""))
        embeddings = np.stack(vectors)
    result = P.match_patients(np.asarray(embeddings), rows, settings, device=device)
    return result.with_notes(warnings=warnings, failures=failures)


def search(
    query: str,
    store: PathLike,
    *,
    weights: str | None = None,
    model: "EchoClip | None" = None,
    k: int = 10,
    level: str = "both",
    template_vocab: PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
) -> "SearchResult":
    """Rank a store's videos and studies by report text; ``result.records`` are the hits
    (``level`` video or study, best first) and ``result.plan`` says what was embedded."""
    check_search(query, store, level=level, template_vocab=template_vocab)
    from .retrieval import search_store
    from .store import read_store
    from .tokenizer import tokenizer_for

    model = _model(model, weights, store, RETRIEVAL_WEIGHTS, device=device, precision=precision,
                             backend=backend, task="search")
    tokenizer = tokenizer_for(model.bundle, template_vocab=template_vocab)
    loaded = read_store(store)
    result = search_store(loaded, model, query, k=k, level=level, tokenizer=tokenizer)
    return dataclasses.replace(result, warnings=tuple(_damage_notes(loaded)))


def _damage_notes(store: Any) -> list[str]:
    """What a reader says about a store's damaged parts (left out; ``echoclip store verify``)."""
    return [f"{message}; its videos are left out (echoclip store verify / repair)" for message in store.damaged]


def check_search(query: str, store: PathLike, *, level: str = "both", template_vocab: PathLike | None = None) -> None:
    """Everything :func:`search` refuses, checked without loading anything heavy."""
    if not query.strip():
        raise UsageError("the query is empty")
    if level not in ("video", "study", "both"):
        raise UsageError(f"level must be video, study or both, not {level!r}")
    _check_vocab(template_vocab)
    store_header(store)


def search_reports(
    video: PathLike,
    reports: PathLike,
    *,
    weights: str | None = None,
    model: "EchoClip | None" = None,
    k: int = 10,
    template_vocab: PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
) -> "ReportRanking":
    """Rank report texts (CSV id,text / JSONL / one per line) by how well they describe ``video``."""
    for path in (video, reports):
        if not Path(path).is_file():
            raise UsageError(f"no such file: {path}")
    _check_vocab(template_vocab)
    from .errors import MediaError
    from .retrieval import rank_reports, read_reports
    from .tokenizer import tokenizer_for

    model = _model(model, weights, None, RETRIEVAL_WEIGHTS, device=device, precision=precision,
                             backend=backend, task="search")
    tokenizer = tokenizer_for(model.bundle, template_vocab=template_vocab)
    corpus = read_reports(Path(reports))
    result = next(iter(embed_files(model, [Path(video)])))
    if result.error is not None or result.embedding is None:
        raise MediaError(result.error or f"{video}: no embedding")
    return rank_reports(result.embedding, corpus, model, k, tokenizer=tokenizer)


def _check_vocab(template_vocab: PathLike | None) -> None:
    if template_vocab is not None and not Path(template_vocab).is_file():
        raise UsageError(f"no such template vocabulary: {template_vocab}")


__all__ = [
    "DEVICE_TASKS", "Found", "Progress", "check_search", "check_tasks", "detect_devices", "embed", "embed_files", "find", "inputs_or_store",
    "match_patients", "predict_ef", "report", "search", "search_reports", "store_header", "weights_for", "zero_shot",
]
