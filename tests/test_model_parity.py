"""Our plain-torch model reproduces OpenCLIP's embeddings on the same weights (golden files).

tests/golden/openclip_tiny.json was made by scripts/make_golden.py with OpenCLIP and timm; here the
same deterministic weights are written in OpenCLIP format, imported through the real
`echoclip weights import` path and loaded with `echoclip_cli.load_model`.
"""

from __future__ import annotations

import json

import pytest
import torch

import echoclip_cli
from tests.cli_helpers import run_cli
from tests.conftest import GOLDEN_MODELS, write_openclip_checkpoint
from tests.golden.synthetic import synthetic_images, text_ids


def _max_rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((ours - ref).norm(dim=-1) / ref.norm(dim=-1)).max())


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
@pytest.mark.parametrize("kind", sorted(GOLDEN_MODELS))
def test_imported_checkpoint_matches_openclip(tmp_path, kind, fmt):
    golden = GOLDEN_MODELS[kind]
    source = write_openclip_checkpoint(tmp_path / "src", kind, fmt)
    result = run_cli("weights", "import", source, "--name", f"golden-{kind}")
    assert result.exit_code == 0, result.stderr

    model = echoclip_cli.load_model(f"golden-{kind}", device="cpu", precision="fp32")
    size = golden["model_cfg"]["vision_cfg"]["image_size"]
    image = model.encode_image(synthetic_images(golden["n_images"], size))
    text = model.encode_text(text_ids())

    assert image.shape == (golden["n_images"], golden["model_cfg"]["embed_dim"])
    assert _max_rel_err(image, torch.tensor(golden["image_embeddings"])) < 1e-5
    assert _max_rel_err(text, torch.tensor(golden["text_embeddings"])) < 1e-5


def test_openclip_folder_loads_directly_as_path(tmp_path):
    source = write_openclip_checkpoint(tmp_path / "src", "atto", "safetensors")
    model = echoclip_cli.load_model(source, device="cpu", precision="fp32")
    text = model.encode_text(text_ids())
    assert _max_rel_err(text, torch.tensor(GOLDEN_MODELS["atto"]["text_embeddings"])) < 1e-5
    assert model.preprocess.image_size == 64


def test_bf16_on_cpu_is_close_to_fp32(tiny_bundle):
    images = synthetic_images(3, 64)
    fp32 = echoclip_cli.load_model("tiny", device="cpu", precision="fp32").encode_image(images)
    bf16 = echoclip_cli.load_model("tiny", device="cpu", precision="bf16").encode_image(images)
    assert bf16.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(fp32, bf16, dim=-1)
    assert float(cosine.min()) > 0.99
    assert not torch.equal(fp32, bf16)  # bf16 really ran


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_matches_cpu(tiny_bundle):
    images = synthetic_images(3, 64)
    cpu = echoclip_cli.load_model("tiny", device="cpu", precision="fp32").encode_image(images)
    gpu = echoclip_cli.load_model("tiny", device="cuda", precision="fp32").encode_image(images).cpu()
    assert _max_rel_err(gpu, cpu) < 1e-3


@pytest.mark.slow
def test_compiled_image_tower_gives_the_same_embeddings(tiny_bundle):
    images = synthetic_images(2, 64)
    eager = echoclip_cli.load_model("tiny", device="cpu", precision="fp32").encode_image(images)
    model = echoclip_cli.load_model("tiny", device="cpu", precision="fp32", compile=True)
    compiled = model.encode_image(images)
    assert _max_rel_err(compiled, eager) < 1e-5
    import torch._dynamo

    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    shorter = model.encode_image(images[:1])  # a shorter last batch is padded: no second compilation
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    assert shorter.shape[0] == 1 and _max_rel_err(shorter, eager[:1]) < 1e-5


def test_skeleton_is_shapes_only_and_starts_fast(tmp_path):
    """The network is built on the meta device without initialising it: every tensor on meta with the
    checkpoint's shapes, ``torch.nn.init`` working again afterwards, and no ``torch._dynamo`` import
    (torch's meta ``normal_`` would pull it in: 1.6 s of every command's start-up)."""
    import subprocess
    import sys

    from echoclip_cli.model import build_skeleton

    cfg = GOLDEN_MODELS["atto"]["model_cfg"]
    skeleton = build_skeleton(cfg)
    assert {t.device.type for t in skeleton.state_dict().values()} == {"meta"}
    assert skeleton.visual.trunk.stem[0].weight.shape == (40, 3, 4, 4)
    after = torch.nn.init.normal_(torch.zeros(1000))
    assert float(after.std()) > 0.5  # init is not skipped outside the build

    code = ("import sys, json; from echoclip_cli.model import build_skeleton; "
            "build_skeleton(json.loads(sys.argv[1])); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
