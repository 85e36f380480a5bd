"""Regenerate tests/golden/openclip_tiny.json with OpenCLIP itself (run by hand, never in CI).

Needs a separate venv with open_clip_torch and timm (see CONTRIBUTING in README):

    python -m venv /tmp/oc && /tmp/oc/bin/pip install torch==2.14.1 torchvision==0.29.1 open_clip_torch timm
    /tmp/oc/bin/python scripts/make_golden.py

For each tiny config in tests/golden/synthetic.py it builds the OpenCLIP model, loads the
deterministic synthetic weights strictly (so OpenCLIP's own key names and shapes are what the
weights are made from), embeds fixed images and token ids, and records the tensor manifest and
the embeddings. The test suite rebuilds the same weights from the manifest, writes them in
OpenCLIP format, imports them through `echoclip weights import` and must match.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import open_clip
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.golden.synthetic import PREPROCESS_CFG, TINY_CONFIGS, synthetic_images, synthetic_state_dict, text_ids  # noqa: E402


def golden_for(name: str, model_cfg: dict) -> dict:
    model = open_clip.CLIP(**model_cfg).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(synthetic_state_dict(shapes), strict=True)
    size = model_cfg["vision_cfg"]["image_size"]
    with torch.no_grad():
        image = model.encode_image(synthetic_images(3, size))
        text = model.encode_text(text_ids())
    return {
        "model_cfg": model_cfg,
        "preprocess_cfg": PREPROCESS_CFG,
        "shapes": {k: list(v) for k, v in sorted(shapes.items())},
        "n_images": 3,
        "image_embeddings": image.tolist(),
        "text_embeddings": text.tolist(),
    }


def main() -> None:
    out = {
        "source": f"open_clip {open_clip.__version__}, torch {torch.__version__}; scripts/make_golden.py",
        "models": {name: golden_for(name, cfg) for name, cfg in TINY_CONFIGS.items()},
    }
    path = ROOT / "tests" / "golden" / "openclip_tiny.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
