"""Every CPU path end to end, as whole processes, against the upstream per-video loop, in one run.

    python bench/bench_cpu_paths.py --openclip /work/parity/bin --bundle fullsize \\
        --upstream-python /path/to/openclip-venv/bin/python --avi v*.avi --dicom studies/*/a4c.dcm

For each input kind (AVI, JPEG DICOM) and each round, in turn: the upstream loop
(``bench/upstream_avi_loop.py`` in the OpenCLIP venv), then ``echoclip embed`` with the torch
backend as a user gets it (``--backend auto``: the fastest exact path built on this machine, see
``echoclip weights optimise``), eager torch fp32 (its batches cut into one slice per core, the
default, and with ``ECHOCLIP_CPU_SPLIT=0``: every operation shared by torch's threads) and, where ``echoclip[cpu-fast]`` is installed,
the ONNX backend in fp32 and in int8 — each a fresh process timed from start to exit, so imports, weight loading and decoding
count as they do for a user. One untimed run of each echoclip path comes first (it exports and
checks the ONNX towers on first use, and warms the page cache for everyone). ``embed`` keeps no
frame cache: every run embeds every frame. Prints the CPU model and a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _machine import cpu_name, timed_process  # noqa: E402

HERE = Path(__file__).resolve().parent


def _echoclip(bundle: str, backend: str, precision: str, files: list[str], batch: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "echoclip_cli", "embed", *files, "-w", bundle, "--device", "cpu",
           "--backend", backend, "--precision", precision, "-q", "-f", "jsonl"]
    return cmd + (["--batch-size", str(batch)] if batch else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--openclip", type=Path, required=True, help="OpenCLIP folder (config + .bin) for upstream")
    parser.add_argument("--bundle", default="fullsize", help="the same weights installed for echoclip")
    parser.add_argument("--upstream-python", required=True, help="python of a venv with open_clip_torch + opencv")
    parser.add_argument("--avi", nargs="*", default=[])
    parser.add_argument("--dicom", nargs="*", default=[])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="echoclip --batch-size (default: its own)")
    parser.add_argument("--no-onnx", action="store_true", help="torch paths only")
    args = parser.parse_args()

    import importlib.util

    onnx = not args.no_onnx and all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx"))
    split_off = {**os.environ, "ECHOCLIP_CPU_SPLIT": "0"}  # as before session 5: threads share each operation
    paths = [("echoclip default (--backend auto)", "auto", "auto", None),
             ("echoclip torch eager fp32", "torch", "fp32", None),
             ("echoclip torch eager fp32, batch not split (ECHOCLIP_CPU_SPLIT=0)", "torch", "fp32", split_off)]
    if onnx:
        paths += [("echoclip onnx fp32", "onnx", "fp32", None), ("echoclip onnx int8", "onnx", "int8", None)]
    kinds = [(kind, files) for kind, files in (("AVI", args.avi), ("JPEG DICOM", args.dicom)) if files]
    for _, files in kinds:  # untimed: ONNX export + check on first use, page cache
        for _, backend, precision, env in paths:
            timed_process(_echoclip(args.bundle, backend, precision, files, args.batch_size), env)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for kind, files in kinds:
            upstream = [args.upstream_python, str(HERE / "upstream_avi_loop.py"), str(args.openclip), *files]
            times.setdefault((kind, "upstream loop (OpenCLIP)"), []).append(timed_process(upstream))
            for name, backend, precision, env in paths:
                cmd = _echoclip(args.bundle, backend, precision, files, args.batch_size)
                times.setdefault((kind, name), []).append(timed_process(cmd, env))
    from echoclip_cli.backends.race import fastest_built
    from echoclip_cli.weights import resolve

    auto = fastest_built(resolve(args.bundle, auto_pull=False))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; echoclip python {sys.version.split()[0]}; "
          f"{args.rounds} rounds, whole processes, seconds (median); --backend auto ran "
          f"{' '.join(a for a in auto if a)}\n")
    print("| input | path | seconds per round | median | vs upstream |")
    print("|---|---|---|---|---|")
    for kind, files in kinds:
        base = statistics.median(times[(kind, "upstream loop (OpenCLIP)")])
        for (k, name), values in times.items():
            if k != kind:
                continue
            median = statistics.median(values)
            print(f"| {kind} ×{len(files)} | {name} | {' / '.join(f'{v:.1f}' for v in values)} | {median:.1f} "
                  f"| {base / median:.2f}× |")


if __name__ == "__main__":
    main()
