"""``echoclip predict-ef``, ``detect-devices`` and ``zero-shot``: EchoCLIP's zero-shot tasks."""

from __future__ import annotations

from pathlib import Path
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer

from ..errors import UsageError

from ..defaults import ZERO_SHOT_WEIGHTS
from ..prompts import load_thresholds, select_tasks
from .common import DeterministicOpt, DeviceOpt, FormatOpt, OutputFormat, PrecisionOpt, RecordSink, emit_records
from .embed_cmd import embed_inputs, report_failure
from .inputs import (BatchOpt, DirOpt, FramesOpt, InputsArg, MaskOpt, QuietOpt, StartOpt, StrideOpt, WorkersOpt,
                     inputs_or_store)
from .models import open_model, weights_for

if TYPE_CHECKING:  # torch loads when a command runs, not when --help is built
    from .. import tasks as T
    from ..inference import EchoClip
    from ..prompts import Task

DEVICE_TASKS = ("pacemaker", "tavr", "mitraclip", "impella")


class Aggregation(str, Enum):
    released = "released"
    paper = "paper"


StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Use per-frame embeddings from this store (and its weights).")]
PromptsOpt = Annotated[Optional[Path], typer.Option("--prompts", help="Prompt file (echoclip TOML or upstream JSON).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run even with weights not validated for this task.")]
WeightsZS = Annotated[Optional[str], typer.Option(
    "--weights", "-w", show_default=False,
    help=f"Weights name or path (default: the --store's weights, else {ZERO_SHOT_WEIGHTS}).")]


def frame_sets(model: "EchoClip", files: Optional[list[Path]], store: Optional[Path], sampling_opts: dict[str, Any],
               batch_size: int, workers: Optional[int], quiet: bool) -> Iterator["T.FrameSet"]:
    """Per-video frame embeddings from a store, or by embedding the (checked) input files now."""
    from .. import tasks as T

    if store is not None:
        from ..store import read_store

        yield from T.frame_sets_from_store(read_store(store, frames=True), model)
        return
    results = embed_inputs(model, files or [], sampling_opts, batch_size=batch_size, workers=workers, quiet=quiet,
                           keep_frames=True)
    yield from T.frame_sets_from_results(results)


def _checked(prompts: Optional[Path], names: list[str]) -> dict[str, "Task"]:
    """The tasks, checked before any model loads (an unknown name or unreadable file exits 2)."""
    if prompts is not None and not prompts.is_file():
        raise UsageError(f"no such prompts file: {prompts}")
    return select_tasks(names, prompts)


def _zero_shot_model(weights: Optional[str], store: Optional[Path], force: bool, device: str, precision: str,
                     deterministic: bool, quiet: bool) -> "EchoClip":
    from .. import tasks as T

    model = open_model(weights_for(weights, store, ZERO_SHOT_WEIGHTS), device=device, precision=precision,
                       deterministic=deterministic, quiet=quiet)
    T.check_zero_shot_model(model, force)
    return model


def finish(records: Iterator[dict[str, Any]], value_key: str, fmt: OutputFormat, columns: list[str],
           fields: tuple[str, ...] = ()) -> None:
    """Write video records as they come, then the study records; exit 1 when any input failed."""
    from .. import tasks as T

    kept, failed = [], False
    with RecordSink(fmt, columns=["level", *columns], fields=(*RECORD_FIELDS, *fields)) as sink:
        for record in records:
            if record.get("error"):
                report_failure(record)
                failed = True
            sink.write(record)
            kept.append({k: record.get(k) for k in STUDY_FIELDS if k in record})
        for study in T.study_records(kept, value_key):
            sink.write(study)
    if failed:
        raise typer.Exit(1)


# Every field a zero-shot record may carry (the CSV header): see README "Records".
RECORD_FIELDS = ("level", "source", "study", "task", "n_frames", "n_videos", "weights", "weights_sha256", "prompts",
                 "aggregation", "error")
BINARY_FIELDS = ("score", "threshold", "detected", "calibrated", "threshold_source")
STUDY_FIELDS = ("study", "task", "ef", "score", "value", "prediction", "error", "weights", "weights_sha256",
                "threshold", "aggregation", "prompts")


def predict_ef(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = None,
    aggregation: Annotated[Aggregation, typer.Option("--aggregation", help="released (as the released code) or paper (the paper's variant).")] = Aggregation.released,
    prompts: PromptsOpt = None,
    force: ForceOpt = False,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
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
    task = _checked(prompts, ["ejection_fraction"])["ejection_fraction"]
    files = inputs_or_store(inputs, folder, store)
    from .. import tasks as T  # the model stack (torch) loads only once the arguments are checked

    model = _zero_shot_model(weights, store, force, device, precision, deterministic, quiet)
    prepared = T.prepare(model, task, str(prompts) if prompts else "default")
    opts = {"frames": frames, "stride": stride, "start": start, "mask": mask}
    records = T.ef_records(frame_sets(model, files, store, opts, batch_size, workers, quiet), model, prepared,
                           aggregation.value)
    finish(records, "ef", fmt, ["source", "study", "ef", "n_frames", "n_videos", "error"], ("single_frame_ef_sd",))


def detect_devices(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = None,
    devices: Annotated[Optional[list[str]], typer.Option("--device-type", "-d", help="Only these (repeatable).")] = None,
    thresholds: Annotated[Optional[Path], typer.Option("--thresholds", help="JSON task→threshold (from `echoclip calibrate`).")] = None,
    prompts: PromptsOpt = None,
    force: ForceOpt = False,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
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
    chosen = _checked(prompts, list(devices or DEVICE_TASKS))
    user_thresholds = load_thresholds(thresholds)
    files = inputs_or_store(inputs, folder, store)
    from .. import tasks as T  # the model stack (torch) loads only once the arguments are checked

    model = _zero_shot_model(weights, store, force, device, precision, deterministic, quiet)
    source = str(prompts) if prompts else "default"
    prepared = [T.prepare(model, task, source) for task in chosen.values()]
    opts = {"frames": frames, "stride": stride, "start": start, "mask": mask}
    records = T.binary_records(frame_sets(model, files, store, opts, batch_size, workers, quiet), model, prepared,
                               user_thresholds)
    finish(records, "score", fmt, ["source", "study", "task", "score", "threshold", "detected", "calibrated",
                                   "n_frames", "n_videos", "error"], BINARY_FIELDS)


def zero_shot(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name from the prompt library (see --list).")] = "",
    list_tasks: Annotated[bool, typer.Option("--list", help="List the tasks and exit.")] = False,
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = None,
    prompts: PromptsOpt = None,
    thresholds: Annotated[Optional[Path], typer.Option("--thresholds", help="JSON task→threshold.")] = None,
    force: ForceOpt = False,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
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
    chosen = _checked(prompts, [task])[task]
    user_thresholds = load_thresholds(thresholds)
    files = inputs_or_store(inputs, folder, store)
    from .. import tasks as T  # the model stack (torch) loads only once the arguments are checked

    model = _zero_shot_model(weights, store, force, device, precision, deterministic, quiet)
    prepared = T.prepare(model, chosen, str(prompts) if prompts else "default")
    opts = {"frames": frames, "stride": stride, "start": start, "mask": mask}
    sets = frame_sets(model, files, store, opts, batch_size, workers, quiet)
    if chosen.mode == "regression":
        records = T.regression_records(sets, model, prepared)
        finish(records, "value", fmt, ["source", "study", "task", "value", "unit", "n_frames", "n_videos", "error"],
               ("single_frame_sd",))
    elif chosen.mode == "binary":
        records = T.binary_records(sets, model, [prepared], user_thresholds)
        finish(records, "score", fmt, ["source", "study", "task", "score", "threshold", "detected", "n_videos", "error"],
               BINARY_FIELDS)
    else:
        records = T.categorical_records(sets, model, prepared)
        finish(records, "prediction", fmt, ["source", "study", "task", "prediction", "scores", "error"])
