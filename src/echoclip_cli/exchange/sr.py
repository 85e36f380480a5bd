"""One DICOM Structured Report per study, written with highdicom (``pip install 'echoclip[pacs]'``).

The SR is a Comprehensive 3D SR holding an Imaging Measurement Report (TID 1500), as the IHE AI
Results profile asks of AI results:

* one measurement group (TID 1501) per task for the study (the mean of its clips) and one per
  task and scored clip, each referencing the clips it was computed from: EF as LOINC 10230-1 in
  UCUM ``%``; a device as its SNOMED CT concept with its score, its threshold and, where a
  threshold exists, Present or Absent (:mod:`.concepts`);
* the algorithm identification (TID 4019) in every group and the device observer context:
  echoclip's version, the weights' name and sha256, the numerics and prompts that ran them;
* VerificationFlag UNVERIFIED, PreliminaryFlag PRELIMINARY, and a series description and
  comment saying the results are not for diagnostic use;
* the clips that were read but not scored (their type, or an error), each with the reason;
* the scored instances, and no others, as the evidence (Current Requested Procedure Evidence).

Patient and study attributes are copied from the scored clips' headers, so the SR belongs to the
study it describes. The headers may come from files or from DICOMweb metadata
(``pydicom.Dataset.from_json``): :func:`build_sr` only asks for a lookup by record source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..defaults import RESULT_MANUFACTURER
from ..errors import MediaError, UsageError
from ..files import atomic_write
from ..records import VideoRecord
from . import concepts as C
from .studies import Headers, Provenance, StudyResults, header_lookup, reportable

if TYPE_CHECKING:
    from pydicom import Dataset

INSTALL_HINT = "pip install 'echoclip[pacs]'"
SERIES_NUMBER = 990  # echoclip's SRs sort after the acquired series in a viewer
SERIES_DESCRIPTION = "echoclip AI results - not for diagnostic use"
DISCLAIMER = ("Zero-shot AI results (echoclip {version}, weights {weights}, sha256 {sha256}). "
              "Not verified by a clinician. Not for diagnostic use.")
NO_HEADER = "no DICOM header for any scored clip (video files carry no patient or study): no SR"
# Type 2 attributes highdicom copies from the first header; DICOMweb metadata may leave them out.
_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
          "StudyTime", "ReferringPhysicianName")
_UIDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")


def highdicom() -> Any:
    """The highdicom module, or a usage error naming the extra that installs it."""
    try:
        import highdicom as hd
    except ImportError:
        raise UsageError("DICOM SR output needs highdicom, which is not installed", hint=INSTALL_HINT) from None
    return hd


@dataclass(frozen=True)
class Clip:
    """A scored clip: its header and its records (one per task)."""

    source: str
    header: "Dataset"
    records: list[VideoRecord]


def build_sr(results: StudyResults, headers: Headers | None = None,
             provenance: Provenance | None = None) -> "Dataset":
    """The SR of one study's results. ``headers``: a clip's DICOM header by its record's
    ``source`` (a mapping or a function; default: read the file). A MediaError when no scored
    clip has a header (video inputs)."""
    hd = highdicom()
    provenance = provenance or Provenance.of(results)
    clips, refused = _clips(results, header_lookup(headers))
    if not clips:
        raise MediaError(f"study {results.study}: {NO_HEADER}")
    algorithm = hd.sr.AlgorithmIdentification(
        name=f"echoclip zero-shot ({provenance.weights})", version=provenance.echoclip_version,
        parameters=[f"{k}={v}" for k, v in provenance.parameters().items()], manufacturer=RESULT_MANUFACTURER)
    groups = [group for task in _tasks(results, clips)
              for group in _task_groups(hd, task, results, clips, algorithm)]
    report = hd.sr.MeasurementReport(observation_context=_observer(hd, provenance),
                                     procedure_reported=C.ECHOCARDIOGRAPHY, imaging_measurements=groups)
    _add_notes(hd, report, provenance, refused, clips)
    return hd.sr.Comprehensive3DSR(
        evidence=[clip.header for clip in clips], content=report[0],
        series_instance_uid=hd.UID(), series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=RESULT_MANUFACTURER, manufacturer_model_name=provenance.weights[:64],
        software_versions=f"echoclip {provenance.echoclip_version}", series_description=SERIES_DESCRIPTION,
        is_complete=True, is_final=False, is_verified=False,
        coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(C.PRIVATE_SCHEME, name=C.PRIVATE_SCHEME_NAME)])


def write_sr(dataset: "Dataset", out: str | Path) -> Path:
    """Write ``dataset`` as ``out/<StudyInstanceUID>.dcm`` (replacing an earlier one whole)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    uid = str(dataset.StudyInstanceUID)
    name = uid if re.fullmatch(r"[0-9][0-9.]{0,63}", uid) else _digest(uid)
    return atomic_write(folder / f"{name}.dcm", lambda tmp: dataset.save_as(tmp, enforce_file_format=True))


# --------------------------------------------------------------------------- the clips


def _clips(results: StudyResults, lookup: Any) -> tuple[list[Clip], dict[str, str]]:
    """The scored clips that have a usable header, and every other clip with why it is not in."""
    refused = results.refused()
    clips = []
    for source, records in results.scored().items():
        header = lookup(source)
        reason = _unusable(header)
        if reason:
            refused[source] = reason
        else:
            clips.append(Clip(source, _complete(header), records))
    return clips, refused


def _unusable(header: "Dataset | None") -> str | None:
    if header is None:
        return "no DICOM header (not a DICOM file, or no longer readable)"
    missing = [k for k in _UIDS if not header.get(k)]
    return f"its header has no {', '.join(missing)}" if missing else None


def _complete(header: "Dataset") -> "Dataset":
    """``header`` with the Type 2 attributes an SR copies present (empty where the source has none)."""
    from pydicom import Dataset

    copy = Dataset(header)
    for keyword in _TYPE2:
        if keyword not in copy:
            setattr(copy, keyword, "")
    return copy


def _tasks(results: StudyResults, clips: Sequence[Clip]) -> list[str]:
    """The tasks with a number an SR reports (EF, binary scores), in the order they came."""
    records = [r for clip in clips for r in clip.records] + list(results.summaries)
    return list(dict.fromkeys(r.task for r in records if reportable(r)))  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the groups


def _task_groups(hd: Any, task: str, results: StudyResults, clips: Sequence[Clip], algorithm: Any) -> list[Any]:
    """The study's group for ``task`` (from its summary), then one per clip scored for it."""
    groups = []
    summary = next((s for s in results.summaries if getattr(s, "task", None) == task and reportable(s)), None)
    scored = [(clip, r) for clip in clips for r in clip.records if getattr(r, "task", None) == task and reportable(r)]
    if summary is not None:
        groups.append(_group(hd, f"{task}: study", summary, [clip for clip, _ in scored], algorithm, study=True))
    for clip, record in scored:
        groups.append(_group(hd, f"{task}: clip {clip.header.SOPInstanceUID}", record, [clip], algorithm, study=False))
    return groups


def _group(hd: Any, label: str, record: Any, clips: Sequence[Clip], algorithm: Any, *, study: bool) -> Any:
    derivation = C.MEAN if study else None
    sources = [hd.sr.SourceImageForMeasurementGroup(str(c.header.SOPClassUID), str(c.header.SOPInstanceUID))
               for c in clips]
    common = {"tracking_identifier": hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
              "algorithm_id": algorithm, "source_images": sources}
    if getattr(record, "ef", None) is not None:
        ef = hd.sr.Measurement(name=C.LVEF, value=float(record.ef), unit=C.PERCENT, derivation=derivation)
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            **common, finding_sites=[hd.sr.FindingSite(C.LEFT_VENTRICLE)], measurements=[ef])
    found = C.finding(record.task)
    measurements = [hd.sr.Measurement(name=C.SCORE, value=float(record.score), unit=C.NO_UNITS, derivation=derivation)]
    if record.threshold is not None:
        measurements.append(hd.sr.Measurement(name=C.THRESHOLD, value=float(record.threshold), unit=C.NO_UNITS))
    calls = ([hd.sr.QualitativeEvaluation(found.concept, C.PRESENT if record.detected else C.ABSENT)]
             if record.detected is not None else None)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        **common, finding_type=found.concept, measurements=measurements, qualitative_evaluations=calls,
        finding_sites=[hd.sr.FindingSite(found.site)] if found.site else None)


def _observer(hd: Any, provenance: Provenance) -> Any:
    """The device observer (TID 1004): echoclip running these weights."""
    from pydicom.uid import generate_uid

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["echoclip", provenance.echoclip_version, provenance.weights_sha256]),
        name="echoclip", manufacturer_name=RESULT_MANUFACTURER, model_name=provenance.weights[:64])
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=C.DEVICE_OBSERVER, observer_identifying_attributes=device))


def _add_notes(hd: Any, report: Any, provenance: Provenance, refused: dict[str, str], clips: Sequence[Clip]) -> None:
    """The disclaimer, then one line per clip not scored, in the report's root container."""
    root = report[0]
    root.ContentSequence.append(hd.sr.TextContentItem(
        C.COMMENT, DISCLAIMER.format(version=provenance.echoclip_version, weights=provenance.weights,
                                     sha256=provenance.weights_sha256), relationship_type="CONTAINS"))
    scored = {clip.source for clip in clips}
    for source, reason in refused.items():
        if source not in scored:
            root.ContentSequence.append(hd.sr.TextContentItem(
                C.CLIP_NOT_SCORED, f"{Path(source).name}: {reason.removeprefix(f'{source}: ')}", relationship_type="CONTAINS"))


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:32]
