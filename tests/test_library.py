"""The library as a library: every public call of README's Python section, called directly with
a loaded model first (no CLI in between), on synthetic echo files and the tiny model."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

import echoclip_cli
from echoclip_cli.errors import UsageError
from tests.media_factory import echo_frames, make_dicom, make_video


@pytest.fixture()
def model(tiny_bundle):
    return echoclip_cli.load_model("tiny", device="cpu", precision="fp32")


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    folder = tmp_path / "study"
    folder.mkdir()
    make_dicom(folder / "a.dcm", echo_frames(24, 48, 64, seed=1), "jpeg", seed=3)
    make_video(folder / "b.avi", echo_frames(12, 48, 64, seed=2))
    return folder


@pytest.fixture()
def store(model, study: Path, tmp_path: Path) -> Path:
    out = tmp_path / "archive.store"
    records = list(echoclip_cli.embed(model, [study], out=out, keep_frames=True))
    assert [r.error for r in records] == [None, None]
    return out


def test_load_model_by_name_bundle_or_store(model, tiny_bundle, store):
    assert model.bundle.name == "tiny" and model.numerics == {"backend": "torch", "precision": "fp32"}
    assert echoclip_cli.load_model(tiny_bundle, device="cpu").weights_sha256 == model.weights_sha256
    stored = echoclip_cli.load_model(store=store, device="cpu", lazy=True)
    assert stored.weights_sha256 == model.weights_sha256 and not stored.loaded  # checked, not built
    with pytest.raises(UsageError, match="unknown backend"):
        echoclip_cli.load_model("tiny", device="cpu", backend="tpu")


def test_load_model_refuses_other_weights_than_the_stores(model, store, tiny_checkpoint):
    from echoclip_cli.weights import import_openclip
    from tests.conftest import write_openclip_checkpoint

    other = write_openclip_checkpoint(store.parent / "other", "atto", "bin",
                                      state={k: v + 1 for k, v in model.model.state_dict().items()})
    import_openclip(other, "other")
    with pytest.raises(UsageError, match="holds embeddings from weights"):
        echoclip_cli.load_model("other", store=store, device="cpu")


def test_embed_resumes_a_store_and_streams_one_record_per_input(model, study, store):
    notes = []

    class Heard:
        def start(self, total, frames_per_item): notes.append(("start", total))
        def frames(self, count): pass
        def item(self, n_frames): pass
        def note(self, message): notes.append(("note", message))
        def warn(self, message): notes.append(("warn", message))

    again = list(echoclip_cli.embed(model, [study], out=store, progress=Heard()))
    assert again == [] and any("2 inputs already in" in m for kind, m in notes if kind == "note")
    fresh = list(echoclip_cli.embed(model, [study]))
    assert [r.n_frames for r in fresh] == [12, 6]  # frames 0, 2, … of 24 and of 12 and all(len(r.embedding) == model.embed_dim for r in fresh)


def test_predict_ef_from_files_and_from_a_store_agree(model, study, store):
    from echoclip_cli.tasks import EFStudy, EFVideo

    files = list(echoclip_cli.predict_ef(model, [study]))
    stored = list(echoclip_cli.predict_ef(model, store=store))
    assert [type(r) for r in files] == [EFVideo, EFVideo, EFStudy, EFStudy]  # the DICOM's study, the folder
    by_source = {r.source: r.ef for r in files if r.level == "video"}
    assert {r.source: r.ef for r in stored if r.level == "video"} == pytest.approx(by_source, abs=1e-6)
    with pytest.raises(UsageError, match="aggregation"):
        list(echoclip_cli.predict_ef(model, [study], aggregation="mean"))
    with pytest.raises(UsageError, match="not both"):
        list(echoclip_cli.predict_ef(model, [study], store=store))


def test_detect_devices_calls_only_where_a_threshold_exists(model, study):
    records = list(echoclip_cli.detect_devices(model, [study], devices=["pacemaker", "tavr"],
                                               thresholds={"tavr": -1.0}))
    videos = [r for r in records if r.level == "video"]
    assert {r.task for r in videos} == {"pacemaker", "tavr"}
    tavr = [r for r in videos if r.task == "tavr"]
    assert all(r.detected and r.threshold_source == "user" for r in tavr)  # every score is ≥ -1
    pacemaker = [r for r in videos if r.task == "pacemaker"]
    assert all(r.threshold == pytest.approx(0.298) and r.calibrated for r in pacemaker)


def test_zero_shot_any_task_and_options_choose_the_clip_types(model, study):
    records = list(echoclip_cli.zero_shot(model, "tavr", [study]))
    assert {r.level for r in records} == {"video", "study"} and all(r.task == "tavr" for r in records)
    only_colour = echoclip_cli.RunOptions(clip_types=("2d_colour",))
    skipped = [r for r in echoclip_cli.zero_shot(model, "tavr", [study], options=only_colour) if r.level == "video"]
    assert skipped and all(r.skipped is not None and r.score is None for r in skipped)
    with pytest.raises(UsageError):
        list(echoclip_cli.zero_shot(model, "no-such-task", [study]))


def test_run_options_are_one_frozen_value(model, study):
    options = echoclip_cli.RunOptions(sampling=echoclip_cli.Sampling(frames=4, stride=1), batch_size=3)
    with pytest.raises(AttributeError):
        options.batch_size = 8  # type: ignore[misc]
    changed = options.replace(cache=False)
    assert changed.cache is False and options.cache is True and changed.sampling == options.sampling
    first = next(echoclip_cli.predict_ef(model, [study], options=changed))
    assert first.n_frames == 4


def test_report_writes_pages_and_returns_the_studies(model, study, tmp_path):
    studies = echoclip_cli.report(model, [study], out=tmp_path / "report", devices=["pacemaker"],
                                  content=echoclip_cli.ReportContent(animations=False))
    assert len(studies) == 2 and (tmp_path / "report" / "index.html").is_file()  # the DICOM's study, the AVI's folder
    rows = [s.wide_row(["pacemaker"]) for s in studies]
    assert [r["n_clips"] for r in rows] == [1, 1] and all(r["ef"] is not None for r in rows)


def test_match_patients_from_a_store_needs_no_model_and_from_files_embeds(model, study, store):
    from echoclip_cli.records import Neighbour, Record

    from_store = echoclip_cli.match_patients(None, store=store)
    assert from_store.warnings and len(from_store.studies) == 2  # tiny is not EchoCLIP-R
    records = from_store.records()  # typed, as README promises; as_dict() is the JSONL line
    assert records and all(isinstance(r, Record) and r.as_dict()["level"] == r.level for r in records)
    assert all(type(r) is Neighbour for r in from_store.neighbours) and from_store.neighbours[0].rank == 1
    from_files = echoclip_cli.match_patients(model, [study])
    assert from_files.failures == () and from_files.studies.keys == from_store.studies.keys
    with pytest.raises(UsageError):
        echoclip_cli.match_patients(None, [study])


def test_search_and_search_reports_with_a_template_model(tmp_path, tiny_checkpoint):
    from echoclip_cli.weights import import_openclip
    from tests.test_search import PHRASES

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(PHRASES) + "\n")
    import_openclip(tiny_checkpoint, "tiny-r", tokenizer="template", template_vocab=vocab)
    model = echoclip_cli.load_model("tiny-r", device="cpu")
    folder = tmp_path / "s"
    folder.mkdir()
    video = make_video(folder / "a4c.avi", echo_frames(8, 48, 64, seed=4))
    out = tmp_path / "r.store"
    assert [r.error for r in echoclip_cli.embed(model, [folder], out=out)] == [None]
    result = echoclip_cli.search(model, "severe MR", out, k=1, level="video")
    assert [(type(r).__name__, r.source) for r in result.records] == [("VideoHit", str(video))]
    assert result.plan.method == "template"
    reports = tmp_path / "reports.txt"
    reports.write_text("THERE IS SEVERE REGURGITATION OF THE MITRAL VALVE.\nnothing it knows\n")
    ranking = echoclip_cli.search_reports(model, video, reports)
    assert ranking.n_reports == 2 and len(ranking.records) == 1 and len(ranking.skipped) == 1
    assert ranking.records[0].level == "report" and ranking.records[0].id == "1"
    with pytest.raises(UsageError, match="empty"):
        echoclip_cli.search(model, "  ", out)


def test_embed_texts_takes_the_model_first(model):
    vectors = echoclip_cli.embed_texts(model, ["LV EJECTION FRACTION IS 35%. ", "SEVERE MR"])
    assert tuple(vectors.shape) == (2, model.embed_dim) and np.isfinite(vectors.numpy()).all()


USE_CASES = ("embed", "predict_ef", "detect_devices", "zero_shot", "report", "match_patients", "search",
             "search_reports", "load_model", "optimise", "embed_texts", "holdings", "remember_store", "forget_store",
             "explain", "with_sr", "with_fhir", "fhir_bundles", "build_sr", "fhir_bundle", "harvest_labels", "fit",
             "load_head")


@pytest.mark.parametrize("name", USE_CASES)
def test_public_calls_take_few_parameters(name):
    """One options value instead of a dozen loose keywords: no public call has more than 10."""
    assert len(inspect.signature(getattr(echoclip_cli, name)).parameters) <= 10


def test_a_store_call_reads_the_store_header_once_more_than_the_reader(model, store, monkeypatch):
    """Checking the store, the model against it and its inputs share one read of its header (it
    was read five times per call); reading the vectors reads it once more."""
    from echoclip_cli import store as store_module

    calls = []
    real = store_module.read_header
    monkeypatch.setattr(store_module, "read_header", lambda path: calls.append(path) or real(path))
    records = list(echoclip_cli.predict_ef(model, store=store))
    assert records and len(calls) <= 2, calls


def test_a_non_finite_embedding_is_an_error_record_never_a_number(model, study, tmp_path):
    """NaN embeddings (damage, a backend gone wrong) gave EF 19 and "no pacemaker": now an error
    record, from the pipeline and from a damaged store alike, and never stored or cached."""
    from echoclip_cli.records import VideoEmbedding
    from echoclip_cli.store import StoreWriter

    real = model.tower.eager
    model.tower.eager = lambda images: real(images) * float("nan")
    embedded = list(echoclip_cli.embed(model, [study], out=tmp_path / "nan.store"))
    assert all(r.error and "non-finite" in r.error for r in embedded)
    ef = list(echoclip_cli.predict_ef(model, [study]))
    assert [r.level for r in ef] == ["video", "video"] and all(r.ef is None and "non-finite" in r.error for r in ef)
    model.tower.eager = real
    fresh = [r for r in echoclip_cli.predict_ef(model, [study]) if r.level == "video"]
    assert all(r.error is None and r.ef is not None for r in fresh)  # nothing non-finite was cached

    damaged = tmp_path / "damaged.store"
    frames = np.full((3, model.embed_dim), np.nan, np.float32)
    with StoreWriter(damaged, weights_name="tiny", weights_sha256=model.weights_sha256, cfg=model.preprocess,
                     embed_dim=model.embed_dim, keep_frames=True) as writer:
        meta = {"source": "/x/a.dcm", "source_sha256": "a" * 64, "frame_indices": [0, 2, 4]}
        writer.add(VideoEmbedding(source="/x/a.dcm", embedding=frames.mean(axis=0), frame_embeddings=frames, meta=meta))
    records = list(echoclip_cli.detect_devices(model, store=damaged, devices=["pacemaker"]))
    assert [r.level for r in records] == ["video"] and records[0].score is None and records[0].detected is None
    assert "non-finite" in records[0].error


def test_result_records_place_a_video_on_a_patient_and_a_date(model, tmp_path):
    """Issue 30 (a new user's trial): EF and device records carry the salted patient_key and the
    study_date where the input has them, per video and per study; never the raw PatientID."""
    dicom = make_dicom(tmp_path / "a.dcm", echo_frames(8, 48, 64, seed=1), "jpeg", seed=3,
                       patient={"PatientID": "MRN-12345", "PatientName": "Doe^Jane"})
    records = list(echoclip_cli.predict_ef(model, [dicom]))
    assert [r.level for r in records] == ["video", "study"]
    for record in records:
        row = record.as_dict()
        assert row["study_date"] == "20240102" and len(row["patient_key"]) == 16
        assert "MRN-12345" not in str(row) and "Doe" not in str(row)
    video = make_video(tmp_path / "b.avi", echo_frames(8, 48, 64, seed=2))
    plain = next(echoclip_cli.predict_ef(model, [video])).as_dict()
    assert "patient_key" not in plain and "study_date" not in plain  # unknown: left out


def test_an_archive_is_an_input_like_files_and_a_server_out_of_reach_is_a_record(model, monkeypatch):
    """``echoclip_cli.Archive`` goes where files go; credentials never in it; a study the server
    cannot list is one error record naming the study (tests/test_dicomweb.py: a real Orthanc)."""
    with pytest.raises(UsageError, match="credentials"):
        echoclip_cli.Archive("https://user:secret@pacs.example.org/dicom-web", studies=("1.2.3",))
    with pytest.raises(UsageError, match="--study"):
        echoclip_cli.Archive("https://pacs.example.org/dicom-web")
    monkeypatch.setenv("ECHOCLIP_DICOMWEB_TOKEN", "t0ken")
    gone = echoclip_cli.Archive("http://127.0.0.1:9/dicom-web", studies=("1.2.3", "1.2.4"), retries=0, timeout=2)
    records = [r for r in echoclip_cli.predict_ef(model, gone) if r.level == "video"]
    assert [r.source for r in records] == ["http://127.0.0.1:9/dicom-web/studies/1.2.3",
                                           "http://127.0.0.1:9/dicom-web/studies/1.2.4"]
    assert all("cannot connect" in r.error and r.study in ("1.2.3", "1.2.4") for r in records)
    assert "t0ken" not in repr(records)


def test_results_go_back_as_one_sr_and_one_fhir_bundle_per_study(model, study, tmp_path):
    """Issue 26: a use case's records pass through ``with_sr`` unchanged, then one output record per
    study follows: an SR for the DICOM study, an error for the video folder (no header to file it by)."""
    pytest.importorskip("highdicom")
    records = list(echoclip_cli.predict_ef(model, [study]))
    passed = list(echoclip_cli.with_sr(iter(records), tmp_path / "sr"))
    assert passed[:len(records)] == records
    dicom, video = passed[len(records):]
    assert dicom.level == "sr" and Path(dicom.output).is_file() and dicom.n_instances == 1 and dicom.error is None
    assert video.study == str(study) and "no DICOM header" in video.error and video.output is None
    bundles = list(echoclip_cli.fhir_bundles(records))
    assert [b["resourceType"] for b in bundles] == ["Bundle", "Bundle"]
    (results, _) = echoclip_cli.group_by_study(records)
    assert echoclip_cli.build_sr(results).StudyInstanceUID == results.study
    types = [e["resource"]["resourceType"] for e in echoclip_cli.fhir_bundle(results)["entry"]]
    assert types == ["ImagingStudy", "Device", "Observation", "Provenance"]  # no patient ID: no Patient


def test_harvest_labels_fit_and_load_head_with_the_model_first(model, tmp_path):
    """Labels from SRs, a head fitted on a store's embeddings, loaded and passed to predict_ef."""
    from tests.site_factory import BIPLANE, LVEF_US, Planted, image_header, make_echo_sr

    root = tmp_path / "site"
    for s in range(12):
        folder = root / f"s{s}"
        folder.mkdir(parents=True)
        make_dicom(folder / "a.dcm", echo_frames(4, 32, 40, seed=s), "rgb", seed=s)
        make_echo_sr(folder / "sr.dcm", image_header(s, f"P{s}"), [Planted(LVEF_US, 30.0 + 2 * s, method=BIPLANE)],
                     seed=s)
    labels = echoclip_cli.harvest_labels([root], options=echoclip_cli.LabelOptions(tolerance=3))
    assert sum(r.primary for r in labels) == 12 and all(r.method == "simpson_biplane" for r in labels)
    store = tmp_path / "s.store"
    list(echoclip_cli.embed(model, [root], out=store, keep_frames=True))
    options = echoclip_cli.FitOptions(coverage=0.8, calibration=0.4, folds=3)
    result = echoclip_cli.fit(model, "ef", labels=labels, store=store, options=options)
    path = result.head.save(tmp_path / "ef.head")
    head = echoclip_cli.load_head(path)
    assert head.coverage == 0.8 and head.provenance["weights_sha256"] == model.weights_sha256
    first = next(echoclip_cli.predict_ef(model, store=store, heads=head))
    assert first.head == "ef" and (first.abstain or first.ef_low < first.head_ef < first.ef_high)
    with pytest.raises(UsageError, match="store or --embeddings"):
        echoclip_cli.fit(model, "ef", labels=labels)


def test_compile_is_the_cuda_default_for_large_runs_and_falls_back_to_eager(model, monkeypatch):
    """Issue 29: torch.compile by default on CUDA where it pays (64 inputs or more, or an unknown
    number), never on a CPU; a compilation that fails leaves the eager tower running, said once."""
    import torch

    from echoclip_cli.api.load import compile_by_default

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compile_by_default(cuda, "auto", 640) and compile_by_default(cuda, "auto", None)
    assert not compile_by_default(cuda, "auto", 3) and not compile_by_default(cpu, "auto", 10_000)
    assert not compile_by_default(cuda, "onnx", 640)
    monkeypatch.setenv("ECHOCLIP_COMPILE", "0")
    assert not compile_by_default(cuda, "auto", 640)
    monkeypatch.delenv("ECHOCLIP_COMPILE")

    class Broken(torch.nn.Module):  # what torch.compile returns, failing as it does without a compiler
        def __init__(self, original):
            super().__init__()
            self._orig_mod = original

        def forward(self, images):
            raise RuntimeError("no C compiler")

    heard = []
    eager = model.model.visual
    model.model.visual = Broken(eager)
    model.jit, model.note = True, heard.append
    size = model.preprocess.image_size
    images = torch.zeros(3, 3, size, size)
    out = model.encode_image(images)
    assert out.shape[0] == 3 and model.model.visual is eager and not model.jit
    assert len(heard) == 1 and "torch.compile failed" in heard[0]
