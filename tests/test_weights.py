"""Weights: import, strict loading, checksums, verify, list, pull without network, device errors."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

import echoclip_cli
from echoclip_cli import weights as w
from echoclip_cli.errors import StateDictError
from tests.cli_helpers import one_error_line, run_cli
from tests.conftest import GOLDEN_MODELS, write_openclip_checkpoint
from tests.golden.synthetic import synthetic_state_dict


def _state(kind: str = "atto") -> dict[str, torch.Tensor]:
    return synthetic_state_dict({k: tuple(v) for k, v in GOLDEN_MODELS[kind]["shapes"].items()})


def test_import_writes_a_bundle_with_config_and_hashes(tiny_checkpoint, _hermetic_home):
    result = run_cli("weights", "import", tiny_checkpoint, "--name", "tiny")
    assert result.exit_code == 0, result.stderr
    root = _hermetic_home / "tiny"
    config = json.loads((root / "echoclip.json").read_text())
    assert config["tokenizer"]["kind"] == "clip"
    assert config["source"]["sha256"] == w.sha256_file(tiny_checkpoint / "open_clip_pytorch_model.bin")
    assert config["weights_sha256"] == w.sha256_file(root / "model.safetensors")
    assert config["preprocess_cfg"]["channel_order"] == "BGR"
    assert config["preprocess_cfg"]["image_size"] == 64
    assert not [p for p in _hermetic_home.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_import_twice_needs_force(tiny_checkpoint):
    assert run_cli("weights", "import", tiny_checkpoint, "--name", "tiny").exit_code == 0
    again = run_cli("weights", "import", tiny_checkpoint, "--name", "tiny")
    assert again.exit_code == 1
    assert "already installed" in one_error_line(again)
    assert run_cli("weights", "import", tiny_checkpoint, "--name", "tiny", "--force").exit_code == 0


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda s: s.pop("visual.head.proj.weight"), "missing 1: visual.head.proj.weight"),
        (lambda s: s.__setitem__("visual.extra.weight", torch.zeros(3)), "unexpected 1: visual.extra.weight"),
        (lambda s: s.__setitem__("ln_final.weight", torch.ones(65)), "wrong shape 1: ln_final.weight (65,) != (64,)"),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_strict_loading_names_the_bad_keys(tmp_path, damage, expected):
    state = _state()
    damage(state)
    source = write_openclip_checkpoint(tmp_path / "bad", "atto", "bin", state=state)
    result = run_cli("weights", "import", source, "--name", "bad")
    assert result.exit_code == 1
    assert expected in one_error_line(result)
    assert not (w.weights_home() / "bad").exists()


def test_historical_key_spellings_are_mapped():
    state = {"module.visual.trunk.stages.1.0.dwconv.weight": torch.zeros(1), "module.attn_mask": torch.zeros(1),
             "visual.trunk.downsample_layers.0.0.weight": torch.zeros(1), "visual.trunk.norm.bias": torch.zeros(1)}
    assert sorted(w.normalize_keys(state)) == [
        "visual.trunk.head.norm.bias", "visual.trunk.stages.1.blocks.0.conv_dw.weight", "visual.trunk.stem.0.weight"]


def test_two_spellings_of_one_key_is_an_error():
    with pytest.raises(StateDictError, match="two tensors"):
        w.normalize_keys({"module.ln_final.weight": torch.zeros(1), "ln_final.weight": torch.zeros(1)})


def test_corrupt_checkpoint_is_one_line(tmp_path):
    source = write_openclip_checkpoint(tmp_path / "c", "atto", "bin")
    blob = source / "open_clip_pytorch_model.bin"
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 3])
    result = run_cli("weights", "import", source, "--name", "corrupt")
    assert result.exit_code == 1
    assert "cannot read checkpoint" in one_error_line(result)


def test_pickle_with_code_is_refused(tmp_path):
    source = write_openclip_checkpoint(tmp_path / "p", "atto", "bin")
    torch.save({"state_dict": _state(), "evil": print}, source / "open_clip_pytorch_model.bin")
    result = run_cli("weights", "import", source, "--name", "evil")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "cannot read checkpoint" in line and "never unpickled" in line and line.endswith(")")


def test_released_name_with_other_checksum_is_refused(tiny_checkpoint):
    result = run_cli("weights", "import", tiny_checkpoint, "--name", "echo-clip-r")
    assert result.exit_code == 1
    assert "differs from the released echo-clip-r" in one_error_line(result)


def test_verify_detects_modified_weights(tiny_bundle):
    assert run_cli("weights", "verify", "tiny").exit_code == 0
    path = tiny_bundle.root / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    result = run_cli("weights", "verify", "tiny")
    assert result.exit_code == 1
    assert "sha256" in one_error_line(result)
    with pytest.raises(w.ChecksumError):  # loading refuses the changed file too
        echoclip_cli.load_model("tiny", device="cpu")


def test_list_shows_released_and_installed(tiny_bundle):
    result = run_cli("weights", "list", "--format", "jsonl")
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert result.exit_code == 0
    assert set(rows) == {"echo-clip", "echo-clip-r", "tiny"}
    assert rows["tiny"]["installed"] and rows["tiny"]["verified"] and rows["tiny"]["source"].startswith("imported ")
    assert not rows["echo-clip"]["installed"] and rows["echo-clip-r"]["tokenizer"] == "template"


def test_pull_without_network_fails_fast_with_import_hint():
    start = time.monotonic()
    result = run_cli("weights", "pull", "echo-clip")
    assert time.monotonic() - start < 10
    assert result.exit_code == 1
    assert "cannot reach the model hub" in one_error_line(result)
    assert "echoclip weights import FOLDER --name echo-clip" in result.stderr


def test_first_use_of_released_name_tries_pull_then_explains():
    with pytest.raises(w.NetworkError) as info:
        echoclip_cli.load_model("echo-clip", device="cpu")
    assert "weights import" in info.value.hint


def test_unknown_name_lists_known_ones(tiny_bundle):
    with pytest.raises(w.WeightsNotFoundError) as info:
        w.resolve("nope")
    assert "tiny" in info.value.hint and "echo-clip" in info.value.hint


def test_cuda_request_without_cuda_is_an_error(tiny_bundle):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(echoclip_cli.EchoclipError, match="CUDA is not available"):
        echoclip_cli.load_model("tiny", device="cuda")


def test_fp16_on_cpu_is_an_error(tiny_bundle):
    with pytest.raises(echoclip_cli.EchoclipError, match="fp16"):
        echoclip_cli.load_model("tiny", device="cpu", precision="fp16")


def test_unexpected_exception_is_one_line_without_traceback(monkeypatch):
    monkeypatch.setattr(w, "installed_bundles", lambda: 1 / 0)
    result = run_cli("weights", "list")
    assert result.exit_code == 1
    assert "internal error: ZeroDivisionError" in one_error_line(result)


def test_info_json(tiny_bundle):
    result = run_cli("info", "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0
    assert data["packages"]["torch"] == torch.__version__.split("+")[0] or data["packages"]["torch"]
    assert [b["name"] for b in data["bundles"]] == ["tiny"]
    assert data["bundles"][0]["cpu_backend"] == "torch" and data["bundles"][0]["cpu_speed"] == {"torch": 1.0}
    assert data["device"]["default"] in ("cpu", "cuda")


def test_auto_precision_uses_bf16_only_where_it_is_fast():
    from echoclip_cli.device import cpu_flags, cpu_has_fast_bf16, resolve_precision

    flags = cpu_flags("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_has_fast_bf16(flags)
    assert not cpu_has_fast_bf16({"avx512f", "avx512_bf16"})  # measured slower than fp32 without AMX
    expected = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    assert resolve_precision("auto", torch.device("cpu")) is expected
    assert resolve_precision("fp32", torch.device("cpu")) is torch.float32


def _fake_hub(folder):
    """A stand-in for the hub's file transport: copies files from a local OpenCLIP folder."""
    import shutil
    from pathlib import Path

    def download(repo_id, filename, revision=None, local_dir=None):
        source = Path(folder) / filename
        if not source.is_file():
            raise FileNotFoundError(f"{repo_id}/{filename}")
        target = Path(local_dir) / filename
        shutil.copyfile(source, target)
        return str(target)

    return download


def test_pull_installs_through_the_real_import_path(tiny_checkpoint, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(w, "_hub_reachable", lambda timeout: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_hub(tiny_checkpoint))
    result = run_cli("weights", "pull", "echo-clip")
    assert result.exit_code == 0, result.stderr
    bundle = w.resolve("echo-clip", auto_pull=False)
    assert bundle.tokenizer_kind == "clip" and w.is_verified(bundle)
    assert bundle.config["source"]["registry"] == "mkaichristensen/echo-clip"


def test_pull_refuses_a_download_with_the_wrong_checksum(tiny_checkpoint, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(w, "_hub_reachable", lambda timeout: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_hub(tiny_checkpoint))
    result = run_cli("weights", "pull", "echo-clip-r")
    assert result.exit_code == 1
    assert "differs from the released echo-clip-r" in one_error_line(result)
    assert not (w.weights_home() / "echo-clip-r").exists()


def test_an_unknown_checkpoint_under_a_released_name_is_never_called_the_release(tiny_checkpoint):
    imported = run_cli("weights", "import", tiny_checkpoint, "--name", "echo-clip")
    assert imported.exit_code == 0 and "could not be checked" in imported.stderr
    rows = {r["name"]: r for r in map(json.loads, run_cli("weights", "list", "-f", "jsonl").stdout.splitlines())}
    assert "mkaichristensen" not in rows["echo-clip"]["source"]
    assert "not checked against a pinned release sha256" in rows["echo-clip"]["source"]
    assert w.read_bundle(w.weights_home() / "echo-clip").config["source"]["registry"] is None


def test_the_pinned_release_hash_names_its_repository(tiny_checkpoint, monkeypatch):
    from echoclip_cli.weights import sha256_file

    checkpoint = tiny_checkpoint / "open_clip_pytorch_model.bin"
    pinned = dataclasses.replace(w.REGISTRY["echo-clip-r"], sha256=sha256_file(checkpoint))
    monkeypatch.setitem(w.REGISTRY, "echo-clip-r", pinned)
    bundle = w.import_openclip(tiny_checkpoint, "echo-clip-r")
    assert bundle.config["source"]["release"] == "released"
    assert bundle.config["source"]["registry"] == "mkaichristensen/echo-clip-r"


def test_remove_deletes_only_an_installed_bundle(tiny_bundle):
    assert run_cli("weights", "remove", "nope").exit_code == 2
    assert run_cli("weights", "remove", "../tiny").exit_code == 2
    result = run_cli("weights", "remove", "tiny")
    assert result.exit_code == 0, result.stderr
    assert not (w.weights_home() / "tiny").exists()
    assert not list(w.weights_home().glob("*.removing"))


def test_an_installed_name_wins_over_a_same_named_folder_here(tiny_bundle, tmp_path, monkeypatch):
    (tmp_path / "tiny").mkdir()  # e.g. a checkout's folder that happens to share the name
    monkeypatch.chdir(tmp_path)
    assert w.resolve("tiny", auto_pull=False).root == tiny_bundle.root
    with pytest.raises(w.WeightsNotFoundError):
        w.resolve("./tiny", auto_pull=False)  # the folder itself, asked for as a path


def test_remove_also_deletes_what_was_built_from_those_weights(tiny_bundle, tiny_checkpoint, _hermetic_home):
    """The compiled/ONNX towers, races and cached frames of removed weights (~1 GB at full size)
    go with them, unless another installed name holds the same weights."""
    prefix = tiny_bundle.weights_sha256[:16]
    built = [_hermetic_home / "compiled" / f"{prefix}-abc", _hermetic_home / "onnx" / f"{prefix}-v2",
             _hermetic_home / "cache" / "frames" / f"{prefix}-def"]
    for folder in built:
        folder.mkdir(parents=True)
        (folder / "x").write_text("built")
    race = _hermetic_home / "race" / f"{prefix}-0123.json"
    race.parent.mkdir()
    race.write_text("{}")
    other = _hermetic_home / "onnx" / "0000000000000000-v2"
    other.mkdir()
    w.import_openclip(tiny_checkpoint, "tiny-copy")  # the same weights under a second name
    assert run_cli("weights", "remove", "tiny").exit_code == 0
    assert all(p.exists() for p in built) and race.exists()  # still used by tiny-copy
    assert run_cli("weights", "remove", "tiny-copy").exit_code == 0
    assert not any(p.exists() for p in built) and not race.exists() and other.is_dir()
