"""int8 parity on a CPU without VNNI, measured on a CPU with it: ONNX Runtime under valgrind.

x86 CPUs without VNNI (AVX2-only ones, AVX-512 ones before Cascade Lake) run ONNX Runtime's
uint8 x int8 MatMuls with VPMADDUBSW, which adds pairs of products into int16 and saturates; VNNI
(VPDPBUSD) accumulates in int32 and does not. Parity measured on a VNNI CPU therefore says nothing
about such CPUs. valgrind's CPU has AVX2 and no AVX-512 or VNNI, so ONNX Runtime run under it
picks its AVX2 kernels — and valgrind executes them instruction for instruction (slowly: ~50 s a
frame for the full-size tower), so the numbers are theirs.

For each int8 tower of the bundle (8-bit weights; 7-bit weights, which keep a pair sum below 2^15)
this prints, per frame of pydicom's echo cine and its mirror (the backend check's clips): cosine
against torch fp32 natively, and under valgrind::

    ECHOCLIP_HOME=/work/parity/home python bench/int8_without_vnni.py fullsize --frames 8

Needs valgrind (Debian: valgrind), echoclip[cpu-fast], and the bundle's ONNX export (any
``--backend onnx`` run or ``echoclip weights optimise`` makes it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import cpu_name  # noqa: E402

# What OnnxTower does (one session, one thread, a run per frame), without importing echoclip_cli:
# under valgrind importing torch alone would take minutes.
RUN = """
import sys, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.log_severity_level = 3
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.concatenate([s.run(None, {"images": x[i:i + 1]})[0] for i in range(len(x))]))
"""


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--frames", type=int, default=8, help="frames, spread over both clips (valgrind: ~50 s each)")
    args = parser.parse_args()

    from echoclip_cli import load_model
    from echoclip_cli.backends import measure
    from echoclip_cli.backends import onnx as onnx_backend
    from echoclip_cli.device import cpu_kind
    from echoclip_cli.preprocess import to_model_input

    model = load_model(args.bundle, device="cpu", precision="fp32", backend="torch")
    clips = measure.check_clips(model.preprocess)
    images = torch.cat([to_model_input(c, model.preprocess, device=torch.device("cpu")) for c in clips])
    pick = np.linspace(0, len(images) - 1, args.frames).round().astype(int)
    images = images[pick].contiguous()
    reference = model.encode_image(images).numpy()
    print(f"CPU: {cpu_name()}, flags {cpu_kind().split('[')[-1].rstrip(']')}")
    print(f"weights {args.bundle}: {len(images)} frames of the check's clips; this CPU runs "
          f"{onnx_backend.int8_weight_bits()}-bit int8 weights")
    print("| int8 weights | where | frame cosine vs torch fp32 (min / mean) | seconds |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", images.numpy())
        script = Path(tmp) / "run.py"
        script.write_text(RUN)
        for bits in (8, 7):
            tower = onnx_backend.model_file(model.bundle, "int8", bits)
            if not tower.is_file():
                sys.exit(f"{tower} is missing: run echoclip weights optimise {args.bundle} first")
            for where, prefix in (("this CPU", []), ("valgrind: AVX2, no VNNI", ["valgrind", "--tool=none", "-q"])):
                start = time.perf_counter()
                subprocess.run([*prefix, sys.executable, str(script), str(tower), f"{tmp}/x.npy", f"{tmp}/y.npy"],
                               check=True)
                c = cosines(np.load(f"{tmp}/y.npy"), reference)
                print(f"| {bits}-bit | {where} | {c.min():.5f} / {c.mean():.5f} | {time.perf_counter() - start:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
