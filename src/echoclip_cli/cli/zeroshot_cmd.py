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
from .inputs import (BatchOpt, ClipTypesOpt, DicomwebOpt, DirOpt, FramesOpt, InputsArg, KeepPhiOpt, MaskOpt, NoCacheOpt,
                     QueryOpt, QuietOpt, StartOpt, StrideOpt, StudyOpt, WorkersOpt, count_inputs, discovery_failed,
                     inputs_or_store, run_options, sampling)
from .models import open_model
from .outputs import BundleSink, ResultFormat, ResultFormatOpt, SrOpt, StowOpt, StudyOutputs
from .progress import progress_bar

if TYPE_CHECKING:
    from ..inference import EchoClip
    from ..site import Head


class Aggregation(str, Enum):
    released = "released"
    paper = "paper"


HEAD_EF_COLUMNS = ("head_ef", "ef_low", "ef_high", "abstain")
HEAD_VALUE_COLUMNS = ("head_value", "value_low", "value_high", "abstain")
HEAD_BINARY_COLUMNS = ("head_probability", "head_set", "abstain")
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Use per-frame embeddings from this store (and its weights).")]
PromptsOpt = Annotated[Optional[Path], typer.Option("--prompts", help="Prompt file (echoclip TOML or upstream JSON).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run even with weights not validated for this task.")]
HeadOpt = Annotated[Optional[Path], typer.Option(
    "--head", help="A head from `echoclip fit`: its value, interval and abstention beside the zero-shot one.")]
HeadsOpt = Annotated[Optional[list[Path]], typer.Option(
    "--head", help="Heads from `echoclip fit` (one per device, repeatable): probability and prediction set beside "
                   "the score.")]
ThresholdsOpt = Annotated[Optional[Path], typer.Option("--thresholds", help="JSON task→threshold (from `echoclip calibrate`).")]
WeightsZS = weights_option(ZERO_SHOT_WEIGHTS)


def zero_shot_model(weights: Optional[str], store: Optional[Path], device: str, precision: str, deterministic: bool,
           quiet: bool, backend: str = "auto", inputs: int | None = None) -> "EchoClip":
    return open_model(weights, default=ZERO_SHOT_WEIGHTS, store=store, device=device, precision=precision,
                      backend=backend, deterministic=deterministic, quiet=quiet, lazy=True, inputs=inputs)


def load_heads(paths: Optional[list[Path]]) -> "list[Head]":
    """The head files, read now: a missing or foreign file is a usage error before any model loads
    (the model's weights and preprocessing are checked against them once it is known)."""
    from .. import api

    return [api.load_head(p) for p in paths or []]


def finish(records: Iterable[Any], fmt: OutputFormat | ResultFormat, columns: list[str],
           record_types: tuple[type, ...], files: Any = None, outputs: StudyOutputs = StudyOutputs(),
           view: TableView | None = None) -> None:
    """Write the records as they come (video rows, then study rows, then a row per study output);
    exit 1 when any input or output failed."""
    from ..exchange import OutputRecord

    if outputs.sr is not None:
        record_types, columns = (*record_types, OutputRecord), [*columns[:-1], "output", columns[-1]]
    fields = tuple(name for cls in record_types for name in cls.field_names())
    failed, skipped = False, 0
    sink = BundleSink() if outputs.fhir else RecordSink(
        OutputFormat(fmt.value), columns=["level", *columns[:-1], "clip_type", "skipped", columns[-1]], fields=fields,
        view=view)
    with sink:
        for record in outputs.around(records):
            if getattr(record, "error", None):
                report_failure(record.error)
                failed = True
            skipped += getattr(record, "level", None) == "video" and record.skipped is not None
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
    dicomweb: DicomwebOpt = None,
    study: StudyOpt = None,
    query: QueryOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = None,
    aggregation: Annotated[Aggregation, typer.Option("--aggregation", help="released (as the released code) or paper (the paper's variant).")] = Aggregation.released,
    head: HeadOpt = None,
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
    fmt: ResultFormatOpt = ResultFormat.auto,
    sr: SrOpt = None,
    stow: StowOpt = False,
    keep_phi: KeepPhiOpt = False,
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

        echoclip predict-ef --dicomweb https://pacs.example.org/dicom-web --study 1.2.840.113619.2.1.1 --format jsonl

        echoclip predict-ef --dir studies/ --sr sr/ --format fhir > bundles.ndjson

        echoclip predict-ef --store archive.store --head ef.head --format csv   # + head_ef, ef_low, ef_high, abstain
    """
    from .. import api

    api.check_tasks(["ejection_fraction"], prompts)
    heads = load_heads([head] if head else None)
    outputs = StudyOutputs(sr, fmt is ResultFormat.fhir, keep_phi, stow).check()
    files = inputs_or_store(inputs, folder, store, dicomweb, study, query)
    outputs = outputs.over(files)
    types = parse_clip_types(clip_types, VIDEO_TYPES)
    model = zero_shot_model(weights, store, device, precision, deterministic, quiet, backend,
                            count_inputs(files))
    from .. import tasks  # record types; torch is loaded by now

    with progress_bar(quiet) as bar:
        options = run_options(batch_size=batch_size, workers=workers, sampled=sampling(frames, stride, start, mask),
                              clip_types=types, no_cache=no_cache)
        records = api.predict_ef(model, files, store=store, options=options, aggregation=aggregation.value,
                                 prompts=prompts, force=force, heads=heads, progress=bar)
        finish(records, fmt, ["source", "study", "ef", *(HEAD_EF_COLUMNS if heads else ()), "n_frames", "n_videos",
                              "error"],
               (tasks.EFVideo, tasks.EFStudy), files, outputs)


def detect_devices(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    dicomweb: DicomwebOpt = None,
    study: StudyOpt = None,
    query: QueryOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = None,
    devices: Annotated[Optional[list[str]], typer.Option("--device-type", "-d", help="Only these (repeatable).")] = None,
    thresholds: ThresholdsOpt = None,
    head: HeadsOpt = None,
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
    fmt: ResultFormatOpt = ResultFormat.auto,
    sr: SrOpt = None,
    stow: StowOpt = False,
    keep_phi: KeepPhiOpt = False,
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

        echoclip detect-devices --dicomweb https://pacs.example.org/dicom-web --query ModalitiesInStudy=US --query StudyDate=20240101-20240131

        echoclip detect-devices --dir studies/ --sr sr/

        echoclip detect-devices --store archive.store --head pacer.head -d pacemaker
    """
    from .. import api

    api.check_tasks(list(devices or DEVICE_TASKS), prompts)
    outputs = StudyOutputs(sr, fmt is ResultFormat.fhir, keep_phi, stow).check()
    heads = load_heads(head)
    user_thresholds = load_thresholds(thresholds)
    files = inputs_or_store(inputs, folder, store, dicomweb, study, query)
    outputs = outputs.over(files)
    types = parse_clip_types(clip_types, VIDEO_TYPES)
    model = zero_shot_model(weights, store, device, precision, deterministic, quiet, backend,
                            count_inputs(files))
    from .. import tasks  # record types; torch is loaded by now

    with progress_bar(quiet) as bar:
        options = run_options(batch_size=batch_size, workers=workers, sampled=sampling(frames, stride, start, mask),
                              clip_types=types, no_cache=no_cache)
        records = api.detect_devices(model, files, store=store, options=options, devices=devices,
                                     thresholds=user_thresholds, prompts=prompts, force=force, heads=heads,
                                     progress=bar)
        finish(records, fmt, ["source", "study", "task", "score", "threshold", "detected", "calibrated",
                              *(HEAD_BINARY_COLUMNS if heads else ()), "n_frames", "n_videos", "error"],
               (tasks.BinaryVideo, tasks.BinaryStudy), files, outputs, view=devices_side_by_side)


def zero_shot(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name from the prompt library (see --list).")] = "",
    list_tasks: Annotated[bool, typer.Option("--list", help="List the tasks and exit.")] = False,
    inputs: InputsArg = None,
    folder: DirOpt = None,
    dicomweb: DicomwebOpt = None,
    study: StudyOpt = None,
    query: QueryOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = None,
    prompts: PromptsOpt = None,
    thresholds: ThresholdsOpt = None,
    head: HeadOpt = None,
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

        echoclip zero-shot --task pulmonary_artery_pressure --store archive.store --head pa.head
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
    heads = load_heads([head] if head else None)
    user_thresholds = load_thresholds(thresholds)
    files = inputs_or_store(inputs, folder, store, dicomweb, study, query)
    types = parse_clip_types(clip_types, VIDEO_TYPES)
    model = zero_shot_model(weights, store, device, precision, deterministic, quiet, backend,
                            count_inputs(files))
    from .. import tasks  # record types; torch is loaded by now

    with progress_bar(quiet) as bar:
        options = run_options(batch_size=batch_size, workers=workers, sampled=sampling(frames, stride, start, mask),
                              clip_types=types, no_cache=no_cache)
        records = api.zero_shot(model, task, files, store=store, options=options, prompts=prompts,
                                thresholds=user_thresholds, force=force, heads=heads, progress=bar)
        if mode == "regression":
            finish(records, fmt, ["source", "study", "task", "value", "unit", *(HEAD_VALUE_COLUMNS if heads else ()),
                                  "n_frames", "n_videos", "error"],
                   (tasks.RegressionVideo, tasks.RegressionStudy), files)
        elif mode == "binary":
            finish(records, fmt, ["source", "study", "task", "score", "threshold", "detected",
                                  *(HEAD_BINARY_COLUMNS if heads else ()), "n_videos", "error"],
                   (tasks.BinaryVideo, tasks.BinaryStudy), files)
        else:
            finish(records, fmt, ["source", "study", "task", "prediction", "scores", "error"],
                   (tasks.CategoricalVideo, tasks.CategoricalStudy), files)
