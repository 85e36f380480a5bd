"""Time the preparation stage alone (crop, motion mask, resize) of JPEG Baseline DICOM cines on
the CPU backend: the worker path and the device path run on the CPU.

Writes ``--videos`` synthetic 40-frame JPEG cines (``--size`` pixels, a moving sector with burned-in
overlays, as the tests make them) and prints markdown rows:

* **CPU path, inline** — ``load_clip`` per file (Pillow decode + prepare), as the workers do it;
* **device path on the CPU** — :class:`~echoclip_cli.pipeline.ClipSource` with ``jpeg_device=cpu``
  (Pillow decode in this process, clips of one size prepared together);
* **prepare only** — the frames decoded beforehand, then prepared clip by clip
  (``finish_codestreams``) and, where this version has it, as one group
  (``finish_codestream_group``): the work the device's preparation thread does per batch.

It also prints host synchronisations per batch and fallbacks (clips given back to the CPU
path), read from the run's :class:`~echoclip_cli.pipeline.DeviceReport` where this version has one,
and the **host steps** of preparing one group, in ms per clip (min / median of ``--repeats``):
the steps that run on the host whatever the device — colour check and classification verdicts,
the 3×3 opening where it takes host grids, connected components, hull, polygon, mask fraction —
timed by wrapping the functions that do them in this version (the device's tensor work, and the
Python that queues it, is not counted; neither is stacking the masks, the same in every version).

    python bench/bench_prep.py [--videos 16] [--size 480x640] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.media_factory makes the cines

from _machine import cpu_name

from echoclip_cli.media import load_clip
from echoclip_cli.media import clip as clip_module
from echoclip_cli.media.jpeg_device import decode_jpegs
from echoclip_cli.pipeline import ClipSource
from echoclip_cli.preprocess_config import PreprocessConfig
from tests.media_factory import echo_frames, make_dicom

CPU = torch.device("cpu")


# (module, function) pairs that run on the host whatever the device, in any version of the code;
# the 3×3 opening counts only where it is given host (numpy) grids.
HOST_STEPS = [("echoclip_cli.media.clip", "mostly_grey"), ("echoclip_cli.media.colour", "mostly_grey_counts"),
              ("echoclip_cli.media.classify", "classify"), ("echoclip_cli.media.classify", "classify_counts"),
              ("echoclip_cli.preprocess", "_open3"), ("echoclip_cli.preprocess", "largest_components"),
              ("echoclip_cli.preprocess", "_sector_of")]


def host_step_ms(group, items, decoded, cfg, repeats: int) -> tuple[float, float]:
    """(min, median) ms per clip spent in HOST_STEPS while preparing one group."""
    import importlib
    import statistics

    spent = [0.0]
    saved = []
    for module_name, name in HOST_STEPS:
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            continue
        fn = getattr(module, name)

        def timed(*args, _fn=fn, _name=name, **kwargs):
            if _name == "_open3" and isinstance(args[0], torch.Tensor):
                return _fn(*args, **kwargs)  # grids still on the device: the device's work
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        saved.append((module, name, fn))
        setattr(module, name, timed)
    users = [sys.modules[m] for m in ("echoclip_cli.media.clip",)]  # names imported with from-imports
    for user in users:
        for module, name, _ in saved:
            if getattr(user, name, None) is not None and name in ("mostly_grey", "mostly_grey_counts"):
                setattr(user, name, getattr(module, name))
    runs = []
    try:
        for _ in range(repeats):
            spent[0] = 0.0
            group(items, decoded, cfg, "pillow")
            runs.append(1000 * spent[0] / len(items))
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)
            for user in users:
                if name in ("mostly_grey", "mostly_grey_counts") and hasattr(user, name):
                    setattr(user, name, fn)
    return min(runs), statistics.median(runs)


def best_of(repeats: int, run) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--size", default="480x640", help="rows x columns")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group", type=int, default=4, help="clips per device batch (group_frames)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core, as one worker or the preparation thread has
    rows, cols = (int(v) for v in args.size.split("x"))
    cfg = PreprocessConfig()
    report_type = getattr(sys.modules["echoclip_cli.pipeline"], "DeviceReport", None)
    group = getattr(clip_module, "finish_codestream_group", None)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(make_dicom(Path(tmp) / f"{i}.dcm", echo_frames(40, rows, cols, seed=i), "jpeg", seed=i))
                 for i in range(args.videos)]
        frames = args.videos * cfg.frames
        print(f"{cpu_name()}, {os.cpu_count()} CPUs, torch threads 1; {args.videos} JPEG cines {cols}×{rows}, "
              f"{cfg.frames} frames each; best of {args.repeats}")
        print()
        print("| stage | frames/s |")
        print("|---|---|")
        seconds = best_of(args.repeats, lambda: [load_clip(p, cfg) for p in paths])
        print(f"| CPU path inline (decode + prepare) | {frames / seconds:.0f} |")
        reports = []

        def device_path() -> None:
            kw = {"report": report_type()} if report_type else {}
            out = list(ClipSource(paths, cfg, jpeg_device=CPU, group_frames=cfg.frames * args.group, **kw))
            assert len(out) == args.videos and all(o.frames is not None for o in out)
            reports.append(kw.get("report"))

        seconds = best_of(args.repeats, device_path)
        print(f"| device path on the CPU (decode + prepare) | {frames / seconds:.0f} |")
        items = [clip_module.load_codestreams(p, cfg) for p in paths]
        decoded = torch.stack([torch.stack(decode_jpegs(item.streams, CPU)) for item in items])
        seconds = best_of(args.repeats, lambda: [clip_module.finish_codestreams(item, clip, cfg, "pillow")
                                                 for item, clip in zip(items, decoded, strict=True)])
        print(f"| prepare only, clip by clip | {frames / seconds:.0f} |")
        if group is not None:
            seconds = best_of(args.repeats, lambda: group(items, decoded, cfg, "pillow"))
            print(f"| prepare only, one group of {args.videos} | {frames / seconds:.0f} |")
            low, mid = host_step_ms(group, items, decoded, cfg, args.repeats)
            print(f"\nhost steps of one group's preparation: {low:.2f} / {mid:.2f} ms per clip (min / median)")
        report = reports[-1]
        print()
        if report is None:
            print("host synchronisations: not counted in this version")
        else:
            print(f"batches {report.batches}, clips prepared {report.prepared}, host synchronisations per batch "
                  f"{report.host_syncs / max(1, report.batches):.0f} (on CUDA one more: the stream wait before "
                  f"decoding), fallbacks {report.fallbacks} {report.given_back or ''}")


if __name__ == "__main__":
    main()
