"""Outputs per study alongside the record stream: every record passes on as it comes, and once the
stream ends each study's output follows as one more record (an :class:`OutputRecord`).

    >>> records = echoclip_cli.predict_ef(model, ["studies/"])
    >>> for r in echoclip_cli.with_sr(records, "sr/"):     # EFVideo…, EFStudy…, then one per study
    ...     print(r.level, getattr(r, "output", None))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import EchoclipError
from .studies import Headers, OutputRecord, Provenance, StudyGroups, header_lookup, reportable

NOTHING_SCORED = "no clip of the study was scored for EF or a binary task (what SR and FHIR report)"


@dataclass(kw_only=True)
class BundleRecord(OutputRecord):
    """A study's FHIR bundle (``bundle``), or why it has none."""

    OPTIONAL = OutputRecord.OPTIONAL | {"bundle"}

    level: str = "fhir"
    bundle: dict[str, Any] | None = field(default=None)


def with_sr(records: Iterable[Any], out: str | Path, *, headers: Headers | None = None,
            provenance: Provenance | None = None) -> Iterator[Any]:
    """The records as they come, then per study an :class:`OutputRecord` (level ``sr``) naming
    the SR written under ``out`` (``<StudyInstanceUID>.dcm``), or saying why there is none:
    ``error`` for a study without DICOM headers (video inputs), ``skipped`` when it has no EF or
    binary score (no clip scored, or another kind of task).
    ``headers``: a clip's header by its record's source (default: read the file)."""
    from .sr import build_sr, highdicom, write_sr

    highdicom()  # a missing extra is a usage error before the first record, not after the last
    groups = StudyGroups()
    yield from groups.gather(records)
    lookup = header_lookup(headers)
    for study in groups:
        if not any(reportable(s) for s in study.summaries):
            yield OutputRecord(level="sr", study=study.study, skipped=NOTHING_SCORED)
            continue
        try:
            dataset = build_sr(study, lookup, provenance)
            path = write_sr(dataset, out)
        except EchoclipError as exc:
            yield OutputRecord(level="sr", study=study.study, error=str(exc))
            continue
        except OSError as exc:
            yield OutputRecord(level="sr", study=study.study, error=f"cannot write its SR into {out}: {exc.strerror}")
            continue
        yield OutputRecord(level="sr", study=study.study, output=str(path), sop_uid=str(dataset.SOPInstanceUID),
                           n_instances=_n_evidence(dataset))


def with_fhir(records: Iterable[Any], *, headers: Headers | None = None, keep_phi: bool = False,
              provenance: Provenance | None = None) -> Iterator[Any]:
    """The records as they come, then per study a :class:`BundleRecord` holding its FHIR R4
    bundle (:func:`~echoclip_cli.exchange.fhir.fhir_bundle`); ``skipped`` when no clip was scored."""
    from .fhir import fhir_bundle

    groups = StudyGroups()
    yield from groups.gather(records)
    lookup = header_lookup(headers)
    for study in groups:
        if not any(reportable(s) for s in study.summaries):
            yield BundleRecord(study=study.study, skipped=NOTHING_SCORED)
            continue
        bundle = fhir_bundle(study, provenance, headers=lookup, keep_phi=keep_phi)
        yield BundleRecord(study=study.study, bundle=bundle, n_instances=_n_instances(bundle))


def fhir_bundles(records: Iterable[Any], *, headers: Headers | None = None, keep_phi: bool = False) -> Iterator[dict[str, Any]]:
    """Only the bundles: one FHIR R4 Bundle per study with results."""
    for record in with_fhir(records, headers=headers, keep_phi=keep_phi):
        if isinstance(record, BundleRecord) and record.bundle is not None:
            yield record.bundle


def _n_evidence(dataset: Any) -> int:
    return sum(len(series.ReferencedSOPSequence) for study in dataset.get("CurrentRequestedProcedureEvidenceSequence", [])
               for series in study.ReferencedSeriesSequence)


def _n_instances(bundle: dict[str, Any]) -> int:
    return sum(e["resource"].get("numberOfInstances", 0) for e in bundle["entry"]
               if e["resource"]["resourceType"] == "ImagingStudy")

