"""DICOM SR output (issue 26): `--sr DIR` writes one SR per study that a validator accepts, that
lands in the study it describes, and that reads back with the records' own numbers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import one_error_line, run_cli
from tests.media_factory import echo_frames, make_dicom, make_video
from tests.sr_helpers import PATIENT, dciodvfy, jsonl, make_study

hd = pytest.importorskip("highdicom")


@pytest.fixture()
def study(tmp_path: Path) -> dict[str, Path]:
    return make_study(tmp_path / "study")


def _read(path: Path):
    return hd.sr.srread(path)


def _groups(sr) -> dict[str, object]:
    return {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}


def _texts(sr, meaning: str) -> list[str]:
    from highdicom.sr.utils import find_content_items

    return [item.TextValue for item in find_content_items(sr, recursive=True)
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeMeaning == meaning]


def _evidence(sr) -> set[str]:
    return {ref.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}


def _header(path: Path):
    from pydicom import dcmread

    return dcmread(path, stop_before_pixels=True)


def test_predict_ef_writes_one_valid_sr_per_study_with_the_records_numbers(tiny_bundle, study, tmp_path):
    out = tmp_path / "sr"
    result = run_cli("predict-ef", "--dir", study["a"].parent, "-w", "tiny", "-f", "jsonl", "--sr", out)
    assert result.exit_code == 0, result.stderr
    records = jsonl(result.stdout)
    videos = {Path(r["source"]).name: r for r in records if r["level"] == "video"}
    (summary,) = [r for r in records if r["level"] == "study"]
    (written,) = [r for r in records if r["level"] == "sr"]
    path = Path(written["output"])
    assert path.parent == out and path.name == f"{summary['study']}.dcm" and written["n_instances"] == 2

    errors, warnings = dciodvfy(path)
    assert errors == [], "\n".join(errors)
    sr = _read(path)
    assert sr.SOPInstanceUID == written["sop_uid"] and sr.Modality == "SR"
    source = _header(study["a"])
    for keyword in ("StudyInstanceUID", *PATIENT):
        assert str(sr.get(keyword)) == str(source.get(keyword)), keyword  # lands in the same study, same patient
    assert _evidence(sr) == {str(_header(study[k]).SOPInstanceUID) for k in ("a", "b")}  # the still was not scored

    groups = _groups(sr)
    (ef,) = groups["ejection_fraction: study"].get_measurements()
    assert ef.name.value == "10230-1" and ef.unit.value == "%" and ef.value == pytest.approx(summary["ef"])
    for key in ("a", "b"):
        header = _header(study[key])
        group = groups[f"ejection_fraction: clip {header.SOPInstanceUID}"]
        (value,) = group.get_measurements()
        assert value.value == pytest.approx(videos[f"{key}.dcm"]["ef"])
        assert [s.referenced_sop_instance_uid for s in group.source_images] == [header.SOPInstanceUID]

    assert sr.VerificationFlag == "UNVERIFIED" and "not for diagnostic use" in sr.SeriesDescription
    import echoclip_cli

    assert set(_texts(sr, "Algorithm Name")) == {"echoclip zero-shot (tiny)"}
    assert set(_texts(sr, "Algorithm Version")) == {echoclip_cli.__version__}
    parameters = " ".join(_texts(sr, "Algorithm Parameters"))
    assert f"weights_sha256={summary['weights_sha256']}" in parameters and "weights=tiny" in parameters
    (refused,) = _texts(sr, "Clip not scored")
    assert refused.startswith("still.dcm: still clip")


def test_detect_devices_sr_holds_each_device_with_score_threshold_and_call(tiny_bundle, study, tmp_path):
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text('{"tavr": -1.0}')  # every clip over it: a Present call
    out = tmp_path / "sr"
    result = run_cli("detect-devices", *(study[k] for k in ("a", "b")), "-w", "tiny", "-f", "jsonl", "--sr", out,
                     "--thresholds", thresholds, "-d", "pacemaker", "-d", "tavr", "-d", "impella")
    assert result.exit_code == 0, result.stderr
    records = jsonl(result.stdout)
    (written,) = [r for r in records if r["level"] == "sr"]
    errors, _ = dciodvfy(Path(written["output"]))
    assert errors == [], "\n".join(errors)
    groups = _groups(_read(Path(written["output"])))
    for summary in (r for r in records if r["level"] == "study"):
        group = groups[f"{summary['task']}: study"]
        numbers = {m.name.meaning: m.value for m in group.get_measurements()}
        assert numbers["Score (attribute)"] == pytest.approx(summary["score"])
        calls = [q.value.meaning for q in group.get_qualitative_evaluations()]
        if summary["threshold"] is None:  # impella: no threshold, no call
            assert "Threshold Value" not in numbers and calls == []
        else:
            assert numbers["Threshold Value"] == pytest.approx(summary["threshold"])
            assert calls == ["Present" if summary["detected"] else "Absent"]
    assert groups["tavr: study"].finding_type.value == "25510005"
    assert [s.value.value for s in groups["tavr: study"].finding_sites] == ["34202007"]  # the aortic valve
    per_clip = [r for r in records if r["level"] == "video" and r["task"] == "pacemaker"]
    for record in per_clip:
        uid = _header(Path(record["source"])).SOPInstanceUID
        (score, _) = groups[f"pacemaker: clip {uid}"].get_measurements()
        assert score.value == pytest.approx(record["score"])


def test_video_inputs_get_one_error_record_per_study_and_the_run_goes_on(tiny_bundle, study, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "c.avi", echo_frames(12, 48, 64, seed=6))
    make_video(videos / "d.avi", echo_frames(12, 48, 64, seed=7))
    still = make_dicom(tmp_path / "still.dcm", echo_frames(1, 48, 64, seed=9), "rgb", seed=9)  # a study of one still
    result = run_cli("predict-ef", study["a"], *sorted(videos.iterdir()), still, "-w", "tiny", "-f", "jsonl",
                     "--sr", tmp_path / "sr")
    assert result.exit_code == 1
    outputs = {r["study"]: r for r in jsonl(result.stdout) if r["level"] == "sr"}
    assert len(outputs) == 3 and Path(outputs[str(_header(study["a"]).StudyInstanceUID)]["output"]).is_file()
    assert "no DICOM header" in outputs[str(videos)]["error"]  # the DICOM study still got its SR
    skipped = outputs[str(_header(still).StudyInstanceUID)]
    assert "no clip of the study was scored" in skipped["skipped"] and "error" not in skipped
    assert result.stderr.count("error:") == 1


def test_sr_without_highdicom_is_a_usage_error_before_any_model_loads(study, tmp_path, monkeypatch):
    from echoclip_cli.cli import zeroshot_cmd

    monkeypatch.setitem(sys.modules, "highdicom", None)
    monkeypatch.setattr(zeroshot_cmd, "zero_shot_model", lambda *a, **k: pytest.fail("a model was loaded"))
    result = run_cli("predict-ef", study["a"], "--sr", tmp_path / "sr")
    assert result.exit_code == 2 and "highdicom" in one_error_line(result)
    assert "echoclip[pacs]" in result.stderr
    (tmp_path / "file").write_text("")
    assert run_cli("detect-devices", study["a"], "--sr", tmp_path / "file").exit_code == 2


def test_dciodvfy_is_there_to_validate_the_srs():
    """The SR tests run dciodvfy on every SR they write; without it those checks pass silently, so
    this test says so in the summary."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed: SRs not validated")


def test_build_sr_takes_headers_from_dicomweb_metadata_as_well_as_files(tiny_bundle, study, tmp_path):
    """The headers may come from anywhere (here: DICOMweb JSON metadata): the SR is the same."""
    import echoclip_cli
    from pydicom import Dataset

    model = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    records = list(echoclip_cli.predict_ef(model, [study["a"], study["b"]]))
    (results,) = echoclip_cli.group_by_study(records)
    metadata = {str(p): Dataset.from_json(_header(p).to_json_dict()) for p in (study["a"], study["b"])}
    from_json = echoclip_cli.build_sr(results, metadata)
    from_files = echoclip_cli.build_sr(results)
    assert from_json.PatientName == from_files.PatientName == PATIENT["PatientName"]
    assert _evidence(from_json) == _evidence(from_files)
    path = echoclip_cli.write_sr(from_json, tmp_path / "sr")
    assert dciodvfy(path)[0] == []
