"""``echoclip predict-ef``, ``detect-devices`` and ``zero-shot``: EchoCLIP's zero-shot tasks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer

from .common import DeterministicOpt, DeviceOpt, FormatOpt, OutputFormat, PrecisionOpt, RecordSink, emit_records
from .embed_cmd import device_for_rank, embed_inputs, report_failure
from .inputs import (BatchOpt, DirOpt, FramesOpt, InputsArg, MaskOpt, QuietOpt, StartOpt, StrideOpt, WorkersOpt)

if TYPE_CHECKING:  # torch loads when a command runs, not when --help is built
    from .. import tasks as T
    from ..inference import EchoClip

ZERO_SHOT_WEIGHTS = "echo-clip"
DEVICE_TASKS = ("pacemaker", "tavr", "mitraclip", "impella")

StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Use per-frame embeddings from this store.")]
PromptsOpt = Annotated[Optional[Path], typer.Option("--prompts", help="Prompt file (echoclip TOML or upstream JSON).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run even with weights not validated for this task.")]
WeightsZS = Annotated[str, typer.Option("--weights", "-w", help="Weights name or path (EchoCLIP for zero-shot).")]


def frame_sets(model: "EchoClip", inputs: Any, folder: Any, store: Optional[Path], sampling_opts: dict[str, Any],
               batch_size: int, workers: Optional[int], quiet: bool) -> Iterator["T.FrameSet"]:
    """Per-video frame embeddings from a store, or by embedding the inputs now."""
    from .. import tasks as T

    if store is not None:
        from ..store import read_store

        yield from T.frame_sets_from_store(read_store(store, frames=True), model)
        return
    results = embed_inputs(model, inputs, folder, sampling_opts, batch_size=batch_size, workers=workers, quiet=quiet,
                           keep_frames=True)
    yield from T.frame_sets_from_results(results)


def finish(records: Iterator[dict[str, Any]], value_key: str, fmt: OutputFormat, columns: list[str]) -> None:
    """Write video records as they come, then the study records; exit 1 when any input failed."""
    from .. import tasks as T

    kept, failed = [], False
    with RecordSink(fmt, columns=["level", *columns]) as sink:
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


STUDY_FIELDS = ("study", "task", "ef", "score", "value", "prediction", "error", "weights", "weights_sha256",
                "threshold", "aggregation", "prompts")


def predict_ef(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = ZERO_SHOT_WEIGHTS,
    aggregation: Annotated[str, typer.Option("--aggregation", help="released (default) or paper.")] = "released",
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
    if aggregation not in ("released", "paper"):
        raise typer.BadParameter("use released or paper", param_hint="--aggregation")
    from .. import tasks as T
    from ..inference import load_model

    model = load_model(weights, device=device_for_rank(device), precision=precision, deterministic=deterministic)
    T.check_zero_shot_model(model, force)
    task = T.load_tasks(["ejection_fraction"], prompts)["ejection_fraction"]
    prepared = T.prepare(model, task, str(prompts) if prompts else "default")
    opts = {"frames": frames, "stride": stride, "start": start, "mask": mask}
    records = (T.ef_records(frame_sets(model, inputs, folder, store, opts, batch_size, workers, quiet),
                                model, prepared, aggregation))
    finish(records, "ef", fmt, ["source", "study", "ef", "n_frames", "n_videos", "error"])


def detect_devices(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = ZERO_SHOT_WEIGHTS,
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
    from .. import tasks as T
    from ..inference import load_model

    model = load_model(weights, device=device_for_rank(device), precision=precision, deterministic=deterministic)
    T.check_zero_shot_model(model, force)
    chosen = T.load_tasks(list(devices or DEVICE_TASKS), prompts)
    source = str(prompts) if prompts else "default"
    prepared = [T.prepare(model, task, source) for task in chosen.values()]
    user_thresholds = T.load_thresholds(thresholds)
    opts = {"frames": frames, "stride": stride, "start": start, "mask": mask}
    records = (T.binary_records(frame_sets(model, inputs, folder, store, opts, batch_size, workers, quiet),
                                    model, prepared, user_thresholds))
    finish(records, "score", fmt, ["source", "study", "task", "score", "threshold", "detected", "calibrated",
                                   "n_frames", "n_videos", "error"])


def zero_shot(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name from the prompt library (see --list).")] = "",
    list_tasks: Annotated[bool, typer.Option("--list", help="List the tasks and exit.")] = False,
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: StoreOpt = None,
    weights: WeightsZS = ZERO_SHOT_WEIGHTS,
    prompts: PromptsOpt = None,
    thresholds: Annotated[Optional[Path], typer.Option("--thresholds", help="JSON task→threshold.")] = None,
    force: ForceOpt = False,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Run any zero-shot task of the prompt library (binary, regression or categorical).

    Examples:

        echoclip zero-shot --list

        echoclip zero-shot --task pulmonary_artery_pressure study.dcm

        echoclip zero-shot --task left_ventricle_size --prompts my_prompts.toml --dir studies/
    """
    from .. import tasks as T
    from ..inference import load_model
    from ..prompts import load_prompts

    if list_tasks:
        rows = [{"task": t.name, "mode": t.mode, "prompts": len(t.texts()), "threshold": t.threshold,
                 "description": t.description} for t in load_prompts(prompts).values()]
        emit_records(rows, fmt)
        return
    if not task:
        raise typer.BadParameter("name a task (see --list)", param_hint="--task")
    chosen = T.load_tasks([task], prompts)[task]
    model = load_model(weights, device=device_for_rank(device), precision=precision)
    T.check_zero_shot_model(model, force)
    prepared = T.prepare(model, chosen, str(prompts) if prompts else "default")
    sets = frame_sets(model, inputs, folder, store, {"frames": None, "stride": None, "start": None, "mask": None},
                      batch_size, workers, quiet)
    if chosen.mode == "regression":
        records = (T.regression_records(sets, model, prepared))
        finish(records, "value", fmt, ["source", "study", "task", "value", "unit", "n_frames", "n_videos", "error"])
    elif chosen.mode == "binary":
        records = (T.binary_records(sets, model, [prepared], T.load_thresholds(thresholds)))
        finish(records, "score", fmt, ["source", "study", "task", "score", "threshold", "detected", "n_videos", "error"])
    else:
        records = (T.categorical_records(sets, model, prepared))
        finish(records, "prediction", fmt, ["source", "study", "task", "prediction", "scores", "error"])
