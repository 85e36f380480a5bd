"""Peak memory of `echoclip embed` over many inputs: it must stay flat as the input count grows.

    python bench/bench_memory.py --inputs 10000

Writes ``--inputs`` small synthetic DICOM cines (48×64, 6 frames) into a temporary folder,
installs a tiny random-weight model (convnext_atto) in a temporary weights home, runs
`echoclip embed --dir … --out STORE --format jsonl` in a subprocess for 1/10 of the inputs and
for all of them, and prints each run's peak RSS (ru_maxrss of the child) and wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import write_openclip_checkpoint  # noqa: E402
from tests.media_factory import echo_frames, make_dicom  # noqa: E402


def run(folder: Path, store: Path, env: dict[str, str], workers: int) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "echoclip_cli", "embed", "--dir", str(folder), "-w", "tiny", "--out", str(store),
           "--batch-size", "256", "-q", "--format", "jsonl", "--workers", str(workers)]
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(peak_kib, before) / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=0, help="decode processes (0: inline, the CPU default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="echoclip-mem-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "ECHOCLIP_HOME": str(tmp / "home")}
        subprocess.run([sys.executable, "-m", "echoclip_cli", "weights", "import",
                        str(write_openclip_checkpoint(tmp / "ck")), "--name", "tiny"], env=env, check=True)
        small, full = tmp / "small", tmp / "full"
        small.mkdir()
        full.mkdir()
        for i in range(args.inputs):
            target = small if i < args.inputs // 10 else full
            make_dicom(target / f"v{i:05d}.dcm", echo_frames(6, 48, 64, seed=i % 50), "rgb", seed=i)
        peak_small, t_small = run(small, tmp / "store_small", env, args.workers)
        for path in small.iterdir():
            path.rename(full / path.name)
        peak_full, t_full = run(full, tmp / "store_full", env, args.workers)
    print(f"decode workers: {args.workers} (peak RSS: the largest process, the main one or a worker)")
    print("| inputs | peak RSS (MiB) | wall (s) |\n|---|---|---|")
    print(f"| {args.inputs // 10} | {peak_small:.0f} | {t_small:.0f} |")
    print(f"| {args.inputs} | {peak_full:.0f} | {t_full:.0f} |")


if __name__ == "__main__":
    main()
