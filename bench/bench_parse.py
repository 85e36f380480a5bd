"""Time the parse of one JPEG Baseline DICOM cine, warm (the file in the page cache), in one process:
what a decode worker does per file before the device decodes (``load_codestreams``: read the
file, its identity, the header, cut the sampled codestreams).

Makes a synthetic cine (``--size``, ``--frames``, as bench/gpu_check.sh's are 600×800×60) in a
temporary folder unless ``--file`` names one, then prints per-call times in ms (min / median of
``--repeats``):

* ``load_codestreams`` as it is;
* the same with the identity hash replaced by a constant (the parse alone);
* sha256 of the file's bytes already in memory, and read from disk (``files.sha256_file``).

    python bench/bench_parse.py [--size 600x800] [--frames 60] [--repeats 200] [--file F.dcm]

To compare two versions in one run, point PYTHONPATH at each ``src`` in turn with one ``--file``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.media_factory makes the cine

from _machine import cpu_name

from echoclip_cli.media import clip as clip_module
from echoclip_cli.preprocess_config import PreprocessConfig


def times_ms(repeats: int, run) -> tuple[float, float]:
    run()  # warm: page cache, imports, lazy tables
    seen = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seen.append(1000 * (time.perf_counter() - start))
    return min(seen), statistics.median(seen)


def make_cine(folder: Path, rows: int, cols: int, frames: int) -> Path:
    from tests.media_factory import echo_frames, make_dicom

    return make_dicom(folder / "cine.dcm", echo_frames(frames, rows, cols, seed=1), "jpeg", seed=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="600x800", help="rows x columns")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--file", help="a JPEG Baseline DICOM cine to parse (default: make one)")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.size.split("x"))
    cfg = PreprocessConfig()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.file) if args.file else make_cine(Path(tmp), rows, cols, args.frames)
        data = path.read_bytes()
        item = clip_module.load_codestreams(path, cfg)
        assert item is not None and len(item.streams) == min(cfg.frames, args.frames)
        print(f"{cpu_name()}; {path.stat().st_size / 1e6:.1f} MB, {len(item.streams)} codestreams sampled; "
              f"ms per call, min / median of {args.repeats}")
        rows_out = [("load_codestreams", lambda: clip_module.load_codestreams(path, cfg))]
        constant = lambda *_a, **_k: "0" * 64  # noqa: E731
        from echoclip_cli.media import dicom as dicom_module

        saved = [(module, name, getattr(module, name)) for module in (clip_module, dicom_module)
                 for name in ("sha256_file", "sha256_bytes") if hasattr(module, name)]

        def unhashed() -> None:
            for module, name, _ in saved:
                setattr(module, name, constant)
            try:
                clip_module.load_codestreams(path, cfg)
            finally:
                for module, name, fn in saved:
                    setattr(module, name, fn)

        rows_out.append(("load_codestreams without the identity hash", unhashed))
        rows_out.append(("sha256 of the bytes in memory", lambda: hashlib.sha256(data).hexdigest()))
        from echoclip_cli.files import sha256_file

        rows_out.append(("sha256_file (read + hash)", lambda: sha256_file(path)))
        print("| step | min ms | median ms |\n|---|---|---|")
        for name, run in rows_out:
            low, mid = times_ms(args.repeats, run)
            print(f"| {name} | {low:.2f} | {mid:.2f} |", flush=True)


if __name__ == "__main__":
    main()
