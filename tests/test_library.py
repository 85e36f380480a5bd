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
             "explain")


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
