"""bench/gpu_check.sh, the script for a lent GPU machine, dry-run on the CPU with a tiny model:
every step prints its rows and a failed step is recorded while the later ones still run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_openclip_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("versions", "info", "pytest-gpu", "embed", "memory", "search")


def _dry_run(tmp_path: Path, weights: Path) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "PRECISION": "fp32", "VIDEOS": "2", "UNIQUE": "1", "BATCH": "8",
           "WORKERS": "1", "ROWS": "2000", "NO_WHEELS": "1", "WEIGHTS": str(weights), "OUT": str(out),
           "CACHE": str(tmp_path / "cache"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    return done, out


def _table_rows(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]


@pytest.mark.slow
def test_dry_run_prints_every_step_and_exits_0(tmp_path):
    done, out = _dry_run(tmp_path, write_openclip_checkpoint(tmp_path / "tiny", fmt="safetensors"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    assert [line.split(":")[0] for line in summary.splitlines()] == [f"## {step}" for step in STEPS]
    assert all(": ok (" in line for line in summary.splitlines())
    embed = _table_rows(out / "embed.txt")
    assert [row.split(" | ")[1].split(" (")[0] for row in embed] == ["workers", "device"]
    memory = _table_rows(out / "memory.txt")  # batch sizes BATCH/4, BATCH, 2 BATCH, then the largest again
    assert [row.split(" | ")[0] for row in memory] == ["| 2", "| 8", "| 16", "| 16"]
    assert len(_table_rows(out / "search.txt")) == 4
    gpu_tests = (out / "pytest-gpu.txt").read_text()
    assert " skipped" in gpu_tests and " failed" not in gpu_tests and " error" not in gpu_tests  # skipped on a CPU
    for step in STEPS:
        assert (out / f"{step}.txt").read_text() in done.stdout  # shown as it ran, and kept


@pytest.mark.slow
def test_a_failed_step_is_recorded_and_the_later_ones_still_run(tmp_path):
    done, out = _dry_run(tmp_path, tmp_path / "no-such-weights")
    assert done.returncode == 1
    summary = (out / "summary.txt").read_text().splitlines()
    failed = [line.split(":")[0].removeprefix("## ") for line in summary if "FAILED: exit" in line]
    assert failed == ["embed", "memory"]
    assert "## search: ok" in summary[-1] and "# 2 step(s) failed" in done.stdout
