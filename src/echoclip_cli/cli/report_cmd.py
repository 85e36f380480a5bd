"""``echoclip report``: a static HTML report of studies, and one wide row per study on stdout."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..defaults import DEFAULT_BATCH_SIZE, DEVICE_TASKS
from ..media.classify import VIDEO_TYPES, parse_clip_types
from ..prompts import load_thresholds
from .common import DeviceOpt, FormatOpt, OutputFormat, BackendOpt, PrecisionOpt, emit_records, info, report_failure
from .inputs import (BatchOpt, ClipTypesOpt, DicomwebOpt, DirOpt, InputsArg, KeepPhiOpt, NoCacheOpt, QueryOpt, QuietOpt,
                     StudyOpt, WorkersOpt, discovery_failed, inputs_or_store, run_options)
from .progress import progress_bar
from .zeroshot_cmd import ForceOpt, HeadsOpt, StoreOpt, ThresholdsOpt, WeightsZS, load_heads, zero_shot_model


class SentenceSource(str, Enum):
    auto = "auto"
    prompts = "prompts"
    none = "none"


def report(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    dicomweb: DicomwebOpt = None,
    study: StudyOpt = None,
    query: QueryOpt = None,
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for index.html and the study pages.")] = Path(
        "echoclip-report"),
    weights: WeightsZS = None,
    devices: Annotated[Optional[list[str]], typer.Option("--device-type", "-d", help="Only these devices (repeatable).")] = None,
    thresholds: ThresholdsOpt = None,
    head: HeadsOpt = None,
    clip_types: ClipTypesOpt = None,
    animations: Annotated[bool, typer.Option("--animations/--no-animations", help="Show the frames the model received (decodes each clip again).")] = True,
    maps: Annotated[bool, typer.Option("--maps/--no-maps", help="Show the evidence behind each clip's numbers: PromptCAM overlays of the frame that scored highest for each device with a threshold, and of the frames whose own EF is nearest to and furthest from the clip's.")] = True,
    sentences: Annotated[SentenceSource, typer.Option("--sentences", help="Each study's five nearest sentences: auto (EchoCLIP-R's report sentences when its weights, echo-clip-r or another template-tokenizer bundle, and their template vocabulary are installed: the clips are embedded again with them; else the prompt library), prompts, or none.")] = SentenceSource.auto,
    force: ForceOpt = False,
    no_cache: NoCacheOpt = False,
    keep_phi: KeepPhiOpt = False,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    workers: WorkersOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    backend: BackendOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Write a self-contained HTML report: per study, what each clip is, what the model saw and said.

    index.html has archive plots (EF and device score distributions) and the studies; each study
    page shows every object with an animation of its model-ready frames, its clip type and why it
    was or was not scored, its EF and device scores (calls only where a threshold exists), the
    PromptCAM overlays behind those numbers (--no-maps leaves them out), and the study's five
    nearest report sentences. Studies are listed by date, with their patient key where the files
    carry one; a study known only by its folder is named by a hash of it (--keep-phi: the folder).
    No network, no scripts: the folder opens anywhere. stdout gets one wide row per study (date,
    patient key, EF, device calls, clip counts, flags) for spreadsheets. Frames come from the embedding cache when
    another command has embedded the files.

    Examples:

        echoclip report --dir studies/ --out report/

        echoclip report --store archive.store --out report/ --format csv > studies.csv

        echoclip report --dir studies/ --out report/ --no-maps --sentences none

        echoclip report --dicomweb https://pacs.example.org/dicom-web --study 1.2.840.113619.2.1.1 --out report/

        echoclip report --store archive.store --out report/ --head ef.head   # the site's head beside zero-shot
    """
    from .. import api

    tasks = list(devices or DEVICE_TASKS)
    api.check_tasks(["ejection_fraction", *tasks])
    from ..api.report import check_out

    check_out(out)  # a file there: exit 2 now, not after the embedding pass
    user_thresholds = load_thresholds(thresholds)
    heads = tuple(load_heads(head))
    types = parse_clip_types(clip_types, VIDEO_TYPES)
    files = inputs_or_store(inputs, folder, store, dicomweb, study, query)
    model = zero_shot_model(weights, store, device, precision, False, quiet, backend)
    with progress_bar(quiet) as bar:
        options = run_options(batch_size=batch_size, workers=workers, clip_types=types, no_cache=no_cache,
                              keep_phi=keep_phi)
        studies = api.report(model, files, out=out, store=store, options=options, devices=tasks,
                             thresholds=user_thresholds, force=force,
                             content=api.ReportContent(animations=animations, maps=maps, sentences=sentences.value,
                                                       heads=heads),
                             progress=bar)
    failed = [c.error for s in studies for c in s.clips if c.error]
    for message in failed:
        report_failure(message)
    info(f"wrote {out / 'index.html'} ({len(studies)} studies)")
    emit_records([s.wide_row(tasks) for s in studies], fmt,
                 columns=["study", "study_date", "ef", "n_clips", "n_scored", "n_skipped", "n_failed",
                          *(f"{t}_detected" for t in tasks), "flags"])
    if failed or discovery_failed(files):
        raise typer.Exit(1)
