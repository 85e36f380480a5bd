"""Stage ceilings on a GPU: where the nvJPEG pipeline's time goes, and how fast the model can go.

    python bench/gpu_probe.py --device cuda --cache /tmp/echoclip-gpu-cache      (bench/gpu_check.sh's cines)
    python bench/gpu_probe.py --device cpu --batch-size 8 --cines 2 --no-compile  (a CPU dry run)

The end-to-end table of bench/bench_embed.py says how fast the whole pipeline is; this says which
stage holds it back, each stage timed alone on the same inputs (frames per second, same batch):

- parse: ``load_codestreams`` on one core (a decode worker's job: read the file, cut the sampled
  JPEG codestreams out of it), times the workers the machine would run;
- nvJPEG: ``decode_jpegs`` of a batch of those codestreams on the device;
- prepare: ``finish_codestream_group`` (colour check, mask, crop, resize, normalise) on the device;
- model: ``encode_image`` as loaded, then variants (cuDNN autotuning, larger batches, the tower in
  plain bf16 instead of autocast, ``torch.compile``), with the top CUDA kernels of one batch;
- with ``--pipeline N``: the whole pipeline on N cines, as loaded and with ``--compile``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from bench_embed import cached_cines, cached_weights

import echoclip_cli
from echoclip_cli.media.clip import finish_codestream_group, load_codestreams
from echoclip_cli.media.jpeg_device import backend as jpeg_backend
from echoclip_cli.media.jpeg_device import decode_jpegs


def timed(fn, sync, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cines", type=int, default=16, help="cines per decode/prepare group")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--cache", default="/tmp/echoclip-gpu-cache")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--pipeline", type=int, default=0, help="also time the pipeline on this many cines")
    args = parser.parse_args()
    cache = Path(args.cache)
    files = cached_cines(cache / "cines", args.cines, args.frames)
    model = echoclip_cli.load_model(str(cached_weights(cache)), device=args.device, precision=args.precision)
    cuda = model.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = model.preprocess
    name = torch.cuda.get_device_name(model.device) if cuda else "CPU"
    print(f"# {name}, torch {torch.__version__}, {model.precision}, batch {args.batch_size}, "
          f"{len(files)} cines 600x800x{args.frames}", flush=True)
    print("| stage | frames/s | notes |\n|---|---|---|", flush=True)

    # Parse (CPU, one core), then scaled by the workers a run would start.
    start = time.perf_counter()
    items = [load_codestreams(f, cfg) for f in files]
    parse_s = time.perf_counter() - start
    n_frames = sum(len(item.streams) for item in items)
    workers = max(1, min(16, (os.cpu_count() or 2) - 1))  # as bench/gpu_check.sh starts them
    print(f"| parse (1 core) | {n_frames / parse_s:.0f} | ×{workers} workers ≈ {workers * n_frames / parse_s:.0f};"
          f" {1000 * parse_s / len(files):.1f} ms per cine |", flush=True)

    # nvJPEG (or the CPU decoder) on all the group's codestreams at once.
    streams = [s for item in items for s in item.streams]
    decoded: list[torch.Tensor] = []

    def decode() -> None:
        decoded[:] = decode_jpegs(streams, model.device)

    seconds = timed(decode, sync, 3)
    print(f"| JPEG decode ({jpeg_backend(model.device)}, {len(streams)} frames in one call) | "
          f"{len(streams) / seconds:.0f} | {1000 * seconds:.1f} ms |", flush=True)

    per = len(items[0].streams)
    stack = torch.stack(decoded).reshape(len(items), per, *decoded[0].shape)

    def prepare() -> None:
        clips = finish_codestream_group(items, stack, cfg, "probe")
        assert all(c is not None for c in clips)

    seconds = timed(prepare, sync, 3)
    print(f"| prepare ({len(items)} clips as one group) | {len(streams) / seconds:.0f} | {1000 * seconds:.1f} ms |",
          flush=True)

    # The model: as loaded, then variants.
    def model_rate(encode, batch_size: int, images: torch.Tensor | None = None) -> float:
        x = images if images is not None else torch.randn(batch_size, 3, 224, 224, device=model.device)
        reps = 3 if cuda else 1
        seconds = timed(lambda: [encode(x) for _ in range(reps)], sync, 3)
        return reps * batch_size / seconds

    b = args.batch_size
    base = model_rate(model.encode_image, b)
    print(f"| model as loaded (encode_image) | {base:.0f} | autocast {model.precision} |", flush=True)
    for size in (b * 2, b * 4):
        print(f"| model, batch {size} | {model_rate(model.encode_image, size):.0f} | |", flush=True)
    if cuda:
        torch.backends.cudnn.benchmark = True
        print(f"| model, cudnn.benchmark | {model_rate(model.encode_image, b):.0f} | |", flush=True)
        tower = model.model
        if model.dtype != torch.float32:
            tower.visual.to(model.dtype)
            x = torch.randn(b, 3, 224, 224, device=model.device, dtype=model.dtype).contiguous(
                memory_format=torch.channels_last)
            with torch.inference_mode():
                rate = model_rate(lambda images: tower.encode_image(images), b, x)
            print(f"| model, weights in {model.precision} (no autocast) | {rate:.0f} | LayerNorm in "
                  f"{model.precision} too: speed only |", flush=True)
            tower.visual.float()  # back for the rows below (rounded through bf16: speed only)
        from torch.profiler import ProfilerActivity, profile

        x = torch.randn(b, 3, 224, 224, device=model.device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model.encode_image(x)
            sync()
        print("\ntop CUDA kernels of one batch:\n" + prof.key_averages().table(
            sort_by="cuda_time_total", row_limit=12, max_name_column_width=60), flush=True)
    if args.pipeline:  # end to end, as bench_embed.py runs it, with and without --compile
        from echoclip_cli.pipeline import embed_videos

        inputs = [files[i % len(files)] for i in range(args.pipeline)]
        for compile_ in (False, True) if not args.no_compile else (False,):
            start = time.perf_counter()
            run = echoclip_cli.load_model(str(cached_weights(cache)), device=args.device, precision=args.precision,
                                          compile=compile_)
            list(embed_videos(files, run, batch_size=b, workers=workers))  # warm-up (compiles at batch b)
            warm = time.perf_counter() - start
            sync()
            start = time.perf_counter()
            frames = sum(r.n_frames for r in embed_videos(inputs, run, batch_size=b, workers=workers) if r.ok)
            sync()
            rate = frames / (time.perf_counter() - start)
            print(f"| pipeline end to end{', --compile' if compile_ else ''} ({len(inputs)} cines, {workers} workers, "
                  f"default JPEG decode) | {rate:.0f} | load + warm-up {warm:.0f} s |", flush=True)
    if not args.no_compile:
        start = time.perf_counter()
        encode = model.model.encode_image
        compiled = torch.compile(encode)
        with torch.inference_mode():
            x = torch.randn(b, 3, 224, 224, device=model.device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(model.device.type, dtype=model.dtype, enabled=model.dtype != torch.float32):
                compiled(x)
                sync()
                first = time.perf_counter() - start
                rate = model_rate(compiled, b, x)
        print(f"| model, torch.compile (default mode) | {rate:.0f} | first call {first:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
