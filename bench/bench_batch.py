"""Frames/s of the full-size image tower by batch size on this CPU (echoclip's model, random
weights, fp32 and bf16 autocast): the data behind the CPU default batch size.

    python bench/bench_batch.py [--sizes 8 16 20 32 64] [--seconds 20]

Each size runs for about ``--seconds`` after one warm-up batch; sizes are interleaved over two
rounds so drift on a shared machine hits all of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _machine import cpu_name  # noqa: E402
from bench_embed import MODEL_CFG  # noqa: E402

from echoclip_cli.device import autocast  # noqa: E402
from echoclip_cli.model import build_model  # noqa: E402


def rate(model: torch.nn.Module, batch: int, seconds: float, dtype: torch.dtype) -> float:
    images = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
        model.encode_image(images)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.encode_image(images)
            done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 20, 32, 64])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(MODEL_CFG).eval()
    dtypes = [torch.float32, *([torch.bfloat16] if args.bf16 else [])]
    results: dict[tuple[int, torch.dtype], list[float]] = {}
    for _ in range(2):
        for dtype in dtypes:
            for size in args.sizes:
                results.setdefault((size, dtype), []).append(rate(model, size, args.seconds / 2, dtype))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| batch | precision | frames/s (two rounds) |")
    print("|---|---|---|")
    for (size, dtype), values in results.items():
        print(f"| {size} | {str(dtype).split('.')[-1]} | {' / '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
