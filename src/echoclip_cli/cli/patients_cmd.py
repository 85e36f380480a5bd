"""``echoclip match-patients``: which studies look like the same patient (EchoCLIP-R)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import defaults as D
from ..media.classify import parse_clip_types
from ..defaults import DEFAULT_BATCH_SIZE
from ..defaults import RETRIEVAL_WEIGHTS as PATIENT_WEIGHTS
from .common import (DeviceOpt, FormatOpt, OutputFormat, BackendOpt, PrecisionOpt, emit_records, info, report_failure, warn,
                     weights_option)
from .inputs import (BatchOpt, ClipTypesOpt, DicomwebOpt, DirOpt, FramesOpt, InputsArg, MaskOpt, QueryOpt, QuietOpt,
                     StartOpt, StrideOpt, StudyOpt, WorkersOpt, discovery_failed, inputs_or_store,
                     run_options, sampling)
from .models import open_model
from .progress import progress_bar

COLUMNS = ["level", "study", "other", "rank", "score", "same_patient", "group", "flag", "patient", "study_date", "days"]


def match_patients(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    dicomweb: DicomwebOpt = None,
    study: StudyOpt = None,
    query: QueryOpt = None,
    store: Annotated[Optional[Path], typer.Option("--store", help="Use the video embeddings of this store.")] = None,
    weights: weights_option(f"{PATIENT_WEIGHTS} (EchoCLIP-R)") = None,  # type: ignore[valid-type]
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Nearest studies listed per study.", min=0)] = D.DEFAULT_K,
    threshold: Annotated[float, typer.Option("--threshold", help="Same-patient cosine: midpoint of the paper's means, different patients 0.40 and same patient 0.64.")] = D.SAME_PATIENT_THRESHOLD,
    mislabel_threshold: Annotated[float, typer.Option("--mislabel-threshold", help="Flag a study whose best match among its own patient key's studies is below this (paper's different-patient mean).")] = D.MISLABEL_THRESHOLD,
    duplicate_threshold: Annotated[float, typer.Option("--duplicate-threshold", help="Flag two studies with different patient keys at or above this (paper's same-patient mean).")] = D.DUPLICATE_THRESHOLD,
    timeline: Annotated[bool, typer.Option("--timeline", help="Order each patient's studies by date; score each against the earliest.")] = False,
    drop_threshold: Annotated[float, typer.Option("--drop-threshold", help="Timeline: flag a study below this similarity to its reference.")] = D.DROP_THRESHOLD,
    window_days: Annotated[Optional[int], typer.Option("--window-days", help="Timeline: the reference is the earliest study within this many days before (paper: 200); default the first study.", min=0)] = None,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    workers: WorkersOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    clip_types: ClipTypesOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    backend: BackendOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Find studies that appear to belong to the same patient, and patient-key conflicts.

    Studies (StudyInstanceUID, else folder) are compared by the cosine of their EchoCLIP-R
    embeddings. The defaults come from the paper's mean similarities (different patients 0.40,
    same patient at another time 0.64): same patient at 0.52 and above (their midpoint); where
    studies carry patient keys, a study resembling none of its own key's studies (best < 0.40)
    is a possible mislabel and two keys with a pair at 0.64 or more a possible duplicate patient;
    --timeline flags studies below 0.52 against the patient's earliest study (transplant,
    surgery). Records (level: neighbour, group, conflict, timeline) go to stdout.

    Examples:

        echoclip match-patients --store archive.store --format jsonl > matches.jsonl

        echoclip match-patients --dir studies/ --threshold 0.6

        echoclip match-patients --store archive.store --timeline --window-days 200 --format csv

        echoclip match-patients --dicomweb https://pacs.example.org/dicom-web --query PatientID=12345 --timeline
    """
    from .. import api

    files = inputs_or_store(inputs, folder, store, dicomweb, study, query)
    types = parse_clip_types(clip_types, api.PATIENT_TYPES)
    from ..patients import MatchSettings  # torch loads only once the arguments are checked

    settings = MatchSettings(k=top_k, threshold=threshold, mislabel_threshold=mislabel_threshold,
                             duplicate_threshold=duplicate_threshold, timeline=timeline,
                             drop_threshold=drop_threshold, window_days=window_days, device=device)
    model = None
    if store is None:
        model = open_model(weights, default=PATIENT_WEIGHTS, device=device, precision=precision, backend=backend,
                           quiet=quiet)
    elif weights is not None:
        api.weights_for(weights, store, PATIENT_WEIGHTS)  # a usage error unless they are the store's
    options = run_options(batch_size=batch_size, workers=workers, sampled=sampling(frames, stride, start, mask),
                          clip_types=types)
    with progress_bar(quiet) as bar:
        result = api.match_patients(model, files, store=store, options=options, settings=settings, progress=bar)
    for message in result.warnings:
        warn(message)
    for message in result.failures:
        report_failure(message)
    info(f"{len(result.studies)} studies from {sum(len(m) for m in result.studies.members)} videos: {len(result.groups)} same-patient "
         f"groups, {len(result.conflicts)} conflicts")
    if timeline and not result.timeline:
        info("timeline: no patient has two or more studies (by patient key, or else by a same-patient group), "
             "so there is nothing to order; --threshold lower joins more studies into groups")
    emit_records([record.as_dict() for record in result.records()], fmt, columns=COLUMNS)
    if result.failures or discovery_failed(files):
        raise typer.Exit(1)
