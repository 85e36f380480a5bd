"""FHIR output (issue 26): `--format fhir` writes one FHIR R4 Bundle per study, NDJSON. Each is
validated with fhir.resources' R4B models (``fhir.resources`` 8 defaults to R5; R4B is the R4
line's last release and its models are the R4 ones for every resource used here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.media_factory import echo_frames, make_video
from tests.sr_helpers import PATIENT, PHI_VALUES, jsonl, make_study

R4B = pytest.importorskip("fhir.resources.R4B")


@pytest.fixture()
def study(tmp_path: Path) -> dict[str, Path]:
    return make_study(tmp_path / "study")


def _validate(bundle: dict) -> dict[str, list[dict]]:
    """The bundle and every resource in it validated; the resources by type."""
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)
    by_type: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        R4B.get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        by_type.setdefault(resource["resourceType"], []).append(resource)
    return by_type


def _study_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_format_fhir_writes_one_valid_bundle_per_study_with_the_records_numbers(tiny_bundle, study, tmp_path):
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text('{"tavr": 0.0}')
    args = ("--dir", study["a"].parent, "-w", "tiny", "--thresholds", thresholds)
    records = jsonl(run_cli("detect-devices", *args, "-f", "jsonl").stdout)
    result = run_cli("detect-devices", *args, "-f", "fhir")
    assert result.exit_code == 0, result.stderr
    (bundle,) = jsonl(result.stdout)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    resources = _validate(bundle)
    (imaging,) = resources["ImagingStudy"]
    assert imaging["identifier"] == [{"system": "urn:dicom:uid", "value": f"urn:oid:{_study_uid(study['a'])}"}]
    assert imaging["numberOfInstances"] == 2  # the scored clips, not the still
    (device,) = resources["Device"]
    summaries = {r["task"]: r for r in records if r["level"] == "study"}
    assert {"type": {"text": "weights sha256"}, "value": summaries["tavr"]["weights_sha256"]} in device["version"]
    urls = {e["resource"]["resourceType"]: e["fullUrl"] for e in bundle["entry"]}
    observations = {o["code"]["text"].split(" ")[0]: o for o in resources["Observation"]}
    assert set(observations) == set(summaries)
    for task, observation in observations.items():
        assert observation["status"] == "preliminary" and observation["valueQuantity"]["value"] == pytest.approx(
            summaries[task]["score"])
        assert observation["derivedFrom"] == [{"reference": urls["ImagingStudy"]}]
        assert observation["device"] == {"reference": urls["Device"]}
    tavr = observations["tavr"]
    assert tavr["code"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "25510005",
                                         "display": "Heart valve prosthesis"}
    assert tavr["component"][0]["valueQuantity"]["value"] == 0.0
    assert tavr["interpretation"][0]["coding"][0]["code"] == ("POS" if summaries["tavr"]["detected"] else "NEG")
    assert "interpretation" not in observations["impella"] and "component" not in observations["impella"]
    (provenance,) = resources["Provenance"]
    assert len(provenance["target"]) == len(observations) and provenance["agent"][0]["who"]["reference"] == urls["Device"]


def test_ef_is_loinc_10230_1_in_percent_and_no_phi_leaves_without_keep_phi(tiny_bundle, study):
    import echoclip_cli

    model = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    records = list(echoclip_cli.predict_ef(model, [study["a"], study["b"]]))
    (bundle,) = echoclip_cli.fhir_bundles(records)
    resources = _validate(bundle)
    (observation,) = resources["Observation"]
    (summary,) = [r for r in records if r.level == "study"]
    assert observation["code"]["coding"][0]["code"] == "10230-1"
    assert observation["valueQuantity"] == {"value": summary.ef, "unit": "%", "system": "http://unitsofmeasure.org",
                                            "code": "%"}
    assert observation["effectiveDateTime"] == "2024-01-02"
    (patient,) = resources["Patient"]
    assert patient == {"resourceType": "Patient",
                       "identifier": [{"system": "urn:echoclip:patient-key", "value": summary.patient_key}]}
    text = json.dumps(bundle)
    assert not [value for value in PHI_VALUES if value in text]

    (kept,) = echoclip_cli.fhir_bundles(records, keep_phi=True)
    (patient,) = _validate(kept)["Patient"]
    assert patient["name"] == [{"family": "Doe", "given": ["Jane"]}] and patient["birthDate"] == "1960-02-03"
    assert {"value": PATIENT["PatientID"]} in patient["identifier"] and patient["gender"] == "female"


def test_video_inputs_get_a_bundle_without_a_dicom_identifier(tiny_bundle, tmp_path):
    video = make_video(tmp_path / "c.avi", echo_frames(12, 48, 64, seed=6))
    result = run_cli("predict-ef", video, "-w", "tiny", "-f", "fhir")
    assert result.exit_code == 0, result.stderr
    (bundle,) = jsonl(result.stdout)
    resources = _validate(bundle)
    assert "identifier" not in resources["ImagingStudy"][0] and "Patient" not in resources
    assert str(tmp_path) not in json.dumps(bundle)  # the folder that stands for the study stays out
