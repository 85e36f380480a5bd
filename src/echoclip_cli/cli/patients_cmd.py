"""``echoclip match-patients``: which studies look like the same patient (EchoCLIP-R)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..errors import EchoclipError, MediaError
from .common import DeviceOpt, FormatOpt, OutputFormat, PrecisionOpt, emit_records, info, warn
from ..defaults import RETRIEVAL_WEIGHTS as PATIENT_WEIGHTS
from .embed_cmd import embed_inputs, report_failure
from .inputs import (BatchOpt, DirOpt, FramesOpt, InputsArg, MaskOpt, QuietOpt, StartOpt, StrideOpt, WorkersOpt,
                     inputs_or_store)
from .models import open_model, weights_for

if TYPE_CHECKING:  # torch loads when the command runs, not when --help is built
    import numpy as np

NOT_R_WARNING = ("{name} is not EchoCLIP-R: the paper validated patient identification and change detection with "
                 "EchoCLIP-R (echo-clip-r); similarities from other weights do not follow its thresholds")
COLUMNS = ["level", "study", "other", "rank", "score", "same_patient", "group", "flag", "patient", "study_date", "days"]


def match_patients(
    inputs: InputsArg = None,
    folder: DirOpt = None,
    store: Annotated[Optional[Path], typer.Option("--store", help="Use the video embeddings of this store.")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", show_default=False, help=f"Weights for embedding INPUTS (default {PATIENT_WEIGHTS}, EchoCLIP-R); a --store uses its own.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Nearest studies listed per study.", min=0)] = 5,
    threshold: Annotated[float, typer.Option("--threshold", help="Same-patient cosine: midpoint of the paper's means, different patients 0.40 and same patient 0.64.")] = 0.52,
    mislabel_threshold: Annotated[float, typer.Option("--mislabel-threshold", help="Flag a study whose best match among its own patient key's studies is below this (paper's different-patient mean).")] = 0.40,
    duplicate_threshold: Annotated[float, typer.Option("--duplicate-threshold", help="Flag two studies with different patient keys at or above this (paper's same-patient mean).")] = 0.64,
    timeline: Annotated[bool, typer.Option("--timeline", help="Order each patient's studies by date; score each against the earliest.")] = False,
    drop_threshold: Annotated[float, typer.Option("--drop-threshold", help="Timeline: flag a study below this similarity to its reference.")] = 0.52,
    window_days: Annotated[Optional[int], typer.Option("--window-days", help="Timeline: the reference is the earliest study within this many days before (paper: 200); default the first study.", min=0)] = None,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = None,
    frames: FramesOpt = None,
    stride: StrideOpt = None,
    start: StartOpt = None,
    mask: MaskOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
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
    """
    files = inputs_or_store(inputs, folder, store)
    import numpy as np

    from ..patients import MatchSettings  # the model stack loads only once the arguments are checked
    from ..patients import match_patients as run_matching

    failures = 0
    if store is not None:
        if weights is not None:
            weights_for(weights, store, PATIENT_WEIGHTS)  # a usage error when they are not the store's
        embeddings, rows = _from_store(store)
    else:
        embeddings, rows, failures = _embed_inputs(files or [], weights or PATIENT_WEIGHTS, batch_size, workers,
                                                   {"frames": frames, "stride": stride, "start": start, "mask": mask},
                                                   device, precision, quiet)
    settings = MatchSettings(k=top_k, threshold=threshold, mislabel_threshold=mislabel_threshold,
                             duplicate_threshold=duplicate_threshold, timeline=timeline,
                             drop_threshold=drop_threshold, window_days=window_days)
    result = run_matching(np.asarray(embeddings), rows, settings, device=device)
    info(f"{len(result.studies)} studies from {len(rows)} videos: {len(result.groups)} same-patient groups, "
         f"{len(result.conflicts)} conflicts")
    emit_records(result.records(), fmt, columns=COLUMNS)
    if failures:
        raise typer.Exit(1)


def _from_store(path: Path) -> tuple["np.ndarray", list[dict[str, Any]]]:
    from ..store import read_store

    store = read_store(path)
    name = store.header["weights"]["name"]
    if not _is_retrieval_weights(name, store.weights_sha256):
        warn(NOT_R_WARNING.format(name=f"the store's weights {name!r}"))
    return store.embeddings, store.rows


def _is_retrieval_weights(name: str, sha256: str) -> bool:
    """Whether weights are EchoCLIP-R (template tokenizer), judged from the installed bundle."""
    from .. import weights as w

    try:
        bundle = w.resolve(name, auto_pull=False)
    except EchoclipError:
        return name == PATIENT_WEIGHTS
    if bundle.weights_sha256 != sha256:
        return name == PATIENT_WEIGHTS
    return bundle.tokenizer_kind == "template"


def _embed_inputs(files: list[Path], weights: str, batch_size: int, workers: Optional[int], opts: dict[str, Any],
                  device: str, precision: str, quiet: bool) -> tuple["np.ndarray", list[dict[str, Any]], int]:
    import numpy as np

    model = open_model(weights, device=device, precision=precision, quiet=quiet)
    if model.bundle.tokenizer_kind != "template":
        warn(NOT_R_WARNING.format(name=f"--weights {model.bundle.name!r}"))
    vectors, rows, failures = [], [], 0
    for result in embed_inputs(model, files, opts, batch_size=batch_size, workers=workers, quiet=quiet):
        if result.error is not None or result.embedding is None:
            report_failure({"error": result.error})
            failures += 1
            continue
        vectors.append(result.embedding)
        rows.append({**result.meta, "source": result.source})
    if not vectors:
        raise MediaError("no input could be embedded")
    return np.stack(vectors), rows, failures
