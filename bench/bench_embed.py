"""End-to-end embedding throughput: echoclip's pipeline against upstream's per-video loop, same run.

    python bench/bench_embed.py --videos 6 --batch-size 20            # CPU, builds its own inputs
    python bench/bench_embed.py --videos 640 --unique 24 --workers 15 --device cuda --batch-size 256 \
        --jpeg-decode workers,device --cache /tmp/echoclip-gpu-cache
    python bench/bench_embed.py ... --jpeg-decode device --sweep-batch 64,256,512   # GPU memory by batch size

Inputs are synthetic JPEG Baseline DICOM cines of realistic size (600×800, 60 frames, B-mode-like
speckle in a sector, burned-in text) written with pydicom + Pillow. Three numbers, all in frames
embedded per second with the same weights, precision and batch size:

- **upstream loop**: per video, decode every frame (pydicom), per-frame crop/zoom/resize with
  OpenCV and ToTensor/normalise, then the model on that video's 20 frames (one call per video);
- **echoclip pipeline**: `embed_videos` (only the needed frames decoded, batches packed across
  videos, decode overlapped with compute), timed from its first batch to its last: starting the
  decode processes and filling the first batch are a one-off per run, shown apart ("first batch");
- **model only**: `encode_image` on a ready batch of the same size — the ceiling, timed for as
  many frames (at most ~5 s of them) just before and just after each pipeline run (the mean of the
  two), so drift on shared cores hits both.

Each pipeline row names its decode workers and where JPEG frames were decoded (`workers`: CPU
processes; `device`: nvJPEG on the GPU, or torchvision/Pillow in the main process on a CPU) with
how many inputs each decoder took, the peak GPU memory of the run, and the worst per-video cosine
against the first row (decoders may differ by a grey level).

`--sweep-batch 64,256,512` prints GPU memory by batch size instead: one row per batch size over
all the inputs, then the largest batch over a quarter of them (the peak should follow the batch
size, not the number of inputs), all in one process with the weights loaded once.

`--unique N` writes N distinct cines; the other inputs repeat them. `--cache DIR` keeps the cines
and the weights in DIR, so a second run (another step of bench/gpu_check.sh, or the same step
again) starts at once. The upstream loop runs on `--upstream-videos` of the inputs.

Weights: `--weights NAME|PATH`, else a full-size convnext_base with random weights built here.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_name

import echoclip_cli
from echoclip_cli.pipeline import embed_videos

MODEL_CFG = {
    "embed_dim": 512,
    "vision_cfg": {"timm_model_name": "convnext_base", "timm_pool": "", "timm_proj": "linear", "image_size": 224},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}


def random_weights(folder: Path) -> Path:
    """An OpenCLIP-format full-size checkpoint with random weights (timing only)."""
    from echoclip_cli.model import build_model

    torch.manual_seed(0)
    model = build_model(MODEL_CFG)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.02 if p.ndim > 1 else 0.1) + (1.0 if name.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_final.weight")) else 0.0))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG}))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def echo_like_frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    angle = np.arctan2(x - w / 2, y + 20)
    radius = np.hypot(x - w / 2, y + 20)
    sector = (np.abs(angle) < 0.75) & (radius < h * 0.95)
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        speckle = rng.gamma(2.0, 30.0, (h, w)) * (0.6 + 0.4 * np.sin(radius / 25 + t / 5))
        frame = np.clip(speckle, 0, 255).astype(np.uint8) * sector
        frames[t] = frame[..., None]
        frames[t, 10:30, 20:220] = 230  # burned-in text band
    return frames


def write_jpeg_dicom(path: Path, frames: np.ndarray) -> None:
    import io

    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        JPEGBaseline8Bit,
        UltrasoundMultiFrameImageStorage,
        generate_uid,
    )

    encoded = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=90)
        encoded.append(buf.getvalue())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 33.3
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)



def cached_weights(cache: Path) -> Path:
    """The random full-size checkpoint under ``cache``, built on the first call only."""
    folder = cache / "weights-convnext_base-random"
    if not (folder / "open_clip_model.safetensors").exists():
        partial = cache / f".weights-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        random_weights(partial)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)  # whole or absent: a run killed half-way leaves no half checkpoint
    return folder


def _write_cine(index: int, path: Path, frames: int) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    write_jpeg_dicom(partial, echo_like_frames(frames, 600, 800, index))
    os.replace(partial, path)


def cached_cines(folder: Path, unique: int, frames: int) -> list[Path]:
    """``unique`` distinct cines in ``folder``; those missing are written by one process per core.

    Forked before this process runs any torch operation (the children use numpy, Pillow and
    pydicom only)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"cine{i:04d}-600x800x{frames}.dcm" for i in range(unique)]
    missing = [i for i, path in enumerate(paths) if not path.exists()]
    if missing:
        processes = min(len(missing), os.cpu_count() or 1)
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_write_cine, missing, [paths[i] for i in missing], [frames] * len(missing)))
    return paths


def upstream_loop(model, files: list[Path]) -> int:
    """Per video: decode all frames, per-frame OpenCV crop/zoom/resize + normalise, one model call."""
    import cv2
    import pydicom

    cfg = model.preprocess
    mean, std = np.array(cfg.mean, np.float32), np.array(cfg.std, np.float32)
    done = 0
    for path in files:
        frames = pydicom.dcmread(path).pixel_array  # every frame, RGB
        tensors = []
        for frame in frames[0:40:2]:
            frame = np.ascontiguousarray(frame[..., ::-1])  # OpenCV's BGR
            h, w = frame.shape[:2]
            side = min(h, w)
            y0, x0 = (h - side) // 2, (w - side) // 2
            cut = int(side * cfg.zoom)
            crop = frame[y0 + cut : y0 + side - cut, x0 + cut : x0 + side - cut]
            crop = cv2.resize(crop, (cfg.image_size, cfg.image_size), interpolation=cv2.INTER_CUBIC)
            tensors.append(torch.from_numpy(((crop / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1)))
        model.encode_image(torch.stack(tensors))
        done += len(tensors)
    return done


@dataclass
class Run:
    """One timed pass of the pipeline over the inputs."""

    results: list
    rate: float  # frames/s from the first batch embedded to the last
    first_batch_s: float  # from the call to the first batch embedded: decode processes start, first batch fills
    peak_mib: float  # GPU memory, allocated and held by the caching allocator (nan on a CPU)
    reserved_mib: float


def timed_pipeline(model, files: list[Path], *, batch_size: int, workers: int, decode: str,
                   sync: Callable[[], None]) -> Run:
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(model.device)
    marks: list[tuple[float, int]] = []  # (time, frames embedded so far) after each batch
    done = 0

    def batch_done(n: int) -> None:
        nonlocal done
        done += n
        marks.append((time.perf_counter(), done))

    start = time.perf_counter()
    results = list(embed_videos(files, model, batch_size=batch_size, workers=workers, jpeg_decode=decode,
                                on_frames=batch_done))
    sync()
    end = time.perf_counter()
    first_t, first_n = marks[0] if marks else (start, 0)
    if len(marks) > 1:
        rate = (done - first_n) / (end - first_t)
    else:  # a single batch: nothing to time after it
        rate = done / (end - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated(model.device) / 2**20
        reserved = torch.cuda.max_memory_reserved(model.device) / 2**20
    else:
        peak = reserved = float("nan")
    return Run(results, rate, first_t - start, peak, reserved)


def decoders(results: list) -> str:
    """How many inputs each decoder took, e.g. "nvjpeg 638, pylibjpeg 2": an input that fell back
    from the device to the CPU shows as another decoder. (Where the pipeline reports its own
    fallback count, print it beside this.)"""
    counts = Counter(str(r.meta.get("decoder")) for r in results if r.ok)
    failed = sum(not r.ok for r in results)
    text = ", ".join(f"{name} {n}" for name, n in counts.most_common())
    return text + (f", {failed} failed" if failed else "")


def mib(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"  # nan on a CPU


def min_cosine(vectors: dict[str, np.ndarray], first: dict[str, np.ndarray]) -> float:
    return min(float(v @ first[k] / np.linalg.norm(v) / np.linalg.norm(first[k])) for k, v in vectors.items())


def compare(args, model, files: list[Path], sync: Callable[[], None], label: str) -> None:
    """The main table: upstream loop, then the pipeline for each decode mode and worker count."""
    upstream_files = files[: max(1, min(args.upstream_videos, len(files)))]
    upstream_loop(model, files[:1])  # warm-up
    sync()
    start = time.perf_counter()
    up = upstream_loop(model, upstream_files) / (time.perf_counter() - start)

    batch = torch.randn(args.batch_size, 3, 224, 224, device=model.device)  # already on the device
    model.encode_image(batch)
    n_frames = sum(min(len(range(0, 40, 2)), (args.frames + 1) // 2) for _ in files)
    reps = max(1, n_frames // args.batch_size)

    def model_only() -> float:
        """The ceiling, timed next to each pipeline run (shared cores drift between runs): as many
        frames as the run, or fewer batches where those take more than 5 s (a CPU dry run)."""
        sync()
        start = time.perf_counter()
        done = 0
        while done < reps and (done < 2 or time.perf_counter() - start < 5.0):
            model.encode_image(batch)
            done += 1
            if done == 2:
                sync()  # the time check above sees finished work, not queued kernels
        sync()
        return done * args.batch_size / (time.perf_counter() - start)

    print(f"{label}; upstream loop on {len(upstream_files)} of them", flush=True)
    print("| decode workers | JPEG decode (inputs per decoder) | upstream loop (frames/s) | echoclip pipeline "
          "(frames/s) | first batch (s) | model only (frames/s) | pipeline / upstream | pipeline / model "
          "| peak GPU MiB | min cosine vs row 1 |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    first: dict[str, np.ndarray] = {}
    for decode in args.jpeg_decode.split(","):
        list(embed_videos(files[:1], model, batch_size=args.batch_size, workers=0, jpeg_decode=decode))  # warm-up
        for workers in (int(w) for w in args.workers.split(",")):
            before = model_only()
            run = timed_pipeline(model, files, batch_size=args.batch_size, workers=workers, decode=decode, sync=sync)
            ceiling = (before + model_only()) / 2
            vectors = {r.source: r.embedding for r in run.results if r.ok}
            first = first or vectors
            print(f"| {workers} | {decode} ({decoders(run.results)}) | {up:.2f} | {run.rate:.2f} "
                  f"| {run.first_batch_s:.1f} | {ceiling:.2f} | {run.rate / up:.2f}x | {run.rate / ceiling:.1%} "
                  f"| {mib(run.peak_mib)} | {min_cosine(vectors, first):.6f} |", flush=True)


def sweep(args, model, files: list[Path], sync: Callable[[], None], label: str) -> None:
    """GPU memory by batch size: each batch size over every input, then the largest over a quarter."""
    sizes = [int(b) for b in args.sweep_batch.split(",")]
    workers = int(args.workers.split(",")[0])
    decode = args.jpeg_decode.split(",")[0]
    weights_mib = torch.cuda.memory_allocated(model.device) / 2**20 if model.device.type == "cuda" else float("nan")
    print(f"{label}; {workers} decode workers, JPEG decode {decode}; the weights hold {mib(weights_mib)} MiB",
          flush=True)
    print("| batch | inputs | echoclip pipeline (frames/s) | first batch (s) | peak allocated MiB "
          "| peak reserved MiB | JPEG decode (inputs per decoder) |")
    print("|---|---|---|---|---|---|---|", flush=True)
    list(embed_videos(files[:1], model, batch_size=sizes[0], workers=0, jpeg_decode=decode))  # warm-up
    rows = [(size, files) for size in sizes] + [(max(sizes), files[: max(1, len(files) // 4)])]
    for size, inputs in rows:
        run = timed_pipeline(model, inputs, batch_size=size, workers=workers, decode=decode, sync=sync)
        print(f"| {size} | {len(inputs)} | {run.rate:.2f} | {run.first_batch_s:.1f} | {mib(run.peak_mib)} "
              f"| {mib(run.reserved_mib)} | {decode} ({decoders(run.results)}) |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--unique", type=int, default=None, help="distinct cines written (others repeat them)")
    parser.add_argument("--upstream-videos", type=int, default=16, help="videos the (slow) upstream loop embeds")
    parser.add_argument("--workers", default="0", help="comma-separated decode-process counts to compare")
    parser.add_argument("--jpeg-decode", default="workers", help="comma-separated: workers, device")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--cache", default=None, help="folder that keeps the cines and weights between runs")
    parser.add_argument("--sweep-batch", default=None, help="comma-separated batch sizes: GPU memory table")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="echoclip-bench-") as tmp:
        root = Path(args.cache) if args.cache else Path(tmp)
        unique = min(args.unique or args.videos, args.videos)
        distinct = cached_cines(root / f"cines-{args.frames}", unique, args.frames)  # before any torch work
        files = [distinct[i % unique] for i in range(args.videos)]
        weights = args.weights or str(cached_weights(root))
        model = echoclip_cli.load_model(weights, device=args.device, precision=args.precision)
        cuda = model.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        device = torch.cuda.get_device_name(model.device) if cuda else cpu_name()
        batch = "" if args.sweep_batch else f"batch {args.batch_size}, "
        label = (f"# {device}, {torch.get_num_threads()} threads, {model.precision}, {batch}"
                 f"{args.videos} DICOM cines 600x800x{args.frames} (JPEG Baseline; {unique} distinct)")
        if args.sweep_batch:
            sweep(args, model, files, sync, label)
        else:
            compare(args, model, files, sync, label)


if __name__ == "__main__":
    main()
