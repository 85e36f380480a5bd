"""DICOMweb input against a real PACS: Orthanc with its DICOMweb plugin on loopback (tests/pacs.py).

Records from the archive must equal the records from the same files on disk; only the sampled
frames may travel; every server failure costs the inputs it touches one record each.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import echoclip_cli
from echoclip_cli.dicomweb import Archive
from tests.cli_helpers import run_cli
from tests.media_factory import echo_frames, make_dicom, make_sr
from tests.pacs import Proxy, orthanc_missing, start_orthanc

pytestmark = pytest.mark.skipif(orthanc_missing() is not None, reason=str(orthanc_missing()))

PATIENT = {"PatientName": "Doe^Jane", "PatientID": "MRN-4471", "PatientBirthDate": "19500101"}


def _into_study(path: Path, study: str, number: int) -> Path:
    """Put the file written at ``path`` into ``study`` (series 1, instance ``number``)."""
    import pydicom

    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = study
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def _studies(folder: Path) -> dict[str, list[Path]]:
    """Two studies of one patient: A holds two JPEG cines, a single-frame still and an SR (no
    image); B a JPEG cine and an uncompressed RGB cine."""
    from pydicom.uid import generate_uid

    a, b = generate_uid(entropy_srcs=["study A"]), generate_uid(entropy_srcs=["study B"])
    (folder / "A").mkdir()
    (folder / "B").mkdir()
    files = {
        a: [make_dicom(folder / "A" / "cine1.dcm", echo_frames(44, 96, 128, seed=1), "jpeg", seed=11),
            make_dicom(folder / "A" / "cine2.dcm", echo_frames(30, 96, 128, seed=2), "jpeg", seed=12),
            make_dicom(folder / "A" / "still.dcm", echo_frames(1, 96, 128, seed=3), "jpeg", seed=13)],
        b: [make_dicom(folder / "B" / "cine3.dcm", echo_frames(50, 96, 128, seed=4), "jpeg", seed=14),
            make_dicom(folder / "B" / "cine4.dcm", echo_frames(24, 80, 96, seed=5), "rgb", seed=15)],
    }
    for study, paths in files.items():
        for number, path in enumerate(paths, 1):
            _into_study(path, study, number)
    report = make_sr(folder / "A" / "report.dcm")
    _into_study(report, a, 9)
    return {**files, "sr": [report]}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studies")
    studies = _studies(folder)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    for paths in studies.values():
        for path in paths:
            server.upload(path)
    yield server, folder, {k: v for k, v in studies.items() if k != "sr"}
    server.stop()


@pytest.fixture()
def creds(pacs, monkeypatch):
    server = pacs[0]
    monkeypatch.setenv("ECHOCLIP_DICOMWEB_USER", server.user)
    monkeypatch.setenv("ECHOCLIP_DICOMWEB_PASSWORD", server.password)
    return server


@pytest.fixture()
def model(tiny_bundle):
    return echoclip_cli.load_model("tiny", device="cpu", precision="fp32")


class Heard:
    """A progress that keeps what it is told (notes and warnings), in order."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def start(self, total, frames_per_item): pass
    def frames(self, count): pass
    def item(self, n_frames): pass

    def note(self, message): self.said.append(message)
    def warn(self, message): self.said.append(message)


def _by_sop(records) -> dict:
    return {r.identity: r for r in records if r.level == "video"}


def _proxy(server) -> Proxy:
    return Proxy(("127.0.0.1", server.port)).start()


def test_records_from_the_archive_equal_those_from_the_files(pacs, creds, model):
    server, folder, studies = pacs
    uids = tuple(studies)
    from_files = list(echoclip_cli.predict_ef(model, [folder / "A", folder / "B"]))
    from_archive = list(echoclip_cli.predict_ef(model, Archive(server.url, studies=uids)))
    files, archive = _by_sop(from_files), _by_sop(from_archive)
    assert set(files) == set(archive) and len(archive) == 5  # the SR is not an input in either
    for sop, record in archive.items():
        assert record.ef == files[sop].ef and record.n_frames == files[sop].n_frames
        assert record.clip_type == files[sop].clip_type and record.skipped == files[sop].skipped
        assert record.source.startswith(f"{server.url}/studies/") and record.source.endswith(f"/instances/{sop}")
        assert record.study == files[sop].study and record.error is None
    still = [r for r in archive.values() if r.clip_type == "still"]
    assert len(still) == 1 and still[0].skipped and still[0].ef is None
    study_ef = {r.study: r.ef for r in from_archive if r.level == "study"}
    assert study_ef == {r.study: r.ef for r in from_files if r.level == "study"} and len(study_ef) == 2
    # the same embeddings, and nothing of the patient in the records
    vectors = {r.sop_uid: r.embedding for r in echoclip_cli.embed(model, Archive(server.url, studies=uids))}
    on_disk = {r.sop_uid: r.embedding for r in echoclip_cli.embed(model, [folder / "A", folder / "B"])}
    assert set(vectors) == set(on_disk)
    for sop, vector in vectors.items():
        assert (vector is None) == (on_disk[sop] is None)
        if vector is not None:
            # the same pixels; batches are packed per study, so float sums may differ in the last digit
            np.testing.assert_allclose(np.asarray(vector), np.asarray(on_disk[sop]), atol=2e-6)
    text = json.dumps([r.as_dict() for r in from_archive])
    assert "Doe" not in text and "MRN-4471" not in text and "19500101" not in text and server.password not in text


def test_only_the_sampled_frames_travel_and_refused_clips_move_no_pixels(pacs, creds, model):
    import pydicom
    from pydicom.encaps import generate_frames

    server, folder, studies = pacs
    proxy = _proxy(server)
    try:
        heard = Heard()
        records = list(echoclip_cli.predict_ef(model, Archive(proxy.url, studies=tuple(studies)), progress=heard))
        notes = heard.said
    finally:
        proxy.stop()
    assert all(getattr(r, 'error', None) is None for r in records)
    sampled = set(model.preprocess.frame_indices)
    share = whole = 0
    for path in [p for paths in studies.values() for p in paths]:
        ds = pydicom.dcmread(path)
        n = int(ds.get("NumberOfFrames") or 1)
        if n == 1:
            continue  # the still: refused from its header
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            sizes = [len(f) for f in generate_frames(ds.PixelData, number_of_frames=n)]
        else:
            sizes = [len(ds.PixelData) // n] * n
        share += sum(size for i, size in enumerate(sizes) if i in sampled)
        whole += sum(sizes)
    fetched = proxy.received("/frames/")
    print(f"\npixel bytes: sampled frames' share {share}, study total {whole}, fetched as frames {fetched}")
    assert fetched <= 1.5 * share and fetched < whole
    still_sop = pydicom.dcmread(studies[next(iter(studies))][2]).SOPInstanceUID
    assert not [path for path, _, _ in proxy.log if still_sop in path and not path.endswith("/metadata")]
    assert not [path for path, _, _ in proxy.log if path.split("?")[0].endswith(tuple(f"/instances/{s}" for s in [still_sop]))]
    assert any("MB of pixel data" in n for n in notes)
    metadata = [path for path, _, _ in proxy.log if path.endswith("/metadata")]
    assert metadata and all("/instances/" not in path for path in metadata)  # one request per series, not per clip


def test_a_server_that_cannot_serve_frames_gives_whole_instances_said_once(pacs, creds, model):
    server, folder, studies = pacs
    proxy = _proxy(server)
    proxy.fail = lambda path: 406 if "/frames/" in path else None
    heard = Heard()
    try:
        records = list(echoclip_cli.predict_ef(model, Archive(proxy.url, studies=tuple(studies)), progress=heard))
    finally:
        proxy.stop()
    on_disk = _by_sop(echoclip_cli.predict_ef(model, [folder / "A", folder / "B"]))
    assert {sop: r.ef for sop, r in _by_sop(records).items()} == {sop: r.ef for sop, r in on_disk.items()}
    assert len([w for w in heard.said if "cannot serve single frames" in w]) == 1
    assert proxy.received("/instances/") > 0


def test_a_failing_instance_costs_one_record_and_the_cli_exits_1(pacs, creds, model, tiny_bundle):
    import pydicom

    server, folder, studies = pacs
    broken = pydicom.dcmread(studies[next(iter(studies))][0]).SOPInstanceUID
    proxy = _proxy(server)
    proxy.fail = lambda path: 500 if broken in path else None
    try:
        started = time.time()
        records = list(echoclip_cli.predict_ef(model, Archive(proxy.url, studies=tuple(studies), retries=1)))
        took = time.time() - started
        result = run_cli("predict-ef", "--weights", "tiny", "--dicomweb", proxy.url, "--study", *_studies_args(studies),
                         "--format", "jsonl", "--device", "cpu", "-q")
    finally:
        proxy.stop()
    videos = _by_sop(records)
    failed = [r for r in videos.values() if r.error]
    assert len(videos) == 5 and [r.identity for r in failed] == [broken] or [r.source for r in failed] == [
        r.source for r in videos.values() if broken in r.source]
    assert "HTTP 500" in failed[0].error and broken in failed[0].error and failed[0].study in studies
    assert all(r.ef is not None for r in videos.values() if r.error is None and not r.skipped)
    assert took < 60
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len([r for r in lines if r.get("error")]) == 1 and len([r for r in lines if r["level"] == "video"]) == 5
    assert server.password not in result.stdout + result.stderr


def _studies_args(studies) -> list[str]:
    args = []
    for uid in studies:
        args += [uid] if not args else ["--study", uid]
    return args


def _one_clip_studies(server, folder: Path, n: int, seed: int) -> list[str]:
    """``n`` studies of one JPEG cine each, uploaded; their Study Instance UIDs."""
    import pydicom

    uids = []
    for k in range(n):
        path = make_dicom(folder / f"s{k}.dcm", echo_frames(12, 64, 80, seed=k), "jpeg", seed=seed + k)
        server.upload(path)
        uids.append(str(pydicom.dcmread(path).StudyInstanceUID))
    return uids


def test_a_server_killed_mid_run_costs_one_record_per_remaining_input(tmp_path, monkeypatch, model):
    server = start_orthanc(tmp_path / "orthanc")
    try:
        monkeypatch.setenv("ECHOCLIP_DICOMWEB_USER", server.user)
        monkeypatch.setenv("ECHOCLIP_DICOMWEB_PASSWORD", server.password)
        uids = _one_clip_studies(server, tmp_path, 6, 40)
        records = echoclip_cli.predict_ef(model, Archive(server.url, studies=tuple(uids), retries=1, timeout=5))
        first = next(records)
        server.stop()  # the PACS goes away with five studies to go (two may be fetched already)
        started = time.time()
        rest = list(records)
        took = time.time() - started
    finally:
        server.stop()
    videos = [r for r in [first, *rest] if r.level == "video"]
    assert len(videos) == 6 and videos[0].error is None
    failed = [r for r in videos if r.error]
    assert len(failed) >= 3
    for record in failed:
        assert record.source.startswith(server.url) and record.study in uids
        assert "cannot connect" in record.error or "taken as gone" in record.error
    assert took < 30, took


def test_usage_mistakes_exit_2_before_any_model_loads(pacs):
    server = pacs[0]
    with_password = server.url.replace("http://", f"http://{server.user}:{server.password}@")
    result = run_cli("predict-ef", "--dicomweb", with_password, "--study", "1.2.3")
    assert result.exit_code == 2 and server.password not in result.stdout + result.stderr
    assert run_cli("predict-ef", "--dicomweb", server.url).exit_code == 2  # no study, no query
    assert run_cli("embed", "--study", "1.2.3").exit_code == 2  # no server
    assert run_cli("predict-ef", "--dicomweb", server.url, "--study", "1.2.x").exit_code == 2
    assert run_cli("match-patients", "--dicomweb", server.url, "--query", "StudyDate").exit_code == 2


def test_a_query_finds_the_studies_and_wrong_credentials_are_one_clear_error(pacs, monkeypatch, model):
    server, folder, studies = pacs
    monkeypatch.setenv("ECHOCLIP_DICOMWEB_USER", server.user)
    monkeypatch.setenv("ECHOCLIP_DICOMWEB_PASSWORD", server.password)
    found = list(echoclip_cli.predict_ef(model, Archive(server.url, query={"PatientID": "MRN-4471"})))
    assert {r.study for r in found if r.level == "study"} == set(studies)
    monkeypatch.setenv("ECHOCLIP_DICOMWEB_PASSWORD", "wrong")
    from echoclip_cli.errors import MediaError

    with pytest.raises(MediaError, match="HTTP 401"):
        list(echoclip_cli.predict_ef(model, Archive(server.url, query={"PatientID": "MRN-4471"}, retries=0)))
    netrc = Path(folder) / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {server.user} password {server.password}\n")
    netrc.chmod(0o600)
    monkeypatch.delenv("ECHOCLIP_DICOMWEB_USER")
    monkeypatch.delenv("ECHOCLIP_DICOMWEB_PASSWORD")
    monkeypatch.setenv("ECHOCLIP_NETRC", str(netrc))
    again = list(echoclip_cli.predict_ef(model, Archive(server.url, studies=tuple(studies)[:1])))
    assert again and all(getattr(r, 'error', None) is None for r in again)


def test_sr_round_trip_written_valid_stored_found_and_read_back(pacs, creds, tiny_bundle, tmp_path):
    """Issue 26's done-when: predict-ef --dicomweb --study --sr --stow gives the files' EF, writes a
    valid SR, stores it into the study, QIDO finds it there and it reads back with the same numbers."""
    import highdicom as hd

    from echoclip_cli.dicomweb.server import Server
    from tests.sr_helpers import dciodvfy

    server, folder, studies = pacs
    uid = next(iter(studies))
    out = tmp_path / "sr"
    result = run_cli("predict-ef", "--weights", "tiny", "--dicomweb", server.url, "--study", uid, "--sr", out,
                     "--stow", "--format", "jsonl", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    (summary,) = [r for r in records if r["level"] == "study"]
    (written,) = [r for r in records if r["level"] == "sr"]
    on_disk = [r for r in echoclip_cli.predict_ef(echoclip_cli.load_model("tiny", device="cpu"), [folder / "A"])
               if r.level == "study"]
    assert summary["ef"] == on_disk[0].ef and summary["study"] == uid
    assert written["stored"] == f"{server.url}/studies/{uid}" and written.get("error") is None
    errors, _ = dciodvfy(Path(written["output"]))
    assert errors == [], "\n".join(errors)

    client = Server(server.url)
    found = client.client.search_for_instances(study_instance_uid=uid, search_filters={"Modality": "SR"})
    (ours,) = [item for item in found if item["00080018"]["Value"][0] == written["sop_uid"]]  # beside the study's own SR
    series = ours["0020000E"]["Value"][0]
    back = hd.sr.Comprehensive3DSR.from_dataset(client.instance(uid, series, written["sop_uid"]))
    groups = {g.tracking_identifier: g for g in back.content.get_image_measurement_groups()}
    (ef,) = groups["ejection_fraction: study"].get_measurements()
    assert ef.value == pytest.approx(summary["ef"]) and ef.unit.value == "%"
    assert back.PatientID == PATIENT["PatientID"] and back.StudyInstanceUID == uid  # filed in the study it describes
    # the run after it reads the study's images only: its own SR is not an input
    again = run_cli("predict-ef", "--weights", "tiny", "--dicomweb", server.url, "--study", uid, "--format", "jsonl",
                    "--device", "cpu", "-q")
    assert again.exit_code == 0 and len([line for line in again.stdout.splitlines() if '"video"' in line]) == 3


def test_stow_needs_the_archive_and_an_sr_folder(pacs, tmp_path):
    server, folder, _ = pacs
    assert run_cli("predict-ef", "--dir", folder / "A", "--sr", tmp_path / "sr", "--stow").exit_code == 2
    assert run_cli("predict-ef", "--dicomweb", server.url, "--study", "1.2.3", "--stow").exit_code == 2


def test_fhir_bundles_from_the_archive_validate_and_carry_its_numbers(pacs, creds, tiny_bundle):
    pytest.importorskip("fhir.resources.R4B")
    from tests.test_fhir import _validate

    server, folder, studies = pacs
    result = run_cli("predict-ef", "--weights", "tiny", "--dicomweb", server.url, "--study", *_studies_args(studies),
                     "--format", "fhir", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    bundles = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(bundles) == 2
    efs = {r.study: r.ef for r in echoclip_cli.predict_ef(echoclip_cli.load_model("tiny", device="cpu"),
                                                         [folder / "A", folder / "B"]) if r.level == "study"}
    for bundle in bundles:
        resources = _validate(bundle)
        (study,) = resources["ImagingStudy"]
        uid = study["identifier"][0]["value"].removeprefix("urn:oid:")
        (ef,) = [o for o in resources["Observation"] if o["code"]["coding"][0]["code"] == "10230-1"]
        assert ef["valueQuantity"]["value"] == pytest.approx(efs[uid])
    assert "Doe" not in result.stdout and "MRN-4471" not in result.stdout and server.password not in result.stdout


def test_the_orthanc_plugin_example_scores_a_new_study_and_stores_its_sr_once(tmp_path, tiny_bundle, _hermetic_home):
    """examples/orthanc/echoclip_plugin.py in a real Orthanc (its Python plugin, Debian
    orthanc-python): a study uploaded becomes stable, echoclip runs on it and its SR is stored
    back into it; the SR's arrival (the study changes, and is stable again) does not run it twice."""
    import os
    import shutil
    import sys

    from tests.conftest import REPO_ROOT
    from tests.pacs import python_plugin

    if python_plugin() is None:
        pytest.skip("Orthanc's Python plugin is not installed (Debian: apt-get install orthanc-python)")
    command = shutil.which("echoclip") or str(Path(sys.executable).parent / "echoclip")
    out = tmp_path / "results"
    password = "plugin-secret"
    env = {**os.environ, "ECHOCLIP_HOME": str(_hermetic_home), "ECHOCLIP_DICOMWEB_USER": "echoclip",
           "ECHOCLIP_DICOMWEB_PASSWORD": password}
    server = start_orthanc(tmp_path / "orthanc", plugins=(python_plugin(),), env=env, password=password, config={
        "PythonScript": str(REPO_ROOT / "examples" / "orthanc" / "echoclip_plugin.py"),
        "EchoclipCommand": command, "EchoclipWeights": "tiny", "EchoclipOutput": str(out)})
    try:
        path = make_dicom(tmp_path / "cine.dcm", echo_frames(16, 64, 80, seed=9), "jpeg", seed=77, patient=PATIENT)
        server.upload(path)
        import pydicom

        uid = pydicom.dcmread(path).StudyInstanceUID
        deadline = time.time() + 120
        found = []
        while time.time() < deadline and not found:
            time.sleep(1)
            instances = server.get_json(f"/dicom-web/studies/{uid}/instances")
            found = [i for i in instances if i.get("00080060", {}).get("Value") == ["SR"]]
        assert found, (tmp_path / "orthanc" / "orthanc.log").read_text()[-2000:]
        time.sleep(4)  # the study is stable again after the SR: no second run, no second SR
        instances = server.get_json(f"/dicom-web/studies/{uid}/instances")
        assert len([i for i in instances if i.get("00080060", {}).get("Value") == ["SR"]]) == 1
        records = [json.loads(line) for line in (out / f"{uid}.jsonl").read_text().splitlines()]
        assert [r["level"] for r in records] == ["video", "study", "sr"] and records[-1]["stored"]
    finally:
        server.stop()


def test_a_study_deleted_mid_run_costs_its_instances_one_record_each(tmp_path, monkeypatch, model):
    server = start_orthanc(tmp_path / "orthanc")
    try:
        monkeypatch.setenv("ECHOCLIP_DICOMWEB_USER", server.user)
        monkeypatch.setenv("ECHOCLIP_DICOMWEB_PASSWORD", server.password)
        uids = _one_clip_studies(server, tmp_path, 4, 60)
        records = echoclip_cli.predict_ef(model, Archive(server.url, studies=tuple(uids), retries=0))
        first = next(records)  # study 2 is staged, study 3 may be: study 4 is listed, not fetched
        server.delete_study(uids[3])
        rest = list(records)
    finally:
        server.stop()
    videos = {r.study: r for r in [first, *rest] if r.level == "video"}
    assert set(videos) == set(uids)
    assert all(videos[uid].error is None for uid in uids[:3])
    assert "HTTP 404" in videos[uids[3]].error and videos[uids[3]].source.startswith(f"{server.url}/studies/{uids[3]}/")


def test_report_and_match_patients_read_the_archive_too(pacs, creds, model, tmp_path):
    server, folder, studies = pacs
    archive = Archive(server.url, studies=tuple(studies))
    reports = echoclip_cli.report(model, archive, out=tmp_path / "report",
                                  content=echoclip_cli.ReportContent(maps=False, sentences="none"))
    assert {s.study for s in reports} == set(studies)
    pages = " ".join(p.read_text() for p in (tmp_path / "report").rglob("*.html"))
    assert "echoclip-dicomweb-" not in pages and "Doe^" not in pages and "MRN-4471" not in pages  # no staging, no patient
    matches = echoclip_cli.match_patients(model, archive)
    assert len(matches.studies) == 2 and not matches.failures


def test_a_store_filled_from_the_archive_names_each_instance_by_its_url(pacs, creds, model, tmp_path):
    from echoclip_cli.store import read_store

    server, folder, studies = pacs
    out = tmp_path / "pacs.store"
    records = list(echoclip_cli.embed(model, Archive(server.url, studies=tuple(studies)), out=out, keep_frames=True))
    assert len(records) == 5 and all(r.error is None for r in records)
    stored = read_store(out)
    assert all(row["source"].startswith(f"{server.url}/studies/") for row in stored.rows)
    again = list(echoclip_cli.predict_ef(echoclip_cli.load_model(store=out, device="cpu"), store=out))
    assert {r.source for r in again if r.level == "video"} == {r.source for r in records}
    heard = Heard()
    resumed = list(echoclip_cli.embed(model, Archive(server.url, studies=tuple(studies)), out=out, progress=heard))
    notes = heard.said
    assert resumed == [] and "5 instances already in the store: not fetched" in notes  # no metadata, no frames
    assert any("fetched 0.0 MB of pixel data" in n for n in notes), notes


def test_labels_from_the_archives_measurement_srs_equal_those_from_the_files(tmp_path, monkeypatch):
    """Issue 27 over DICOMweb: the echo measurement SRs of the studies (only they are fetched),
    read as the files are, each value on its study and named by its instance URL."""
    pytest.importorskip("highdicom")
    from tests.site_factory import BIPLANE, LVEF_US, TEICHHOLZ, Planted, image_header, make_echo_sr

    folder = tmp_path / "srs"
    folder.mkdir()
    paths = []
    for s, (value, method) in enumerate([(55.0, BIPLANE), (35.0, TEICHHOLZ), (62.0, BIPLANE)]):
        paths.append(make_echo_sr(folder / f"sr{s}.dcm", image_header(s, f"P{s % 2}"),
                                  [Planted(LVEF_US, value, method=method)], seed=s))
    images = [make_dicom(tmp_path / "cine.dcm", echo_frames(6, 32, 40, seed=1), "jpeg", seed=0)]  # study of sr0
    server = start_orthanc(tmp_path / "orthanc")
    try:
        for path in [*paths, *images]:
            server.upload(path)
        monkeypatch.setenv("ECHOCLIP_DICOMWEB_USER", server.user)
        monkeypatch.setenv("ECHOCLIP_DICOMWEB_PASSWORD", server.password)
        import pydicom

        uids = tuple(str(pydicom.dcmread(p).StudyInstanceUID) for p in paths)
        from_archive = echoclip_cli.harvest_labels(Archive(server.url, studies=uids))
        from_files = echoclip_cli.harvest_labels([folder])
        result = run_cli("labels", "--dicomweb", server.url, "--query", "PatientID=P0", "--format", "jsonl")
    finally:
        server.stop()
    got = {(r.study, r.value, r.method) for r in from_archive if r.primary}
    assert got == {(r.study, r.value, r.method) for r in from_files if r.primary} and len(got) == 3
    assert all(r.source.startswith(f"{server.url}/studies/{r.study}/") for r in from_archive)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["value"] for r in rows if r["primary"]) == [55.0, 62.0]  # the two studies of patient P0


def test_the_monthly_example_script_scores_the_studies_of_its_dates_and_stores_their_srs(pacs, creds, tiny_bundle,
                                                                                          tmp_path, _hermetic_home):
    """examples/orthanc/last_month_to_sr.sh against the real Orthanc (STUDY_DATE picks the test
    studies' date instead of last month)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    pytest.importorskip("highdicom")
    server, folder, studies = pacs
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "WORKDIR": str(tmp_path), "ECHOCLIP_WEIGHTS": "tiny", "STUDY_DATE": "20240102",
           "ECHOCLIP_HOME": str(_hermetic_home)}
    done = subprocess.run(["bash", str(REPO_ROOT / "examples" / "orthanc" / "last_month_to_sr.sh"), server.url],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 studies of 20240102" in done.stderr
    records = [json.loads(line) for line in (tmp_path / "ef.jsonl").read_text().splitlines()]
    written = [r for r in records if r["level"] == "sr"]
    assert len(written) == 2 and all(r["stored"] and Path(r["output"]).is_file() for r in written)
    assert server.password not in done.stdout + done.stderr
