"""Full-size PromptCAM parity: OpenCLIP convnext_base (EchoCLIP config, random weights) vs echoclip.

Step 1, in a venv with OpenCLIP (torch 2.14.1 + torchvision + open_clip_torch + timm):

    python scripts/parity_promptcam.py make OUTDIR

writes OUTDIR/bin (open_clip_config.json + open_clip_pytorch_model.bin) and OUTDIR/reference.pt:
fixed images and token ids, and the PromptCAM maps computed here from the description in
shared/docs/ECHO.md ("PromptCAM") with OpenCLIP's own model: a forward hook on its trunk's last
block (``visual.trunk.stages[3].blocks[2]``), autograd through OpenCLIP's tower, OpenCLIP's text
tower for the targets. Nothing of echoclip is imported on this side.

Step 2, in echoclip's own venv (no OpenCLIP):

    python scripts/parity_promptcam.py check OUTDIR

imports the checkpoint with `echoclip weights import`, computes the same maps with
``echoclip_cli.promptcam`` (targets from echoclip's text tower on the same ids) on the CPU in
fp32, and prints the largest |Δ| relative to each map's maximum, per image and prompt (the
acceptance bound is 1e-5), and the bf16 maps' difference for the record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_fullsize import ECHOCLIP_MODEL_CFG, PREPROCESS_CFG  # noqa: E402  (the one full-size config)

PROMPTS = ("ECHO DENSITY IN RIGHT VENTRICLE SUGGESTIVE OF CATHETER, PACER LEAD, OR ICD LEAD. ",
           "THE LEFT VENTRICULAR EJECTION FRACTION IS ESTIMATED TO BE 35% ",
           "A BIOPROSTHETIC STENT-VALVE IS PRESENT IN THE AORTIC POSITION. ")
N_IMAGES = 3
BOUND = 1e-5


def _openclip_maps(model, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PromptCAM per ECHO.md on OpenCLIP's model: each image with each target, one at a time."""
    seen = {}
    block = model.visual.trunk.stages[3].blocks[2]
    handle = block.register_forward_hook(lambda module, inputs, output: seen.__setitem__("a", output))
    for p in model.parameters():
        p.requires_grad_(False)
    raw, cam = [], []
    try:
        for image in images:
            for target in targets:
                x = image[None].clone().requires_grad_(True)  # so that the graph reaches the hooked block
                e = model.visual(x)  # 1,512 unnormalised
                a = seen["a"]  # 1,1024,7,7
                (grad,) = torch.autograd.grad(e, a, grad_outputs=target[None])
                r = F.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)).detach()  # 1,7,7
                raw.append(r[0])
                cam.append(F.interpolate(r[:, None], size=(224, 224), mode="bicubic", align_corners=False)[0, 0])
    finally:
        handle.remove()
    return torch.stack(raw), torch.stack(cam)


def make(out: Path) -> None:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(**ECHOCLIP_MODEL_CFG).eval()
    with torch.no_grad():  # layer scale starts at 1e-6 in OpenCLIP, which would hide most of the trunk
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 0.6)
    (out / "bin").mkdir(parents=True, exist_ok=True)
    (out / "bin" / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": ECHOCLIP_MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}))
    torch.save(model.state_dict(), out / "bin" / "open_clip_pytorch_model.bin")
    images = torch.randn(N_IMAGES, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ids = open_clip.get_tokenizer("convnext_base")(list(PROMPTS))
    with torch.no_grad():
        targets = F.normalize(model.encode_text(ids), dim=-1)
    raw, cam = _openclip_maps(model, images, targets)
    torch.save({"images": images, "ids": ids, "raw": raw, "cam": cam}, out / "reference.pt")
    print(f"wrote {out} (open_clip {open_clip.__version__}, torch {torch.__version__}); "
          f"map maxima {[round(float(m), 4) for m in raw.amax(dim=(1, 2))]}")


def check(out: Path) -> None:
    import echoclip_cli
    from echoclip_cli.promptcam import prompt_cam

    ref = torch.load(out / "reference.pt", weights_only=True)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ECHOCLIP_HOME": home}
        subprocess.run([sys.executable, "-m", "echoclip_cli", "weights", "import", str(out / "bin"), "--name",
                        "fullsize"], check=True, env=env)
        os.environ["ECHOCLIP_HOME"] = home
        model = echoclip_cli.load_model("fullsize", device="cpu", precision="fp32")
        targets = F.normalize(model.encode_text(ref["ids"]), dim=-1)
        images = ref["images"].repeat_interleave(len(PROMPTS), dim=0)
        tiled = targets.repeat(N_IMAGES, 1)
        ours = prompt_cam(model.visual, images, tiled)
        half = prompt_cam(model.visual, images, tiled, dtype=torch.bfloat16)
    worst = 0.0
    for k in range(images.shape[0]):
        rel = {name: float((torch.from_numpy(mine[k]) - ref[name][k]).abs().max() / ref[name][k].max())
               for name, mine in (("raw", ours.raw), ("cam", ours.cam))}
        bf16 = float(abs(half.cam[k] - ours.cam[k]).max() / ours.cam[k].max())
        worst = max(worst, *rel.values())
        print(f"image {k // len(PROMPTS)} prompt {k % len(PROMPTS)}: 7x7 {rel['raw']:.2e}  224x224 {rel['cam']:.2e}  "
              f"(bf16 vs fp32 {bf16:.2e})")
    print(f"max relative |diff| {worst:.2e}  {'OK' if worst <= BOUND else 'FAIL'} (bound {BOUND:g})")


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](Path(sys.argv[2]))
