"""``echoclip predict-ef``, ``detect-devices`` and ``zero-shot``: EchoCLIP's zero-shot tasks.

Each command checks its arguments, loads the weights (a store's own by default), calls the
library (``echoclip_cli.api``) and renders the records it streams.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterable, Optional

import typer

from ..defaults import DEFAULT_BATCH_SIZE, DEVICE_TASKS, ZERO_SHOT_WEIGHTS
from ..media.classify import VIDEO_TYPES, parse_clip_types
from ..prompts import load_thresholds
from .common import (DeterministicOpt, DeviceOpt, FormatOpt, OutputFormat, BackendOpt, PrecisionOpt, RecordSink, TableView,
                     emit_records, info, report_failure, weights_option)
from .inputs import (BatchOpt, ClipTypesOpt, DirOpt, FramesOpt, InputsArg, MaskOpt, NoCacheOpt, QuietOpt, StartOpt,
                     StrideOpt, WorkersOpt, discovery_failed, inputs_or_store, run_options, sampling)
from .models import open_model
from .progress import progress_bar

if TYPE_CHECKING:
    from ..inference import EchoClip


class Aggregation(str, Enum):
    released = "released"
    paper = "paper"


StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Use per-frame embeddings from this store (and its weights).")]
PromptsOpt = Annotated[Optional[Path], typer.Option("--prompts", help="Prompt file (echoclip TOML or upstream JSON).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run even with weights not validated for this task.")]
ThresholdsOpt = Annotated[Optional[Path], typer.Option("--thresholds", help="JSON task→threshold (from `echoclip calibrate`).")]
WeightsZS = weights_option(ZERO_SHOT_WEIGHTS)


def zero_shot_model(weights: Optional[str], store: Optional[Path], device: str, precision: str, deterministic: bool,
           quiet: bool, backend: str = "auto", inputs: int | None = None) -> "EchoClip":
    return open_model(weights, default=ZERO_SHOT_WEIGHTS, store=store, device=device, precision=precision,
                      backend=backend, deterministic=deterministic, quiet=quiet, lazy=True, inputs=inputs)


def finish(records: Iterable[Any], fmt: OutputFormat, columns: list[str], record_types: tuple[type, ...],
           files: Any = None, view: TableView | None = None) -> None:
    """Write the records as they come (video rows, then study rows); exit 1 when any input failed."""
    fields = tuple(name for cls in record_types for name in cls.field_names())
    failed, skipped = False, 0
    with RecordSink(fmt, columns=["level", *columns[:-1], "clip_type", "skipped", columns[-1]], fields=fields,
                    view=view) as sink:
        for record in records:
            if getattr(record, "error", None):
                report_failure(record.error)
                failed = True
            skipped += getattr(record, "skipped", None) is not None
            sink.write(record.as_dict())
    if skipped:
        info(f"{skipped} clip(s) not scored for their type (records say why; --clip-types chooses)")
    if failed or discovery_failed(files):
        raise typer.Exit(1)


_PER_INPUT = ("level", "source", "study", "n_frames", "n_videos", "clip_type", "skipped", "error")


def devices_side_by_side(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], str]:
    """detect-devices on a terminal: one row per video (and per study) with the devices side by side,
    each cell the score and, where the device has a threshold, the call (JSONL/CSV keep one record
    per device with every field)."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    devices: dict[str, None] = {}
    for record in records:
        key = (record.get("level"), record.get("source"), record.get("study"))
        row = rows.setdefault(key, {name: record.get(name) for name in _PER_INPUT})
        if record.get("task") and record.get("score") is not None:
            devices[record["task"]] = None
            call = {True: " yes", False: " no"}.get(record.get("detected"), "")
            row[record["task"]] = f"{record['score']:.3f}{call}"
    columns = ["level", "source", "study", *devices, "n_frames", "n_videos", "clip_type", "skipped", "error"]
    return list(rows.values()), columns, "score, then yes/no at the device's threshold (none: no call)"


def predict_ef(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = None,
    aggregation: Annotated[Aggregation, typer.Option("--aggregation", help="released (as the released code) or paper (the paper's variant).")] = Aggregation.released,
    prompts: PromptsOpt = None,
    force: ForceOpt = False,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    workers: WorkersOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    clip_types: ClipTypesOpt = None,
    no_cache: NoCacheOpt = False,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    backend: BackendOpt = "auto",
    deterministic: DeterministicOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Predict left ventricular ejection fraction zero-shot, per video and per study.

    Each frame ranks 202 report sentences ("LV EJECTION FRACTION IS 0%" … "100%"); the rankings
    are averaged over frames and the estimate is the median of the top 20 % (--aggregation paper
    for the paper's variant). Studies (StudyInstanceUID, else folder) get the mean of their videos.

    Examples:

        echoclip predict-ef study.dcm

        echoclip predict-ef --dir studies/ --format csv > ef.csv

        echoclip predict-ef --store archive.store --format jsonl | jq 'select(.ef < 40)'
    """
    from .. import api

    api.check_tasks(["ejection_fraction"], prompts)
    files = inputs_or_store(inputs, folder, store)
    types = parse_clip_types(clip_types, VIDEO_TYPES)
    model = zero_shot_model(weights, store, device, precision, deterministic, quiet, backend,
                            len(files) if files is not None else None)
    from .. import tasks  # record types; torch is loaded by now

    with progress_bar(quiet) as bar:
        options = run_options(batch_size=batch_size, workers=workers, sampled=sampling(frames, stride, start, mask),
                              clip_types=types, no_cache=no_cache)
        records = api.predict_ef(model, files, store=store, options=options, aggregation=aggregation.value,
                                 prompts=prompts, force=force, progress=bar)
        finish(records, fmt, ["source", "study", "ef", "n_frames", "n_videos", "error"],
               (tasks.EFVideo, tasks.EFStudy), files)


def detect_devices(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = None,
    devices: Annotated[Optional[list[str]], typer.Option("--device-type", "-d", help="Only these (repeatable).")] = None,
    thresholds: ThresholdsOpt = None,
    prompts: PromptsOpt = None,
    force: ForceOpt = False,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    workers: WorkersOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    clip_types: ClipTypesOpt = None,
    no_cache: NoCacheOpt = False,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    backend: BackendOpt = "auto",
    deterministic: DeterministicOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Detect implanted devices (pacemaker/ICD lead, TAVR, MitraClip, Impella) zero-shot.

    The score is the mean cosine between the video's frames and the device's report sentences.
    Only the pacemaker threshold is published (0.298); other devices report calibrated=false and
    no call until you pass --thresholds.

    Examples:

        echoclip detect-devices study.dcm

        echoclip detect-devices --dir studies/ --thresholds site_thresholds.json --format csv
    """
    from .. import api

    api.check_tasks(list(devices or DEVICE_TASKS), prompts)
    user_thresholds = load_thresholds(thresholds)
    files = inputs_or_store(inputs, folder, store)
    types = parse_clip_types(clip_types, VIDEO_TYPES)
    model = zero_shot_model(weights, store, device, precision, deterministic, quiet, backend,
                            len(files) if files is not None else None)
    from .. import tasks  # record types; torch is loaded by now

    with progress_bar(quiet) as bar:
        options = run_options(batch_size=batch_size, workers=workers, sampled=sampling(frames, stride, start, mask),
                              clip_types=types, no_cache=no_cache)
        records = api.detect_devices(model, files, store=store, options=options, devices=devices,
                                     thresholds=user_thresholds, prompts=prompts, force=force, progress=bar)
        finish(records, fmt, ["source", "study", "task", "score", "threshold", "detected", "calibrated", "n_frames",
                              "n_videos", "error"], (tasks.BinaryVideo, tasks.BinaryStudy), files,
               view=devices_side_by_side)


def zero_shot(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name from the prompt library (see --list).")] = "",
    list_tasks: Annotated[bool, typer.Option("--list", help="List the tasks and exit.")] = False,
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = None,
    prompts: PromptsOpt = None,
    thresholds: ThresholdsOpt = None,
    force: ForceOpt = False,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    workers: WorkersOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    clip_types: ClipTypesOpt = None,
    no_cache: NoCacheOpt = False,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    backend: BackendOpt = "auto",
    deterministic: DeterministicOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run any zero-shot task of the prompt library (binary, regression or categorical).

    Examples:

        echoclip zero-shot --list

        echoclip zero-shot --task pulmonary_artery_pressure study.dcm

        echoclip zero-shot --task left_ventricle_size --prompts my_prompts.toml --dir studies/
    """
    from ..prompts import load_prompts

    if list_tasks:
        rows = [{"task": t.name, "mode": t.mode, "prompts": len(t.texts()), "threshold": t.threshold,
                 "description": t.description} for t in load_prompts(prompts).values()]
        emit_records(rows, fmt)
        return
    if not task:
        raise typer.BadParameter("name a task (see --list)", param_hint="--task")
    from .. import api

    mode = api.check_tasks([task], prompts)[task].mode
    user_thresholds = load_thresholds(thresholds)
    files = inputs_or_store(inputs, folder, store)
    types = parse_clip_types(clip_types, VIDEO_TYPES)
    model = zero_shot_model(weights, store, device, precision, deterministic, quiet, backend,
                            len(files) if files is not None else None)
    from .. import tasks  # record types; torch is loaded by now

    with progress_bar(quiet) as bar:
        options = run_options(batch_size=batch_size, workers=workers, sampled=sampling(frames, stride, start, mask),
                              clip_types=types, no_cache=no_cache)
        records = api.zero_shot(model, task, files, store=store, options=options, prompts=prompts,
                                thresholds=user_thresholds, force=force, progress=bar)
        if mode == "regression":
            finish(records, fmt, ["source", "study", "task", "value", "unit", "n_frames", "n_videos", "error"],
                   (tasks.RegressionVideo, tasks.RegressionStudy), files)
        elif mode == "binary":
            finish(records, fmt, ["source", "study", "task", "score", "threshold", "detected", "n_videos", "error"],
                   (tasks.BinaryVideo, tasks.BinaryStudy), files)
        else:
            finish(records, fmt, ["source", "study", "task", "prediction", "scores", "error"],
                   (tasks.CategoricalVideo, tasks.CategoricalStudy), files)
