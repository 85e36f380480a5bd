"""Full-size parity check: OpenCLIP convnext_base (EchoCLIP config, random weights) vs echoclip.

Step 1, in a venv with OpenCLIP (torch 2.14.1 + torchvision + open_clip_torch + timm):

    python scripts/parity_fullsize.py make OUTDIR

writes OUTDIR/bin (open_clip_config.json + open_clip_pytorch_model.bin), OUTDIR/safetensors
(open_clip_config.json + open_clip_model.safetensors) and OUTDIR/reference.pt (fixed inputs and
OpenCLIP's fp32 image and text embeddings).

Step 2, in echoclip's own venv (no OpenCLIP):

    python scripts/parity_fullsize.py check OUTDIR

imports both checkpoints with `echoclip weights import`, embeds the same inputs on the CPU in
fp32 and prints the largest relative error per format (the acceptance bound is 1e-4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ECHOCLIP_MODEL_CFG = {
    "embed_dim": 512,
    "vision_cfg": {"timm_model_name": "convnext_base", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "linear", "timm_drop": 0.0, "timm_drop_path": 0.1, "image_size": 224},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}
PREPROCESS_CFG = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def make(out: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(**ECHOCLIP_MODEL_CFG).eval()
    # OpenCLIP initialises layer scale at 1e-6, which would hide most of the trunk: perturb every
    # tensor so each block contributes, as trained weights do.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 0.6)
    state = model.state_dict()
    config = json.dumps({"model_cfg": ECHOCLIP_MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG})
    for fmt in ("bin", "safetensors"):
        (out / fmt).mkdir(parents=True, exist_ok=True)
        (out / fmt / "open_clip_config.json").write_text(config)
    torch.save(state, out / "bin" / "open_clip_pytorch_model.bin")
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "safetensors" / "open_clip_model.safetensors"))
    images = torch.randn(4, 3, 224, 224)
    ids = torch.zeros(3, 77, dtype=torch.long)
    for row, toks in enumerate(([320, 2830, 44602], [6215, 1982], list(range(1000, 1075)))):
        ids[row, : len(toks) + 2] = torch.tensor([49406, *toks, 49407])
    with torch.no_grad():
        ref = {"images": images, "ids": ids, "image": model.encode_image(images), "text": model.encode_text(ids)}
    torch.save(ref, out / "reference.pt")
    print(f"wrote {out} (open_clip {open_clip.__version__}, torch {torch.__version__})")


def check(out: Path) -> None:
    import echoclip_cli

    ref = torch.load(out / "reference.pt", weights_only=True)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ECHOCLIP_HOME": home}
        for fmt in ("bin", "safetensors"):
            name = f"fullsize-{fmt}"
            subprocess.run([sys.executable, "-m", "echoclip_cli", "weights", "import", str(out / fmt), "--name", name],
                           check=True, env=env)
            os.environ["ECHOCLIP_HOME"] = home
            model = echoclip_cli.load_model(name, device="cpu", precision="fp32")
            for kind, ours in (("image", model.encode_image(ref["images"])), ("text", model.encode_text(ref["ids"]))):
                err = float(((ours - ref[kind]).norm(dim=-1) / ref[kind].norm(dim=-1)).max())
                print(f"{fmt:12s} {kind:5s} max relative error {err:.2e}  {'OK' if err < 1e-4 else 'FAIL'}")


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](Path(sys.argv[2]))
