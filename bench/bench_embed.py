"""End-to-end embedding throughput: echoclip's pipeline against upstream's per-video loop, same run.

    python bench/bench_embed.py --videos 6 --batch-size 20            # CPU, builds its own inputs
    python bench/bench_embed.py --videos 640 --unique 32 --workers 15 --device cuda --batch-size 256 \
        --jpeg-decode workers,device

Inputs are synthetic JPEG Baseline DICOM cines of realistic size (600×800, 60 frames, B-mode-like
speckle in a sector, burned-in text) written with pydicom + Pillow, and AVI copies. Three numbers,
all in frames embedded per second with the same weights, precision and batch size:

- **upstream loop**: per video, decode every frame (pydicom), per-frame crop/zoom/resize with
  OpenCV and ToTensor/normalise, then the model on that video's 20 frames (one call per video);
- **echoclip pipeline**: `embed_videos` (only the needed frames decoded, batches packed across
  videos, decode overlapped with compute);
- **model only**: `encode_image` on a ready batch of the same size — the ceiling, timed for as
  many frames just before and just after each pipeline run (the mean of the two), so drift on
  shared cores hits both.

Each pipeline row names its decode workers and where JPEG frames were decoded (`workers`: CPU
processes; `device`: nvJPEG on the GPU, or torchvision/Pillow in the main process on a CPU), the
peak GPU memory of the run, and the worst per-video cosine against the first row (decoders may
differ by a grey level). `--unique N` writes N distinct cines and hard-links the rest, so large
GPU runs do not spend minutes encoding; the upstream loop runs on `--upstream-videos` of them.

Weights: `--weights NAME|PATH`, else a full-size convnext_base with random weights built here.
"""

from __future__ import annotations

import argparse
import json
import os

import tempfile
import time
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
    from pydicom.uid import JPEGBaseline8Bit, UltrasoundMultiFrameImageStorage, generate_uid

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--unique", type=int, default=None, help="distinct cines written (others are links)")
    parser.add_argument("--upstream-videos", type=int, default=16, help="videos the (slow) upstream loop embeds")
    parser.add_argument("--workers", default="0", help="comma-separated decode-process counts to compare")
    parser.add_argument("--jpeg-decode", default="workers", help="comma-separated: workers, device")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="echoclip-bench-") as tmp:
        tmp = Path(tmp)
        weights = args.weights or str(random_weights(tmp / "weights"))
        model = echoclip_cli.load_model(weights, device=args.device, precision=args.precision)
        files = []
        unique = args.unique or args.videos
        for i in range(args.videos):
            files.append(tmp / f"cine{i:04d}.dcm")
            if i < unique:
                write_jpeg_dicom(files[-1], echo_like_frames(args.frames, 600, 800, i))
            else:
                os.link(files[i % unique], files[-1])

        cuda = model.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        upstream_files = files[: max(1, min(args.upstream_videos, len(files)))]
        upstream_loop(model, files[:1])  # warm-up
        sync()
        start = time.perf_counter()
        n_up = upstream_loop(model, upstream_files)
        sync()
        t_up = time.perf_counter() - start

        batch = torch.randn(args.batch_size, 3, 224, 224, device=model.device)  # already on the device
        model.encode_image(batch)
        n_frames = sum(min(len(range(0, 40, 2)), (args.frames + 1) // 2) for _ in files)
        reps = max(1, n_frames // args.batch_size)

        def model_only() -> float:
            """The ceiling, timed next to each pipeline run (shared cores drift between runs)."""
            sync()
            start = time.perf_counter()
            for _ in range(reps):
                model.encode_image(batch)
            sync()
            return reps * args.batch_size / (time.perf_counter() - start)

        device = torch.cuda.get_device_name(model.device) if cuda else cpu_name()
        up = n_up / t_up
        print(f"# {device}, {torch.get_num_threads()} threads, {model.precision}, batch {args.batch_size}, "
              f"{args.videos} DICOM cines 600x800x{args.frames} (JPEG Baseline; {unique} distinct); "
              f"upstream loop on {len(upstream_files)} of them", flush=True)
        print("| decode workers | JPEG decode | upstream loop (frames/s) | echoclip pipeline (frames/s) "
              "| model only (frames/s) | pipeline / upstream | pipeline / model | peak GPU MiB | min cosine vs row 1 |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        first: dict[str, np.ndarray] = {}
        for decode in args.jpeg_decode.split(","):
            list(embed_videos(files[:2], model, batch_size=args.batch_size, workers=0, jpeg_decode=decode))  # warm-up
            for workers in (int(w) for w in args.workers.split(",")):
                before = model_only()
                if cuda:
                    torch.cuda.reset_peak_memory_stats(model.device)
                start = time.perf_counter()
                results = list(embed_videos(files, model, batch_size=args.batch_size, workers=workers,
                                            jpeg_decode=decode))
                sync()
                elapsed = time.perf_counter() - start
                peak = torch.cuda.max_memory_allocated(model.device) / 2**20 if cuda else float("nan")
                ceiling = (before + model_only()) / 2
                vectors = {r.source: r.embedding for r in results if r.ok}
                if not first:
                    first = vectors
                cosine = min(float(v @ first[k] / np.linalg.norm(v) / np.linalg.norm(first[k]))
                             for k, v in vectors.items())
                rate = sum(r.n_frames for r in results) / elapsed
                print(f"| {workers} | {decode} ({results[0].meta.get('decoder')}) | {up:.2f} | {rate:.2f} "
                      f"| {ceiling:.2f} | {rate / up:.2f}x | {rate / ceiling:.1%} | {peak:.0f} | {cosine:.6f} |",
                      flush=True)


if __name__ == "__main__":
    main()
