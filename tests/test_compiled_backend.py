"""The compiled (AOTInductor) CPU path: built once per machine, checked against eager, loaded
by later processes without compiling, the same embeddings as eager, chosen by --backend auto
only where it measured faster."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from echoclip_cli.backends import compiled as compiled_backend
from tests.cli_helpers import run_cli
from tests.media_factory import echo_frames, make_video

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="AOTInductor needs a C++ compiler")


def _load(backend: str):
    from echoclip_cli import load_model

    notes: list[str] = []
    return load_model("tiny", device="cpu", precision="fp32", backend=backend, note=notes.append), notes


def test_built_once_checked_and_equal_to_eager(tiny_bundle, compiled_bundle, tmp_path):
    """Built once (here by `weights optimise`, the session's fixture), then loaded without compiling."""
    model, notes = _load("compiled")
    assert model.compiled and model.numerics == {"backend": "torch", "precision": "fp32"} and notes == []
    found = compiled_backend.read_check(tiny_bundle)
    assert found["passed"] and found["frame_cosine_min"] >= compiled_backend.MIN_COSINE
    assert set(found["frames_per_s"]) == {"eager", "compiled"}

    eager, _ = _load("torch")
    for n in (1, 5):  # any batch size: one package, no recompiling
        images = torch.randn(n, 3, model.preprocess.image_size, model.preprocess.image_size)
        assert torch.allclose(model.encode_image(images), eager.encode_image(images), atol=1e-5, rtol=1e-5)

    video = make_video(tmp_path / "v.avi", echo_frames(12, 48, 64, seed=3))
    a = run_cli("embed", str(video), "-w", "tiny", "--backend", "compiled", "-f", "jsonl")
    b = run_cli("embed", str(video), "-w", "tiny", "--backend", "torch", "-f", "jsonl")
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr
    va, vb = json.loads(a.stdout)["embedding"], json.loads(b.stdout)["embedding"]
    assert max(abs(x - y) for x, y in zip(va, vb, strict=True)) < 1e-5


def test_auto_takes_it_only_where_measured_faster(tiny_bundle, compiled_bundle):
    _load("compiled")
    path = compiled_backend.folder(tiny_bundle) / "check.json"
    found = json.loads(path.read_text())
    for compiled_fps, expected in ((20.0, True), (10.2, False), (5.0, False)):
        found["frames_per_s"] = {"eager": 10.0, "compiled": compiled_fps}
        path.write_text(json.dumps(found))
        model, _ = _load("auto")
        assert model.compiled is expected and model.backend == "torch"
    found["frames_per_s"], found["passed"] = {"eager": 10.0, "compiled": 20.0}, False
    path.write_text(json.dumps(found))
    assert not _load("auto")[0].compiled  # a failed check is never used


@pytest.mark.slow
def test_weights_optimise_builds_checks_and_says_what_auto_runs(tiny_bundle, compiled_bundle, onnx_bundle, monkeypatch):
    """What is built and checked is kept (its numbers said again) and races; --force compiles again.
    (A built path wins the race here, whatever this machine measures: when eager torch wins, the
    built files are not kept: the next test.)"""
    from echoclip_cli.backends import race

    monkeypatch.setattr(race, "fastest_built", lambda bundle: ("compiled", "fp32"))
    result = run_cli("weights", "optimise", "tiny")
    assert result.exit_code == 0, result.stderr
    assert "frame cosine vs eager" in result.stderr and "--backend auto on this CPU now runs:" in result.stderr
    assert compiled_backend.read_check(tiny_bundle)["passed"]
    package = compiled_backend.package_file(tiny_bundle)
    built_at = package.stat().st_mtime_ns

    def no_network(*_args, **_kwargs):
        raise AssertionError("the network was built with nothing to build or check")

    from echoclip_cli import inference

    with monkeypatch.context() as patch:
        patch.setattr(inference, "build_network", no_network)
        again = run_cli("weights", "optimise", "tiny")  # a second time: nothing rebuilt or checked again
    assert again.exit_code == 0, again.stderr
    assert "already built on this CPU (--force to redo)" in again.stderr and "compiling" not in again.stderr
    if importlib.util.find_spec("onnxruntime"):  # echoclip[cpu-fast] installed: its check is not redone either
        assert "already checked on this CPU (--force to redo)" in again.stderr
        assert "checking the ONNX backend" not in again.stderr
    assert package.stat().st_mtime_ns == built_at

    forced = run_cli("weights", "optimise", "tiny", "--no-onnx", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "compiling the image tower" in forced.stderr and package.stat().st_mtime_ns != built_at


@pytest.mark.slow
def test_auto_builds_it_first_for_a_large_run_once(tiny_bundle, monkeypatch):
    from echoclip_cli import load_model

    monkeypatch.setattr(compiled_backend, "AUTO_BUILD_INPUTS", 3)
    notes: list[str] = []
    small = load_model("tiny", device="cpu", precision="fp32", backend="auto", inputs=2, note=notes.append)
    assert not small.compiled and not compiled_backend.attempted(tiny_bundle) and notes == []
    large = load_model("tiny", device="cpu", precision="fp32", backend="auto", inputs=3, note=notes.append)
    assert compiled_backend.attempted(tiny_bundle)
    assert any("3 inputs: building the compiled image tower" in n for n in notes)
    assert large.compiled == compiled_backend.usable(tiny_bundle)  # used only where it measured faster
    assert large.numerics == {"backend": "torch", "precision": "fp32"}


def test_a_failed_automatic_build_leaves_the_run_eager_and_is_not_retried(tiny_bundle, monkeypatch):
    from echoclip_cli import load_model

    monkeypatch.setattr(compiled_backend, "AUTO_BUILD_INPUTS", 1)
    import torch._inductor

    def broken(*args, **kwargs):
        raise RuntimeError("C++ compile error: no such compiler\nmore detail")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken)
    notes: list[str] = []
    model = load_model("tiny", device="cpu", precision="fp32", backend="auto", inputs=5, note=notes.append)
    assert not model.compiled and model.backend == "torch"
    assert any("cannot compile the image tower here: C++ compile error: no such compiler; running eager" in n
               for n in notes)
    assert compiled_backend.attempted(tiny_bundle)
    notes.clear()
    again = load_model("tiny", device="cpu", precision="fp32", backend="auto", inputs=5, note=notes.append)
    assert not again.compiled and notes == []
    images = torch.randn(2, 3, model.preprocess.image_size, model.preprocess.image_size)
    assert model.encode_image(images).shape == (2, again.embed_dim)


def test_auto_decides_from_one_race_of_every_built_path(tiny_bundle, compiled_bundle, onnx_bundle):
    """Each path's own check times it against eager in a separate run; `weights optimise` races them
    in one, and auto decides from the race while it covers what is built."""
    from echoclip_cli.backends import onnx as onnx_backend
    from echoclip_cli.backends import race as cpu_paths

    result = run_cli("weights", "optimise", "tiny")
    assert result.exit_code == 0, result.stderr
    race = json.loads(cpu_paths.race_file(tiny_bundle).read_text())
    names = {"torch", "compiled"} | ({"onnx-fp32"} if onnx_backend.missing() is None else set())
    assert set(race["frames_per_s"]) == names and all(v > 0 for v in race["frames_per_s"].values()), result.stderr
    assert "interleaved, best of 3: torch " in result.stderr, result.stderr
    assert cpu_paths.read_race(tiny_bundle) == race

    check = compiled_backend.folder(tiny_bundle) / "check.json"
    found = json.loads(check.read_text())
    found["frames_per_s"] = {"eager": 10.0, "compiled": 30.0}  # its own check: 3x
    check.write_text(json.dumps(found))
    path = cpu_paths.race_file(tiny_bundle)
    for speeds, expected in (({"compiled": 9.0}, ("torch", None)),  # the race disagrees: eager
                             ({"compiled": 10.4}, ("torch", None)),  # within 5 %: eager
                             ({"compiled": 12.0}, ("compiled", None))):
        race["frames_per_s"] = {name: 10.0 for name in names} | speeds
        path.write_text(json.dumps(race))
        assert cpu_paths.fastest_built(tiny_bundle) == expected, race
        assert _load("auto")[0].compiled is (expected[0] == "compiled"), race
    shown = json.loads(run_cli("info", "--json").stdout)["bundles"][0]
    assert shown["cpu_backend"] == "compiled" and shown["cpu_speed"]["compiled"] == 1.2  # the race's 12 / 10
    assert "CPU path: compiled (against eager torch: compiled 1.20×" in " ".join(run_cli("info").stdout.split())
    if "onnx-fp32" in names:
        race["frames_per_s"] = {"torch": 10.0, "compiled": 12.0, "onnx-fp32": 13.0}
        path.write_text(json.dumps(race))
        assert cpu_paths.fastest_built(tiny_bundle) == ("onnx", "fp32")

    if "onnx-fp32" in names:  # its own check's gain, measured on a tiny model: set, not left to timing noise
        onnx_check = onnx_backend._check_file(tiny_bundle)
        numbers = json.loads(onnx_check.read_text())
        numbers["frames_per_s"].update({"torch-fp32": 10.0, "onnx-fp32": 20.0})
        onnx_check.write_text(json.dumps(numbers))
    compiled_backend.package_file(tiny_bundle).touch()  # rebuilt since: the race no longer covers it
    assert cpu_paths.read_race(tiny_bundle) is None
    assert cpu_paths.fastest_built(tiny_bundle) == ("compiled", None)  # back to the checks: 3x against ONNX's 2x
    again = run_cli("weights", "optimise", "tiny")
    assert again.exit_code == 0 and "timing torch" in again.stderr, again.stderr  # raced again
    assert cpu_paths.read_race(tiny_bundle) is not None


def test_a_swapped_package_is_never_loaded(tiny_bundle, compiled_bundle, monkeypatch):
    """The package holds a shared library that runs when loaded: one whose bytes are not the
    checked ones is refused by --backend compiled and passed over by --backend auto."""
    import torch._inductor

    from echoclip_cli.errors import UsageError

    loaded = []
    real = torch._inductor.aoti_load_package
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda path, *a, **k: loaded.append(path) or real(path, *a, **k))
    check = compiled_backend.folder(tiny_bundle) / "check.json"
    found = json.loads(check.read_text())
    found["frames_per_s"] = {"eager": 10.0, "compiled": 30.0}  # measured faster: auto would take it
    check.write_text(json.dumps(found))
    assert _load("auto")[0].compiled and len(loaded) == 1  # the checked package loads

    package = compiled_backend.package_file(tiny_bundle)
    with open(package, "ab") as fh:
        fh.write(b"foreign code")  # same name, other bytes
    loaded.clear()
    model, _ = _load("auto")
    assert not model.compiled and model.backend == "torch" and loaded == []  # auto stays eager
    with pytest.raises(UsageError, match="changed since it was built and checked"):
        compiled_backend.CompiledBackend().tower(tiny_bundle)
    assert loaded == []


def test_a_copied_home_is_hashed_once_then_trusted(tiny_bundle, compiled_bundle):
    from echoclip_cli.backends import integrity

    package = compiled_backend.package_file(tiny_bundle)
    record = json.loads((package.parent / integrity.RECORD).read_text())["visual.pt2"]
    assert integrity.problem(package) is None  # copied by the fixture: new inode, same bytes
    again = json.loads((package.parent / integrity.RECORD).read_text())["visual.pt2"]
    assert again["sha256"] == record["sha256"] and again["stamp"] != record["stamp"]


@pytest.mark.slow
def test_when_eager_torch_wins_the_built_towers_are_not_kept_nor_built_again(tiny_bundle, compiled_bundle,
                                                                              onnx_bundle, monkeypatch):
    """Issue 30: `weights optimise` kept ~870 MB of built towers even when it chose eager torch.
    Now their files go and their measurements stay: auto does not build them again, a second
    optimise says what they measured without building, --backend compiled would build again."""
    from echoclip_cli import inference
    from echoclip_cli.backends import onnx, race, registry

    monkeypatch.setattr(race, "fastest_built", lambda bundle: race.EAGER)  # torch measured fastest here
    result = run_cli("weights", "optimise", "tiny")
    assert result.exit_code == 0, result.stderr
    assert "the built towers were not kept" in result.stderr and "MB freed" in result.stderr
    assert not compiled_backend.package_file(tiny_bundle).exists() and not onnx.exported(tiny_bundle)
    assert compiled_backend.read_check(tiny_bundle) is not None and onnx.read_check(tiny_bundle) is not None
    assert compiled_backend.attempted(tiny_bundle)  # so a large auto run does not build it first
    import torch

    choice = registry.choose("auto", "fp32", torch.device("cpu"), tiny_bundle, inputs=10_000)
    assert choice.name == "torch" and not choice.build_first

    def no_network(*_args, **_kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(inference, "build_network", no_network)
    again = run_cli("weights", "optimise", "tiny")
    assert again.exit_code == 0, again.stderr
    assert "not kept (eager torch ran faster; --force builds it again)" in again.stderr
    assert "checked on this CPU, not kept" in again.stderr
