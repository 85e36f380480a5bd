"""One FHIR R4 Bundle per study: plain dicts (no FHIR library at run time), JSON-ready.

A bundle is a ``transaction`` a FHIR server takes as it is (``POST [base]``), its resources linked
by ``urn:uuid`` full URLs, the shared ones created only when not there yet (``ifNoneExist``):

* an **ImagingStudy** identified by its Study Instance UID (``urn:dicom:uid`` / ``urn:oid:…``),
  with the series and instances that were scored where their headers are known;
* a **Device**: the algorithm, echoclip's version and the weights' name and sha256;
* an **Observation** per study-level result (``status`` preliminary: not verified by a
  clinician): EF as LOINC 10230-1 in UCUM ``%``; a device as its SNOMED CT concept, the score as
  the value, the threshold as a component and, where a threshold exists, POS or NEG as the
  interpretation. Each is derived from the ImagingStudy and made by the Device; per-clip values
  stay in the records and the SR;
* a **Provenance** naming the Device as the author of the Observations, the study as the source;
* a **Patient** only by the salted ``patient_key`` the records carry, never a name, birth date or
  raw ID, unless ``keep_phi`` (then taken from the headers).

Identifiers of the bundle's resources are derived from the study, the weights and the task, so
the same results give the same bundle (apart from its timestamps).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Sequence

from . import concepts as C
from .studies import Headers, Provenance, StudyResults, header_lookup, reportable

if TYPE_CHECKING:
    from pydicom import Dataset

DICOM_UID = "urn:dicom:uid"
PATIENT_KEY = "urn:echoclip:patient-key"
WEIGHTS_SHA256 = "urn:echoclip:weights-sha256"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
NOTE = "AI result (echoclip zero-shot), not verified by a clinician; not for diagnostic use."
_NAMESPACE = uuid.UUID("5b8d3c1e-2f6a-4c1e-9d8e-ec40c1f0a126")  # echoclip's, for uuid5
_UID = re.compile(r"[0-9]+(\.[0-9]+)+")
_SEX = {"M": "male", "F": "female", "O": "other"}


def fhir_bundle(results: StudyResults, provenance: Provenance | None = None, *,
                headers: Headers | None = None, keep_phi: bool = False) -> dict[str, Any]:
    """The FHIR R4 transaction Bundle of one study's results. ``headers``: a clip's DICOM header
    by its record's source (default: read the file), for the series and instances scored and,
    with ``keep_phi``, the patient's name, ID, birth date and sex."""
    provenance = provenance or Provenance.of(results)
    lookup = header_lookup(headers)
    found = [h for source in results.scored() if (h := lookup(source)) is not None]
    ids = _Ids(results.study, provenance.weights_sha256)
    patient = _patient(results, found[0] if found else None, keep_phi)
    subject = {"reference": ids.url("Patient")} if patient else {"display": "patient not identified"}
    study = _imaging_study(results, found, subject)
    device = _device(provenance)
    observations = [(_observation(s, subject, ids, provenance), s.task) for s in results.summaries  # type: ignore[attr-defined]
                    if reportable(s)]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entries = [("Patient", patient), ("ImagingStudy", study), ("Device", device)]
    entries += [(f"Observation/{task}", obs) for obs, task in observations]
    entries.append(("Provenance", _provenance([ids.url(f"Observation/{task}") for _, task in observations], ids, now)))
    for _, resource in entries:
        if resource and resource["resourceType"] == "Observation":
            resource["issued"] = now
    return {"resourceType": "Bundle", "type": "transaction", "timestamp": now,
            "entry": [_entry(ids.url(key), resource) for key, resource in entries if resource]}


class _Ids:
    """Stable urn:uuid full URLs for one study's resources."""

    def __init__(self, study: str, sha256: str) -> None:
        self.seed = f"{study}|{sha256}"

    def url(self, key: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{self.seed}|{key}')}"


def _entry(url: str, resource: dict[str, Any]) -> dict[str, Any]:
    request = {"method": "POST", "url": resource["resourceType"]}
    if_none = _if_none_exist(resource)
    if if_none:
        request["ifNoneExist"] = if_none
    return {"fullUrl": url, "resource": resource, "request": request}


def _if_none_exist(resource: dict[str, Any]) -> str | None:
    """Patient, ImagingStudy and Device are shared: created only when none has their identifier."""
    if resource["resourceType"] in ("Patient", "ImagingStudy", "Device") and resource.get("identifier"):
        first = resource["identifier"][0]
        return f"identifier={first['system']}|{first['value']}"
    return None


def _coding(code: Any) -> dict[str, str]:
    return {"system": C.FHIR_SYSTEMS[code.scheme_designator], "code": code.value, "display": code.meaning}


def _concept(code: Any, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [_coding(code)]}
    if text:
        concept["text"] = text
    return concept


def _quantity(value: float, unit: Any) -> dict[str, Any]:
    return {"value": float(value), "unit": unit.value, "system": C.FHIR_SYSTEMS["UCUM"], "code": unit.value}


def _date(value: str | None) -> str | None:
    """A DICOM DA (YYYYMMDD) as a FHIR date; None when it is not one."""
    text = str(value or "").strip()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if re.fullmatch(r"\d{8}", text) else None


# --------------------------------------------------------------------------- resources


def _patient(results: StudyResults, header: "Dataset | None", keep_phi: bool) -> dict[str, Any] | None:
    """The patient by salted key (and, with ``keep_phi``, as the header names them); None when unknown."""
    key = next((r.patient_key for r in [*results.summaries, *results.videos] if r.patient_key), None)
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": []}
    if key:
        patient["identifier"].append({"system": PATIENT_KEY, "value": key})
    if keep_phi and header is not None:
        patient.update(_phi(header))
        if pid := str(header.get("PatientID") or "").strip():
            patient["identifier"].append({"value": pid})
    if not patient["identifier"]:
        del patient["identifier"]
    return patient if len(patient) > 1 else None


def _phi(header: "Dataset") -> dict[str, Any]:
    out: dict[str, Any] = {}
    name = header.get("PatientName")
    if name:
        given = [part for part in (name.given_name, name.middle_name) if part]
        out["name"] = [{k: v for k, v in (("family", name.family_name or None), ("given", given or None)) if v}
                       or {"text": str(name)}]
    if birth := _date(header.get("PatientBirthDate")):
        out["birthDate"] = birth
    if sex := _SEX.get(str(header.get("PatientSex") or "").strip().upper()):
        out["gender"] = sex
    return out


def _imaging_study(results: StudyResults, headers: Sequence["Dataset"], subject: dict[str, Any]) -> dict[str, Any]:
    """The study by its Study Instance UID (from a header, else the study key when it is a UID)."""
    uid = str(headers[0].get("StudyInstanceUID") or "") if headers else ""
    uid = uid or (results.study if _UID.fullmatch(results.study) else "")
    study: dict[str, Any] = {"resourceType": "ImagingStudy", "status": "available", "subject": subject}
    if uid:
        study["identifier"] = [{"system": DICOM_UID, "value": f"urn:oid:{uid}"}]
    if started := _date(next((r.study_date for r in results.videos if r.study_date), None)):
        study["started"] = started
    series = _series(headers)
    if series:
        study.update(numberOfSeries=len(series), numberOfInstances=sum(len(s["instance"]) for s in series),
                     series=series)
    return study


def _series(headers: Sequence["Dataset"]) -> list[dict[str, Any]]:
    series: dict[str, dict[str, Any]] = {}
    for header in headers:
        uid, sop, sop_class = (str(header.get(k) or "") for k in ("SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"))
        if not (uid and sop and sop_class):
            continue
        entry = series.setdefault(uid, {"uid": uid, "modality": {"system": C.FHIR_SYSTEMS["DCM"],
                                                                 "code": str(header.get("Modality") or "US")},
                                        "instance": []})
        if all(i["uid"] != sop for i in entry["instance"]):
            entry["instance"].append({"uid": sop, "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"}})
    return list(series.values())


def _device(provenance: Provenance) -> dict[str, Any]:
    """The algorithm as a Device: echoclip's version, the weights' name and sha256, the settings."""
    versions = [("echoclip", provenance.echoclip_version), ("weights", provenance.weights),
                ("weights sha256", provenance.weights_sha256)]
    settings = {k: v for k, v in provenance.parameters().items() if k not in ("weights", "weights_sha256")}
    device = {"resourceType": "Device", "identifier": [{"system": WEIGHTS_SHA256, "value": provenance.weights_sha256}],
              "manufacturer": "echoclip",
              "deviceName": [{"name": f"echoclip zero-shot ({provenance.weights})", "type": "model-name"}],
              "version": [{"type": {"text": kind}, "value": value} for kind, value in versions],
              "note": [{"text": NOTE}]}
    if settings:
        device["property"] = [{"type": {"text": k}, "valueCode": [{"text": v}]} for k, v in settings.items()]
    return device


def _observation(summary: Any, subject: dict[str, Any], ids: _Ids, provenance: Provenance) -> dict[str, Any]:
    n = summary.n_videos
    obs: dict[str, Any] = {
        "resourceType": "Observation", "status": "preliminary",
        "category": [{"coding": [{"system": CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        "subject": subject, "device": {"reference": ids.url("Device")},
        "derivedFrom": [{"reference": ids.url("ImagingStudy")}],
        "method": {"text": f"echoclip zero-shot ({provenance.weights}), mean of {n} clip{'s' * (n != 1)}"},
        "note": [{"text": NOTE}],
    }
    if effective := _date(summary.study_date):
        obs["effectiveDateTime"] = effective
    if getattr(summary, "ef", None) is not None:
        obs["code"] = _concept(C.LVEF, "LVEF (echoclip zero-shot estimate)")
        obs["valueQuantity"] = _quantity(summary.ef, C.PERCENT)
        return obs
    found = C.finding(summary.task)
    obs["code"] = _concept(found.concept, f"{summary.task} (echoclip zero-shot score)")
    obs["valueQuantity"] = _quantity(summary.score, C.NO_UNITS)
    if found.site is not None:
        obs["bodySite"] = _concept(found.site)
    if summary.threshold is not None:
        obs["component"] = [{"code": _concept(C.THRESHOLD), "valueQuantity": _quantity(summary.threshold, C.NO_UNITS)}]
    if summary.detected is not None:
        code, display = ("POS", "Positive") if summary.detected else ("NEG", "Negative")
        obs["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": code, "display": display}]}]
    return obs


def _provenance(targets: list[str], ids: _Ids, recorded: str) -> dict[str, Any] | None:
    if not targets:
        return None
    return {"resourceType": "Provenance", "target": [{"reference": t} for t in targets], "recorded": recorded,
            "agent": [{"type": {"coding": [{"system": PARTICIPANT, "code": "author", "display": "Author"}]},
                       "who": {"reference": ids.url("Device")}}],
            "entity": [{"role": "source", "what": {"reference": ids.url("ImagingStudy")}}]}
