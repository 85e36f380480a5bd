"""``echoclip labels``: harvest labels (EF with its method, devices) from an archive's SRs and reports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .common import FormatOpt, OutputFormat, RecordSink, info, report_failure, warn
from .inputs import DicomwebOpt, DirOpt, KeepPhiOpt, QueryOpt, StudyOpt, archive_of

if TYPE_CHECKING:
    from ..options import LabelOptions
    from ..site import LabelRecord

LABEL_COLUMNS = ["study", "measurement", "value", "unit", "method", "source_kind", "primary", "conflict", "source"]
TOLERANCE_HELP = "EF points two values of one study may differ by before the study is a conflict (no label)."
TextInputsArg = Annotated[
    Optional[list[Path]],
    typer.Argument(help="Measurement SRs (DICOM, any extension), report texts (.txt) or folders.", show_default=False),
]
SaltOpt = Annotated[Optional[str], typer.Option(
    "--salt", envvar="ECHOCLIP_SALT", help="Salt for the patient key (default: a per-home salt).")]
ToleranceOpt = Annotated[float, typer.Option("--tolerance", min=0.0, help=TOLERANCE_HELP)]


def label_options(tolerance: float, keep_phi: bool = False, salt: Optional[str] = None) -> "LabelOptions":
    from ..options import LabelOptions

    return LabelOptions(tolerance=tolerance, keep_phi=keep_phi, salt=salt)


def harvested(inputs: Optional[list[Path]], folders: Optional[list[Path]], tolerance: float,
              keep_phi: bool = False, salt: Optional[str] = None, archive: Any = None) -> "list[LabelRecord]":
    """Harvest (from files, or a DICOMweb ``archive``), report each unreadable file and each
    conflicting study on stderr, and summarise."""
    from .. import api
    from ..errors import UsageError

    if archive is not None and (inputs or folders):
        raise UsageError("give files (INPUTS or --dir) or --dicomweb, not both")
    given = archive if archive is not None else [*(inputs or []), *(folders or [])]
    records = api.harvest_labels(given, options=label_options(tolerance, keep_phi, salt))
    for record in records:
        if record.error:
            report_failure(record.error)
    conflicts = {(r.study, r.measurement): r.conflict for r in records if r.conflict}
    for (study, measurement), why in conflicts.items():
        warn(f"study {study}: {why} (no {measurement} label)")
    labelled = {r.study for r in records if r.primary}
    info(f"{sum(r.ok for r in records)} values from {len({r.source for r in records if r.ok})} files: "
         f"{len(labelled)} studies labelled, {len(conflicts)} conflicts")
    return records


def labels(
    inputs: TextInputsArg = None,
    folder: DirOpt = None,
    dicomweb: DicomwebOpt = None,
    study: StudyOpt = None,
    query: QueryOpt = None,
    tolerance: ToleranceOpt = 5.0,
    keep_phi: KeepPhiOpt = False,
    salt: SaltOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
) -> None:
    """Harvest labels from an archive: EF from measurement SRs and report texts, devices from reports.

    From files, or with --dicomweb from the structured reports of a PACS's studies (fetched whole;
    images are not read). SRs: every LVEF of the echo procedure report's content tree (LOINC, SNOMED or DCM codes), with its
    method (biplane Simpson, Teichholz, visual …) and unit (% or a 0–1 ratio). Report texts (.txt):
    "LV EJECTION FRACTION IS 55%", "55-60%", "ESTIMATED AT 40 %"; devices named in the report
    (pacer lead, TAVR, MitraClip, Impella). One record per value and study (StudyInstanceUID; a
    report takes the UID of the DICOM files beside it). Each study's label is marked primary; two
    EFs further apart than --tolerance are a conflict, reported and never averaged. The output
    feeds `evaluate --labels`, `calibrate --labels` and `fit --labels` as it is.

    Examples:

        echoclip labels --dir archive/ --format jsonl > labels.jsonl

        echoclip labels sr/ reports/ --tolerance 3 --format csv > labels.csv

        echoclip evaluate --labels-from archive/ --predictions ef.jsonl

        echoclip labels --dicomweb https://pacs.example.org/dicom-web --query StudyDate=20240101-20241231 > labels.jsonl
    """
    records = harvested(inputs, folder, tolerance, keep_phi, salt, archive_of(dicomweb, study, query))
    with RecordSink(fmt, columns=LABEL_COLUMNS, fields=_fields()) as sink:
        for record in records:
            sink.write(record.as_dict())
    if any(r.error for r in records):
        raise typer.Exit(1)


def _fields() -> tuple[str, ...]:
    from ..site import LabelRecord

    return LabelRecord.field_names()
