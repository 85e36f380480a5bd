"""Shared fixtures: hermetic home, reference files, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path:
    env = os.environ.get("ECHOCLIP_REFERENCE")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` (upstream files under an academic licence, never committed)."""
    path = _reference_dir()
    if not path.is_dir():
        pytest.skip(f"reference files not found at {path} (set ECHOCLIP_REFERENCE)")
    return path


@pytest.fixture(autouse=True)
def _hermetic_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty weights home and no network."""
    home = tmp_path_factory.mktemp("echoclip_home")
    monkeypatch.setenv("ECHOCLIP_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("ECHOCLIP_DEBUG", "ECHOCLIP_SALT", "ECHOCLIP_TEMPLATE_VOCAB"):
        monkeypatch.delenv(name, raising=False)
    return home


# --------------------------------------------------------------------------- tiny OpenCLIP checkpoints

import json as _json  # noqa: E402

import torch  # noqa: E402

from tests.golden.synthetic import synthetic_state_dict  # noqa: E402

GOLDEN_MODELS = _json.loads((REPO_ROOT / "tests" / "golden" / "openclip_tiny.json").read_text())["models"]


def write_openclip_checkpoint(folder: Path, kind: str = "atto", fmt: str = "bin", state=None) -> Path:
    """Write a tiny OpenCLIP-format checkpoint (config + .bin or .safetensors) of golden ``kind``."""
    golden = GOLDEN_MODELS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": golden["model_cfg"], "preprocess_cfg": golden["preprocess_cfg"]}
    (folder / "open_clip_config.json").write_text(_json.dumps(config))
    if state is None:
        state = synthetic_state_dict({k: tuple(v) for k, v in golden["shapes"].items()})
    if fmt == "bin":
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny convnext_atto OpenCLIP checkpoint folder (.bin), shared read-only by tests."""
    return write_openclip_checkpoint(tmp_path_factory.mktemp("openclip_atto"), "atto", "bin")


@pytest.fixture()
def tiny_bundle(tiny_checkpoint, _hermetic_home):
    """The tiny checkpoint imported as the installed bundle ``tiny``."""
    from echoclip_cli.weights import import_openclip

    return import_openclip(tiny_checkpoint, "tiny")


@pytest.fixture(scope="session")
def built_towers(tiny_checkpoint, tmp_path_factory) -> Path:
    """A weights home where the tiny bundle's fast CPU paths are built, checked and raced once
    (`echoclip weights optimise`: the compiled tower where a C++ compiler exists, the ONNX towers
    where the cpu-fast extra is installed): tests that only use them copy them
    (:func:`optimised_bundle`) instead of building them again (~25 s each here)."""
    from echoclip_cli.optimising import optimise
    from echoclip_cli.weights import import_openclip

    home = tmp_path_factory.mktemp("built_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ECHOCLIP_HOME", str(home))
        import_openclip(tiny_checkpoint, "tiny")
        optimise("tiny")
    return home


def _copy_built(built_towers: Path, home: Path, part: str) -> None:
    import shutil

    if (built_towers / part).is_dir():
        shutil.copytree(built_towers / part, home / part, dirs_exist_ok=True)


@pytest.fixture()
def compiled_bundle(tiny_bundle, built_towers, _hermetic_home):
    """The tiny bundle with its compiled tower as :func:`built_towers` built and checked it (a copy,
    so a test may change its check; no ONNX export and no race)."""
    _copy_built(built_towers, _hermetic_home, "compiled")
    return tiny_bundle


@pytest.fixture()
def onnx_bundle(tiny_bundle, built_towers, _hermetic_home):
    """The tiny bundle with its ONNX towers as :func:`built_towers` exported and checked them (a
    copy; no compiled tower and no race)."""
    _copy_built(built_towers, _hermetic_home, "onnx")
    return tiny_bundle
