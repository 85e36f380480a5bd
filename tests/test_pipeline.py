"""Embedding pipeline and the commands on it: packing, order, failures, store resume, zero-shot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import echoclip_cli
from echoclip_cli.pipeline import embed_videos, naive_embed_video
from echoclip_cli.store import read_store
from tests.cli_helpers import run_cli
from tests.media_factory import echo_frames, make_broken_folder, make_dicom, make_video


@pytest.fixture()
def videos(tmp_path):
    """Three small inputs of different lengths: JPEG DICOM (two studies) and an AVI."""
    folder = tmp_path / "in"
    folder.mkdir()
    return [
        make_dicom(folder / "a.dcm", echo_frames(30, 48, 64, seed=1), "jpeg", seed=11),
        make_dicom(folder / "b.dcm", echo_frames(9, 48, 64, seed=2), "rgb", seed=12),
        make_video(folder / "c.avi", echo_frames(14, 48, 64, seed=3)),
    ]


@pytest.fixture()
def model(tiny_bundle):
    return echoclip_cli.load_model("tiny", device="cpu", precision="fp32")


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_packed_batches_equal_per_video_embedding(model, videos, batch_size):
    results = list(embed_videos(videos, model, batch_size=batch_size, keep_frames=True))
    assert [r.source for r in results] == [str(v) for v in videos]  # input order kept
    assert [r.n_frames for r in results] == [15, 5, 7]  # frames 0,2,..,38 clipped to each length
    for r, v in zip(results, videos, strict=True):
        np.testing.assert_allclose(r.embedding, naive_embed_video(model, v), atol=2e-6)
        np.testing.assert_allclose(np.linalg.norm(r.frame_embeddings, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(r.embedding, r.frame_embeddings.mean(0), atol=1e-6)


@pytest.mark.parametrize("threads", [2, 3])
def test_cpu_batch_split_across_cores_gives_the_same_embeddings(model, videos, threads):
    """On the CPU a batch runs as one slice per core, one thread each: the same numbers as one
    batch shared by all threads within fp32 rounding (a GEMM's blocking depends on its rows; bit
    for bit on the full-size tower here), torch's thread count restored, end to end results too."""
    import torch

    from echoclip_cli.backends.eager import split_batch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        images = torch.randn(7, 3, model.preprocess.image_size, model.preprocess.image_size)
        model.tower.split = False
        whole = model.encode_image(images)
        seen = []
        model.tower.split = True
        split = model.encode_image(images)
        assert torch.get_num_threads() == threads
        torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)
        # the slices really run in their own threads, each single-threaded, and cover the batch once
        record = lambda chunk: seen.append((len(chunk), torch.get_num_threads())) or model._eager(chunk)  # noqa: E731
        torch.testing.assert_close(split_batch(record, images, threads), whole, atol=1e-5, rtol=1e-5)
        assert sum(n for n, _ in seen) == 7 and len(seen) == threads and {t for _, t in seen} == {1}
        assert torch.get_num_threads() == threads
        one = model.encode_image(images[:1])  # a batch of one is not split
        torch.testing.assert_close(one, whole[:1], atol=1e-5, rtol=1e-5)
        results = {r.source: r.embedding for r in embed_videos(videos, model, batch_size=8)}
        model.tower.split = False
        for r in embed_videos(videos, model, batch_size=8):
            np.testing.assert_allclose(results[r.source], r.embedding, atol=1e-5)
    finally:
        torch.set_num_threads(before)


def test_worker_processes_give_the_same_vectors(model, videos):
    inline = list(embed_videos(videos, model, batch_size=8))
    pooled = list(embed_videos(videos, model, batch_size=8, workers=2))
    for a, b in zip(inline, pooled, strict=True):
        assert a.source == b.source
        # Same pixels; workers deliver clips as they are ready, so batches may be packed in another
        # order, and oneDNN on some CPUs (AMD EPYC) rounds a frame by its batch position (~6e-8).
        np.testing.assert_allclose(a.embedding, b.embedding, rtol=0, atol=1e-6)


def test_embed_reports_bad_files_and_goes_on(tiny_bundle, tmp_path):
    good, broken = make_broken_folder(tmp_path / "mixed")
    result = run_cli("embed", "--dir", tmp_path / "mixed", "-w", "tiny", "--format", "jsonl")
    records = _jsonl(result.stdout)
    assert result.exit_code == 1
    ok = [r for r in records if not r["error"]]
    assert sorted(os.path.basename(r["source"]) for r in ok) == sorted(p.name for p in good)
    assert all(len(r["embedding"]) == 32 for r in ok)
    failed = [r for r in records if r["error"]]
    assert len(failed) == len([ln for ln in result.stderr.splitlines() if ln.startswith("error:")]) >= 4
    assert "Traceback" not in result.stderr


def test_store_resume_skips_done_inputs(tiny_bundle, videos, tmp_path):
    store = tmp_path / "store"
    first = run_cli("embed", videos[0], videos[1], "-w", "tiny", "--out", store, "--keep-frames", "-f", "jsonl")
    assert first.exit_code == 0
    second = run_cli("embed", *videos, "-w", "tiny", "--out", store, "--keep-frames", "-f", "jsonl")
    assert second.exit_code == 0
    assert "2 inputs already in" in second.stderr
    assert [r["source"] for r in _jsonl(second.stdout)] == [str(videos[2])]
    loaded = read_store(store, frames=True)
    assert sorted(r["source"] for r in loaded.rows) == sorted(map(str, videos))
    other = run_cli("embed", *videos, "-w", "tiny", "--out", store, "--frames", "4")
    assert other.exit_code == 1 and "other preprocessing" in other.stderr


def test_resume_knows_unchanged_files_without_reading_them(tiny_bundle, videos, tmp_path, monkeypatch):
    import echoclip_cli.identity

    store = tmp_path / "store"
    assert run_cli("embed", *videos[:2], "-w", "tiny", "--out", store).exit_code == 0
    hashed = []
    real_key = echoclip_cli.identity.input_key
    monkeypatch.setattr(echoclip_cli.identity, "input_key", lambda path: hashed.append(path) or real_key(path))
    again = run_cli("embed", *videos, "-w", "tiny", "--out", store, "-f", "jsonl")
    assert again.exit_code == 0 and "2 inputs already in" in again.stderr
    assert hashed == [videos[2]]  # only the new file was read to decide
    os.utime(videos[0], ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(videos[1].read_bytes())  # the same study exported again under another name
    third = run_cli("embed", videos[0], copy, "-w", "tiny", "--out", store, "-f", "jsonl")
    assert third.exit_code == 0 and "2 inputs already in" in third.stderr and not _jsonl(third.stdout)
    assert len(read_store(store).rows) == 3


def test_killed_run_then_rerun_has_every_input_once(tiny_bundle, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    n = 30  # enough that the run cannot finish between two polls of the store
    for i in range(n):
        make_dicom(folder / f"v{i:02d}.dcm", echo_frames(6, 48, 64, seed=i), "rgb", seed=100 + i)
    store = tmp_path / "store"
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "echoclip_cli", "embed", "--dir", str(folder), "-w", "tiny", "--out", str(store),
           "--batch-size", "3", "--flush-every", "2", "-q", "-f", "jsonl"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(store.glob("part-*.safetensors"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_store(store)  # readable after kill -9
    assert 0 < len(partial) < n
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    final = read_store(store)
    assert sorted(os.path.basename(r["source"]) for r in final.rows) == [f"v{i:02d}.dcm" for i in range(n)]
    assert not list(store.glob("*.tmp"))


def test_predict_ef_on_pydicom_echo_cine(tiny_bundle):
    from pydicom import examples

    result = run_cli("predict-ef", examples.get_path("ybr_color"), "-w", "tiny", "-f", "jsonl")
    records = _jsonl(result.stdout)
    assert result.exit_code == 0, result.stderr
    video, study = records
    assert video["level"] == "video" and study["level"] == "study"
    assert 0 <= video["ef"] <= 100 and video["n_frames"] == 15  # 30 frames: 0, 2, ..., 28
    assert video["single_frame_ef_sd"] >= 0
    assert not {"frame_ef_min", "frame_ef_max", "frame_ef_sd"} & set(video)  # read as bounds on ef, which they were not
    assert video["aggregation"] == "released" and video["weights"] == "tiny"
    assert study["n_videos"] == 1 and study["ef"] == pytest.approx(video["ef"], abs=1e-4)


def test_predict_ef_from_store_equals_direct(tiny_bundle, videos, tmp_path):
    direct = _jsonl(run_cli("predict-ef", *videos, "-w", "tiny", "-f", "jsonl").stdout)
    run_cli("embed", *videos, "-w", "tiny", "--out", tmp_path / "s", "--keep-frames")
    stored = _jsonl(run_cli("predict-ef", "--store", tmp_path / "s", "-w", "tiny", "-f", "jsonl").stdout)
    key = lambda r: (r["level"], r.get("source") or r["study"])  # noqa: E731
    assert {key(r): r["ef"] for r in direct} == {key(r): r["ef"] for r in stored}


def test_predict_ef_needs_frames_in_store(tiny_bundle, videos, tmp_path):
    run_cli("embed", videos[0], "-w", "tiny", "--out", tmp_path / "s")
    result = run_cli("predict-ef", "--store", tmp_path / "s", "-w", "tiny")
    assert result.exit_code == 2 and "no per-frame embeddings" in result.stderr


def test_detect_devices_calls_only_with_a_threshold(tiny_bundle, videos, tmp_path):
    thresholds = tmp_path / "t.json"
    thresholds.write_text(json.dumps({"tavr": {"threshold": -1.0}}))
    result = run_cli("detect-devices", videos[1], "-w", "tiny", "-f", "jsonl", "--thresholds", thresholds)
    video = {r["task"]: r for r in _jsonl(result.stdout) if r["level"] == "video"}
    assert result.exit_code == 0
    assert set(video) == {"pacemaker", "tavr", "mitraclip", "impella"}
    assert video["pacemaker"]["threshold"] == 0.298 and video["pacemaker"]["calibrated"]
    assert video["tavr"]["detected"] is True and video["tavr"]["threshold_source"] == "user"
    assert video["impella"]["calibrated"] is False and video["impella"]["detected"] is None


def test_retrieval_weights_are_refused_for_ef(tmp_path, videos):
    from echoclip_cli.weights import import_openclip
    from tests.conftest import write_openclip_checkpoint

    vocab = tmp_path / "v.txt"
    vocab.write_text("LV EJECTION FRACTION IS <#>%. \n")
    import_openclip(write_openclip_checkpoint(tmp_path / "ck"), "tiny-r", tokenizer="template", template_vocab=vocab)
    refused = run_cli("predict-ef", videos[0], "-w", "tiny-r")
    assert refused.exit_code == 2 and "MAE 16.9" in refused.stderr
    forced = run_cli("predict-ef", videos[0], "-w", "tiny-r", "--force", "-f", "jsonl")
    assert forced.exit_code == 0 and _jsonl(forced.stdout)[0]["ef"] >= 0


def test_zero_shot_categorical_and_regression_tasks(tiny_bundle, videos):
    sizes = _jsonl(run_cli("zero-shot", "--task", "left_ventricle_size", *videos[:2], "-w", "tiny", "-f", "jsonl").stdout)
    video_rows = [r for r in sizes if r["level"] == "video"]
    assert {r["prediction"] for r in video_rows} <= {"normal", "mild", "moderate", "severe"}
    assert all(r["prediction"] == max(r["scores"], key=r["scores"].get) for r in video_rows)
    studies = [r for r in sizes if r["level"] == "study"]
    assert len(studies) == 2 and all(r["prediction"] in {"normal", "mild", "moderate", "severe"} for r in studies)
    pressure = _jsonl(run_cli("zero-shot", "--task", "pulmonary_artery_pressure", videos[2], "-w", "tiny",
                              "-f", "jsonl").stdout)
    assert pressure[0]["unit"] == "mmHg" and 0 <= pressure[0]["value"] <= 100


def test_study_records_vote_for_labels_and_average_numbers():
    from echoclip_cli.tasks import CategoricalStudy, CategoricalVideo, EFStudy, EFVideo, with_studies

    base = {"study": "s", "weights": "w", "weights_sha256": "x"}
    rows = [CategoricalVideo(source=f"v{i}", task="t", prediction=p, **base) for i, p in enumerate(("mild", "normal", "mild"))]
    *videos, study = with_studies(rows)
    assert videos == rows and isinstance(study, CategoricalStudy)
    assert (study.prediction, study.n_videos) == ("mild", 3)
    rows = [EFVideo(source=f"v{v}", ef=v, **base) for v in (40, 50)]
    rows.append(EFVideo(source="bad", error="cannot decode", **base))  # failed videos do not count
    *videos, study = with_studies(rows)
    assert isinstance(study, EFStudy) and (study.ef, study.n_videos) == (45.0, 2)
    assert study.as_dict()["level"] == "study" and videos[-1].as_dict()["ef"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pipeline_matches_cpu(tiny_bundle, videos):
    cpu = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    gpu = echoclip_cli.load_model("tiny", device="cuda", precision="bf16")
    for a, b in zip(embed_videos(videos, cpu, batch_size=8), embed_videos(videos, gpu, batch_size=8, workers=2), strict=True):
        cosine = float(a.embedding @ b.embedding / np.linalg.norm(a.embedding) / np.linalg.norm(b.embedding))
        assert cosine > 0.99


def _crash_on_bad(name: str) -> str:
    """Worker body for the crash test: dies like a segfaulting decoder on inputs named 'bad'."""
    if name.startswith("bad"):
        os._exit(139)
    return name.upper()


def test_completion_map_survives_a_crashing_worker():
    from echoclip_cli.parallel import completion_map

    items = ["a", "b", "bad1", "c", "d", "e", "bad2", "f"]
    results = sorted(completion_map(_crash_on_bad, items, workers=2, window=4, on_crash=lambda i: f"crashed:{i}"))
    assert results == [(n, i, f"crashed:{i}" if i.startswith("bad") else i.upper()) for n, i in enumerate(items)]


def _slow_head(name: str) -> str:
    if name == "slow":
        time.sleep(2.0)
    return name.upper()


def test_one_slow_input_does_not_hold_up_the_others():
    from echoclip_cli.parallel import completion_map

    items = ["slow"] + [f"v{i}" for i in range(10)]
    got = list(completion_map(_slow_head, items, workers=2, window=2, lead=3, on_crash=str))
    order = [index for index, _, _ in got]
    assert sorted(order) == list(range(11))
    assert order.index(0) == 4  # the four that fit within window + lead of the slow one went first
    assert all(result == item.upper() for _, item, result in got)


def test_results_leave_in_input_order_when_workers_finish_out_of_order(model, tmp_path):
    slow = make_dicom(tmp_path / "slow.dcm", echo_frames(40, 240, 320, seed=5), "rle", seed=1)  # slowest decode
    quick = [make_dicom(tmp_path / f"q{i}.dcm", echo_frames(4, 32, 40, seed=i), "rgb", seed=2 + i) for i in range(6)]
    inputs = [slow, *quick[:3], slow, *quick[3:]]
    inline = list(embed_videos(inputs, model, batch_size=8))
    pooled = list(embed_videos(inputs, model, batch_size=8, workers=2))
    assert [r.source for r in pooled] == [str(p) for p in inputs]
    for a, b in zip(inline, pooled, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)  # batches may be packed differently


def test_torchrun_ranks_share_one_store(tiny_bundle, videos, tmp_path, monkeypatch):
    store = tmp_path / "store"
    seen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):  # as torchrun --nproc-per-node 2 would start them (here one after the other)
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        result = run_cli("embed", *videos, "-w", "tiny", "--out", store, "-f", "jsonl")
        assert result.exit_code == 0, result.stderr
        seen.append([r["source"] for r in _jsonl(result.stdout)])
    assert seen == [[str(videos[0]), str(videos[2])], [str(videos[1])]]
    assert sorted(r["source"] for r in read_store(store).rows) == sorted(map(str, videos))


def test_store_commands_use_the_store_weights(tiny_bundle, videos, tmp_path, tiny_checkpoint):
    from echoclip_cli.weights import import_openclip
    from tests.conftest import write_openclip_checkpoint

    run_cli("embed", *videos, "-w", "tiny", "--out", tmp_path / "s", "--keep-frames")
    ef = run_cli("predict-ef", "--store", tmp_path / "s", "-f", "jsonl")  # no --weights: the store's
    assert ef.exit_code == 0, ef.stderr
    assert {r["weights"] for r in _jsonl(ef.stdout)} == {"tiny"}
    found = run_cli("search", "LV EJECTION FRACTION IS 50%.", "--index", tmp_path / "s", "-f", "jsonl")
    assert found.exit_code == 0, found.stderr
    assert len(_jsonl(found.stdout)) >= len(videos)
    again = run_cli("embed", videos[0], "--out", tmp_path / "s", "-f", "jsonl")  # appends with the store's weights
    assert again.exit_code == 0 and "already in" in again.stderr
    import torch

    other = {k: v + 0.01 for k, v in torch.load(tiny_checkpoint / "open_clip_pytorch_model.bin").items()}
    import_openclip(write_openclip_checkpoint(tmp_path / "other_ckpt", state=other), "other")
    clash = run_cli("predict-ef", "--store", tmp_path / "s", "-w", "other")
    assert clash.exit_code == 2 and "leave out --weights" in clash.stderr


def test_torchrun_ranks_split_the_cores_and_fp32_on_cuda_is_strict(monkeypatch):
    import torch

    from echoclip_cli.device import strict_fp32
    from echoclip_cli.pipeline import default_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    cuda = torch.device("cuda")
    assert default_workers(cuda, 100) == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers(cuda, 100) == 3  # 16 cores / 4 ranks, one left for the rank itself
    assert default_workers(torch.device("cpu"), 100) == 0
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        strict_fp32(cuda, torch.bfloat16)  # half precision: left as it is
        assert torch.backends.cudnn.allow_tf32
        strict_fp32(cuda, torch.float32)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_vectors_collected_one_batch_later_change_nothing(model, videos, monkeypatch):
    """Where embeddings come back asynchronously (CUDA), a batch's vectors are collected only
    after the next batch is queued; results stay the same, bit for bit, and in input order."""
    import echoclip_cli.pipeline as pipeline

    plain = list(embed_videos(videos, model, batch_size=7, keep_frames=True))
    log: list[str] = []
    real = pipeline.start_embedding

    class Event:
        def __init__(self, n: int) -> None:
            self.n = n

        def synchronize(self) -> None:
            log.append(f"wait {self.n}")

    def later(*args, **kwargs):
        n = sum(entry.startswith("start") for entry in log)
        log.append(f"start {n}")
        return pipeline._Embedding(real(*args, **kwargs).result(), Event(n))

    monkeypatch.setattr(pipeline, "start_embedding", later)
    deferred = list(embed_videos(videos, model, batch_size=7, keep_frames=True))
    assert [r.source for r in deferred] == [r.source for r in plain]
    for a, b in zip(deferred, plain, strict=True):
        assert np.array_equal(a.embedding, b.embedding) and np.array_equal(a.frame_embeddings, b.frame_embeddings)
    batches = sum(entry.startswith("start") for entry in log)
    assert batches == 4  # 27 frames in batches of 7
    assert log == ["start 0"] + [e for n in range(1, batches) for e in (f"start {n}", f"wait {n - 1}")] + [
        f"wait {batches - 1}"]


def test_normalisation_constants_are_made_once_per_device():
    import torch

    from echoclip_cli.preprocess import _normalisation, to_model_input
    from echoclip_cli.preprocess_config import PreprocessConfig

    cfg = PreprocessConfig()
    frames = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    first = to_model_input(frames, cfg)
    hits = _normalisation.cache_info().hits
    again = to_model_input(frames, cfg)
    assert _normalisation.cache_info().hits == hits + 1 and torch.equal(first, again)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    assert torch.equal(first, (frames.float().div(255).flip(1) - mean) / std)
