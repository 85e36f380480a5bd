"""What machine a benchmark ran on, for the line it prints (shared by the bench scripts)."""

from __future__ import annotations

import platform
from pathlib import Path

OUT: list[Path] = []  # files every result line is appended to as well (a run cut short keeps them)


def say(line: str) -> None:
    """Print a result line at once and append it to each file of :data:`OUT`."""
    print(line, flush=True)
    for path in OUT:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what Python knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed_process(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one whole process, from start to exit; stops the bench if it fails."""
    import subprocess
    import time

    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd[:8])} …\n{done.stderr[-2000:]}")
    return elapsed
