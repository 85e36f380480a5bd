"""Embed once, answer many: detect-devices on files predict-ef has just seen, vs without the cache.

Whole processes, as a user runs them, with full-size random weights (timing only):

1. ``detect-devices FILES --no-cache``  — every command embeds its files (the old behaviour)
2. ``predict-ef FILES``                  — embeds them and fills the cache
3. ``detect-devices FILES``              — frames from the cache, device prompts from the text cache

    python bench/bench_cache.py [--videos 2] [--weights NAME_OR_PATH]

Prints a Markdown table (seconds per run and the speed-up of 3 over 1) and the CPU model.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _machine import cpu_name, timed_process  # noqa: E402
from bench_embed import random_weights  # noqa: E402


def _run(args: list[str], env: dict[str, str]) -> float:
    return timed_process([sys.executable, "-m", "echoclip_cli", *args, "-f", "jsonl", "-q"], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=2, help="copies of pydicom's echo cine to score")
    parser.add_argument("--weights", help="installed weights or an OpenCLIP folder (default: random full-size)")
    args = parser.parse_args()
    from pydicom import examples

    with tempfile.TemporaryDirectory(prefix="echoclip-cache-") as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "ECHOCLIP_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
        weights = args.weights or str(random_weights(tmp_path / "weights"))
        subprocess.run([sys.executable, "-m", "echoclip_cli", "weights", "import", weights, "--name", "bench-random"],
                       env=env, check=True, capture_output=True)
        cine = Path(examples.get_path("ybr_color")).read_bytes()
        files = []
        for i in range(args.videos):
            path = tmp_path / f"cine{i}.dcm"
            path.write_bytes(cine)
            files.append(str(path))
        common = [*files, "-w", "bench-random", "--precision", "fp32"]
        cold = _run(["detect-devices", *common, "--no-cache"], env)
        fill = _run(["predict-ef", *common], env)
        warm = _run(["detect-devices", *common], env)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.videos} cines of 30 frames (15 sampled)\n")
    print("| run | seconds |")
    print("|---|---|")
    print(f"| detect-devices, no cache (every command embeds) | {cold:.1f} |")
    print(f"| predict-ef (embeds, fills the cache) | {fill:.1f} |")
    print(f"| detect-devices after predict-ef (cache) | {warm:.1f} |")
    print(f"\nspeed-up of the second command: {cold / warm:.1f}x")


if __name__ == "__main__":
    main()
