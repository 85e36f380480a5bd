"""encode_image throughput of echoclip's model against OpenCLIP's, same weights, same run.

Run in a venv that has both echoclip (PYTHONPATH=src) and open_clip_torch + timm:

    PYTHONPATH=src python bench/bench_model.py --batch 20 --iters 3

Builds the full-size EchoCLIP architecture (convnext_base, random weights) in OpenCLIP, copies the
weights into echoclip's model, and times `encode_image` on a batch of 224×224 frames for each
precision, alternating the two implementations so machine noise hits both alike. Prints one
markdown row per (implementation, precision) with frames/s.
"""

from __future__ import annotations

import argparse
import time

import torch
from _machine import cpu_name

from echoclip_cli.device import autocast
from echoclip_cli.model import build_model

MODEL_CFG = {
    "embed_dim": 512,
    "vision_cfg": {"timm_model_name": "convnext_base", "timm_pool": "", "timm_proj": "linear", "image_size": 224},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}




def time_once(fn, images, dtype) -> float:
    start = time.perf_counter()
    with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
        fn(images)
    return time.perf_counter() - start


def main() -> None:
    import open_clip

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()

    reference = open_clip.CLIP(**MODEL_CFG).eval()
    ours = build_model(MODEL_CFG).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    images = torch.randn(args.batch, 3, 224, 224)
    impls = {"echoclip": ours.encode_image, "OpenCLIP 3.3 + timm": reference.encode_image}

    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch}")
    print("| implementation | precision | frames/s |\n|---|---|---|")
    for name, dtype in (("fp32", torch.float32), ("bf16 autocast", torch.bfloat16)):
        times: dict[str, list[float]] = {k: [] for k in impls}
        for fn in impls.values():  # warm-up
            time_once(fn, images, dtype)
        for _ in range(args.iters):
            for impl, fn in impls.items():
                times[impl].append(time_once(fn, images, dtype))
        for impl, ts in times.items():
            print(f"| {impl} | {name} | {args.batch / min(ts):.2f} |")


if __name__ == "__main__":
    main()
