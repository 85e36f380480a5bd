"""The optional ONNX Runtime CPU backend (echoclip[cpu-fast]): exported and checked once per
bundle and CPU, same embeddings as torch fp32 in fp32, refused per task where the check fails,
recorded in every record, never mixed with torch embeddings in one store or cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from echoclip_cli.backends import onnx as onnx_backend
from echoclip_cli.device import cpu_kind
from echoclip_cli.options import RunOptions
from tests.cli_helpers import run_cli
from tests.media_factory import echo_frames, make_dicom, make_video

pytest.importorskip("onnxruntime", reason="the cpu-fast extra (onnxruntime, onnx) is not installed")
pytest.importorskip("onnx", reason="the cpu-fast extra (onnxruntime, onnx) is not installed")


@pytest.fixture()
def clips(tmp_path):
    return [make_dicom(tmp_path / "a.dcm", echo_frames(20, 48, 64, seed=1), "jpeg", seed=5),
            make_video(tmp_path / "b.avi", echo_frames(16, 48, 64, seed=2))]


def _load(precision: str, backend: str = "onnx"):
    from echoclip_cli import load_model

    notes: list[str] = []
    return load_model("tiny", device="cpu", precision=precision, backend=backend, note=notes.append), notes


@pytest.mark.slow
def test_export_and_check_happen_once_and_fp32_matches_torch(tiny_bundle):
    model, notes = _load("fp32")
    assert model.numerics == {"backend": "onnx", "precision": "fp32"}
    assert any("exporting" in n for n in notes) and any("ONNX backend check" in n for n in notes)
    result = onnx_backend.read_check(tiny_bundle)
    assert result is not None and result["cpu"] == cpu_kind()
    assert set(result["precisions"]) == {"fp32", "int8"}
    for numbers in result["precisions"].values():
        assert -1.0 <= numbers["video_cosine_min"] <= 1.0 + 1e-9
        assert numbers["ef_delta"] is not None and numbers["score_delta_max"] is not None
    assert set(result["frames_per_s"]) == {"torch-fp32", "onnx-fp32", "onnx-int8"}

    again, notes = _load("int8")  # the second load reuses both files and the check
    assert notes == [] and again.numerics == {"backend": "onnx", "precision": "int8"}

    torch_model, _ = _load("fp32", backend="torch")
    images = torch.randn(5, 3, model.preprocess.image_size, model.preprocess.image_size)
    ours, reference = model.encode_image(images), torch_model.encode_image(images)
    assert torch.nn.functional.cosine_similarity(ours, reference).min() > 0.99999
    assert torch.allclose(ours, reference, atol=1e-4, rtol=1e-4)
    assert result["precisions"]["fp32"]["video_cosine_min"] > 0.9999
    assert result["precisions"]["fp32"]["ef_delta"] == 0.0


def test_int8_is_close_to_fp32_and_its_check_is_what_refuses_it(tiny_bundle, onnx_bundle):
    model, _ = _load("int8")
    torch_model, _ = _load("fp32", backend="torch")
    images = torch.randn(4, 3, model.preprocess.image_size, model.preprocess.image_size)
    cosine = torch.nn.functional.cosine_similarity(model.encode_image(images), torch_model.encode_image(images))
    assert cosine.min() > 0.9  # a tiny random network; the tolerances apply to the check's real cine
    result = onnx_backend.read_check(tiny_bundle)
    numbers = result["precisions"]["int8"]
    for task, limits in onnx_backend.TOLERANCES["int8"].items():
        reason = onnx_backend.refusal(result, "int8", task)
        failing = [k for k, bound in limits.items() if numbers.get(onnx_backend._MEASURED[k]) is not None
                   and not (numbers[onnx_backend._MEASURED[k]] >= bound if k.startswith("min")
                            else numbers[onnx_backend._MEASURED[k]] <= bound)]
        assert (reason is None) == (not failing), (task, reason, failing)


def test_refusal_names_the_measured_number_and_the_bound():
    result = {"precisions": {"int8": {"video_cosine_min": 0.9999, "frame_cosine_min": 0.999, "ef_delta": 2.2,
                                      "score_delta_max": 0.001, "neighbour_changes": 0.0, "neighbour_queries": 10}}}
    assert onnx_backend.refusal(result, "int8", "embed") is None
    assert onnx_backend.refusal(result, "int8", "detect-devices") is None
    reason = onnx_backend.refusal(result, "int8", "predict-ef")
    assert reason is not None and "ef_delta = 2.2" in reason and "≤ 0.5" in reason
    result["precisions"]["int8"]["video_cosine_min"] = 0.99
    assert "video_cosine_min" in onnx_backend.refusal(result, "int8", "embed")


def test_a_task_the_check_failed_is_refused_with_its_reason(tiny_bundle, onnx_bundle, clips):
    _load("int8")
    path = onnx_backend._check_file(tiny_bundle)
    result = json.loads(path.read_text())
    result["precisions"]["int8"]["ef_delta"] = 3.0  # as if this CPU's int8 kernels moved EF by 3 points
    result["precisions"]["int8"]["video_cosine_min"] = 0.9999
    result["precisions"]["int8"]["score_delta_max"] = 0.0
    path.write_text(json.dumps(result))
    refused = run_cli("predict-ef", *map(str, clips), "-w", "tiny", "--backend", "onnx", "--precision", "int8")
    assert refused.exit_code == 2 and "ef_delta = 3" in refused.stderr and "--backend torch" in refused.stderr
    allowed = run_cli("detect-devices", *map(str, clips), "-w", "tiny", "--backend", "onnx", "--precision", "int8",
                      "-f", "jsonl")
    assert allowed.exit_code == 0, allowed.stderr
    rows = [json.loads(line) for line in allowed.stdout.splitlines()]
    assert rows and all(r["backend"] == "onnx" and r["precision"] == "int8" for r in rows)


def test_records_say_what_made_them_and_a_store_never_mixes_backends(tiny_bundle, onnx_bundle, clips, tmp_path):
    store = tmp_path / "s.store"
    first = run_cli("embed", str(clips[0]), "-w", "tiny", "--backend", "torch", "--keep-frames", "--out", str(store))
    assert first.exit_code == 0, first.stderr
    header = json.loads((store / "store.json").read_text())
    assert header["numerics"] == {"backend": "torch", "precision": "fp32"}
    mixed = run_cli("embed", str(clips[1]), "-w", "tiny", "--backend", "onnx", "--keep-frames", "--out", str(store))
    assert mixed.exit_code != 0 and "never mixes" in mixed.stderr and "--backend torch" in mixed.stderr
    rows = run_cli("predict-ef", "--store", str(store), "-f", "jsonl")
    assert rows.exit_code == 0, rows.stderr
    assert {(r["backend"], r["precision"]) for r in map(json.loads, rows.stdout.splitlines())} == {("torch", "fp32")}


def test_the_frame_cache_keeps_backends_apart(tiny_bundle, onnx_bundle, clips):
    from echoclip_cli import frame_cache

    torch_run = run_cli("predict-ef", *map(str, clips), "-w", "tiny", "--backend", "torch", "-f", "jsonl")
    onnx_run = run_cli("predict-ef", *map(str, clips), "-w", "tiny", "--backend", "onnx", "-f", "jsonl")
    assert torch_run.exit_code == 0 and onnx_run.exit_code == 0, onnx_run.stderr
    assert "from the embedding cache" not in onnx_run.stderr
    folders = sorted(p.name for p in frame_cache.cache_root().iterdir() if p.is_dir())
    assert len(folders) == 2 and sum(name.endswith("-onnx-fp32") for name in folders) == 1
    ef = {r.get("source"): r["ef"] for r in map(json.loads, torch_run.stdout.splitlines()) if "source" in r}
    ef_onnx = {r.get("source"): r["ef"] for r in map(json.loads, onnx_run.stdout.splitlines()) if "source" in r}
    assert ef.keys() == ef_onnx.keys()
    assert max(abs(ef[k] - ef_onnx[k]) for k in ef) <= 0.5  # fp32 ONNX: the same estimates within tolerance


def test_auto_takes_onnx_only_where_this_cpus_check_found_it_faster(tiny_bundle, onnx_bundle):
    _load("fp32")  # export + check
    path = onnx_backend._check_file(tiny_bundle)
    result = json.loads(path.read_text())
    for faster, expected in ((True, "onnx"), (False, "torch")):
        result["frames_per_s"] = {"torch-fp32": 10.0, "onnx-fp32": 12.0 if faster else 8.0, "onnx-int8": 20.0}
        path.write_text(json.dumps(result))
        model, _ = _load("auto", backend="auto")
        assert model.backend == expected and model.precision == "fp32"
    bf16, _ = _load("bf16", backend="auto")
    assert bf16.backend == "torch"  # auto never changes the precision asked for


def test_auto_looks_for_onnx_runtime_without_importing_it(tiny_bundle, onnx_bundle):
    """Where the check found ONNX slower, auto runs torch and a fresh process never imports onnx
    or onnxruntime to decide (that cost every CPU run 0.13-0.19 s)."""
    import subprocess
    import sys

    _load("fp32")
    path = onnx_backend._check_file(tiny_bundle)
    result = json.loads(path.read_text())
    result["frames_per_s"] = {"torch-fp32": 10.0, "onnx-fp32": 8.0, "onnx-int8": 20.0}
    path.write_text(json.dumps(result))
    code = ("import sys; from echoclip_cli import load_model; "
            "m = load_model('tiny', device='cpu', backend='auto', lazy=True); "
            "print(m.backend, 'onnxruntime' in sys.modules, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["torch", "False", "False"]


def test_onnx_embeddings_equal_torch_through_the_pipeline(tiny_bundle, onnx_bundle, clips):
    from echoclip_cli import api

    onnx_model, _ = _load("fp32")
    torch_model, _ = _load("fp32", backend="torch")
    a = [r.embedding for r in api.embed(onnx_model, clips)]
    b = [r.embedding for r in api.embed(torch_model, clips)]
    for x, y in zip(a, b, strict=True):
        assert np.allclose(x, y, atol=2e-5)


def test_an_int8_frame_embedding_depends_on_that_frame_alone(tiny_bundle, onnx_bundle, clips):
    """int8 activations are quantised per run of the session: a frame run with batch-mates got a
    scale set by them too. Each frame is its own run, so a video's int8 embedding is
    the same alone, in company and at any batch size (bit for bit)."""
    from echoclip_cli import api

    model, _ = _load("int8")
    size = model.preprocess.image_size
    frames = torch.randn(6, 3, size, size, generator=torch.Generator().manual_seed(0))
    alone = model.encode_image(frames[:3])
    in_company = model.encode_image(torch.cat([frames[3:4], frames[:3], frames[4:]]))[1:4]
    assert torch.equal(alone, in_company)

    by_itself = next(iter(api.embed(model, [clips[0]], options=RunOptions(batch_size=4)))).embedding
    with_another = {r.source: r.embedding for r in api.embed(model, [clips[1], clips[0]], options=RunOptions(batch_size=16))}
    assert np.array_equal(by_itself, with_another[str(clips[0])])


def test_int8_weights_are_7_bit_where_the_cpu_would_saturate_8_bit_ones():
    """x86 CPUs without VNNI add pairs of uint8 x int8 products into int16 (VPMADDUBSW), which
    saturates with 8-bit weights; VNNI/AMX and ARM kernels do not."""
    bits = onnx_backend.int8_weight_bits
    assert bits({"avx2", "fma"}, "x86_64") == 7
    assert bits({"avx2", "avx512f", "avx512bw"}, "x86_64") == 7  # AVX-512 without VNNI (Skylake-SP)
    assert bits({"avx2", "avx512f", "avx512_vnni"}, "x86_64") == 8
    assert bits({"avx2", "avx_vnni"}, "x86_64") == 8
    assert bits(set(), "aarch64") == 8


def _weight_range(path) -> int:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    ints = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert ints, "no int8 weights in the quantised tower"
    return max(int(np.abs(a.astype(np.int32)).max()) for a in ints)


def test_both_int8_towers_are_exported_and_each_cpu_kind_runs_and_checks_its_own(tiny_bundle, onnx_bundle, monkeypatch):
    """Both weight widths are exported; a CPU of the other kind than this one (with or without
    VNNI) runs the other file and checks it again, since the file is part of the check's key."""
    _load("fp32")
    eight, seven = (onnx_backend.model_file(tiny_bundle, "int8", b) for b in (8, 7))
    assert _weight_range(eight) > 64 and _weight_range(seven) <= 64

    other = 15 - onnx_backend.int8_weight_bits()  # 7 on a VNNI CPU, 8 without
    monkeypatch.setattr(onnx_backend, "int8_weight_bits", lambda *a, **k: other)
    model, notes = _load("int8")
    assert model.tower.path == {8: eight, 7: seven}[other]
    assert any(f"int8 ({other}-bit weights)" in n for n in notes)  # checked again
    assert onnx_backend.read_check(tiny_bundle)["int8_weight_bits"] == other


def test_an_older_export_gets_the_7_bit_tower_added_and_nothing_else_redone(tiny_bundle, onnx_bundle):
    model, _ = _load("fp32", backend="torch")
    _load("fp32")
    seven, fp32 = onnx_backend.model_file(tiny_bundle, "int8", 7), onnx_backend.model_file(tiny_bundle, "fp32")
    seven.unlink()
    before = fp32.stat().st_mtime_ns
    notes: list[str] = []
    onnx_backend.export(tiny_bundle, model.model.visual, notes.append)
    assert seven.is_file() and _weight_range(seven) <= 64 and fp32.stat().st_mtime_ns == before
    assert notes == [f"adding the 7-bit int8 tower of {tiny_bundle.name} (for CPUs without VNNI; once)…"]


def test_a_swapped_export_is_never_run_and_is_exported_again(tiny_bundle, onnx_bundle, monkeypatch):
    """A swapped ONNX file would give other numbers while records cite the bundle's sha256: auto
    passes it over, and --backend onnx exports the tower again before running anything."""
    import hashlib

    import onnxruntime as ort

    from echoclip_cli.files import sha256_file

    seen = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda path, *a, **k: seen.append(sha256_file(path)) or real(path, *a, **k))
    fp32 = onnx_backend.model_file(tiny_bundle, "fp32")
    with open(fp32, "ab") as fh:
        fh.write(b"\0")  # other bytes under the same name
    swapped = sha256_file(fp32)
    path = onnx_backend._check_file(tiny_bundle)
    result = json.loads(path.read_text())
    result["frames_per_s"] = {"torch-fp32": 10.0, "onnx-fp32": 20.0, "onnx-int8": 20.0}
    path.write_text(json.dumps(result))
    auto, _ = _load("auto", backend="auto")
    assert auto.backend == "torch" and seen == []

    model, notes = _load("fp32")
    assert any("changed since it was built and checked" in n and "exporting it again" in n for n in notes), notes
    assert model.backend == "onnx" and swapped not in seen and seen
    assert hashlib.sha256(fp32.read_bytes()).hexdigest() != swapped
