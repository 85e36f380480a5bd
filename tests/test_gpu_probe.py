"""bench/gpu_probe.py, run on a lent GPU right after bench/gpu_check.sh, dry-run on the CPU with
tiny inputs and a tiny model: every stage prints its row and appends it to --out as it goes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_openclip_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("parse, warm", "parse, cold", "parse, warm, without the identity hash", "identity: sha256",
        "JPEG decode (", "JPEG decode fed copies", "prepare (2 clips as one group)", "prepare, host steps alone",
        "model as loaded", "model, batch 4", "model, batch 8", "pipeline end to end",
        "variant", "fp32 again (run-to-run)", "autocast bf16", "autocast fp16", "weights in bf16 (no autocast)")


def test_the_probe_dry_run_on_the_cpu_writes_every_row(tmp_path):
    weights = write_openclip_checkpoint(tmp_path / "tiny", fmt="safetensors")
    out = tmp_path / "probe.md"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "bench/gpu_probe.py", "--device", "cpu", "--weights", str(weights), "--cines", "2",
         "--frames", "6", "--size", "48x64", "--batch-size", "2", "--no-compile", "--pipeline", "2", "--repeats", "2",
         "--precision-study", "2",
         "--cache", str(tmp_path / "cache"), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    longest_first = sorted(ROWS, key=len, reverse=True)
    assert [next(name for name in longest_first if row.startswith(f"| {name}")) for row in rows] == list(ROWS)
    assert "1 host synchronisation(s) per group" in out.read_text()
    assert out.read_text().strip() in done.stdout  # printed as it ran, and kept
