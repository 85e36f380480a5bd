"""Stage ceilings on a GPU: where the nvJPEG pipeline's time goes, and how fast the model can go.

    python bench/gpu_probe.py --device cuda --cache /tmp/echoclip-gpu-cache --pipeline 640 --out $OUT/probe.md
        (right after bench/gpu_check.sh, whose cines and weights it reuses)
    python bench/gpu_probe.py --device cpu --weights TINY --cines 2 --frames 6 --size 48x64 --batch-size 2 \
        --no-compile --pipeline 2                                      (the CPU dry run tests/test_gpu_probe.py runs)

The end-to-end table of bench/bench_embed.py says how fast the whole pipeline is; this says which
stage holds it back, each stage timed alone on the same inputs (frames per second, same batch).
Every row is printed, and appended to ``--out``, as soon as it is measured, so a run cut short
keeps what it measured:

- parse: ``load_codestreams`` on one core (a decode worker's job: one read of the file, the
  header, the sampled codestreams cut from the encapsulated items, the identity hashed from the
  same bytes), warm (the file in the page cache) and cold (evicted with ``posix_fadvise``), and
  warm without the hash, with the hash alone beside it; times the workers the machine would run;
- decode: ``decode_jpegs`` of a batch of those codestreams on the device, and the same decoder fed
  ``bytearray`` copies of them (as before issue 29), where torchvision decodes;
- prepare: ``finish_codestream_group`` (colour check, mask, crop, resize) on the device: wall time
  to the device's end, and the host steps alone (bench/bench_prep.py's ``host_step_ms``), with
  host synchronisations per group;
- model: ``encode_image`` as loaded, then variants (cuDNN autotuning, larger batches, the tower in
  plain bf16 instead of autocast, ``torch.compile``), with the top CUDA kernels of one batch;
- with ``--pipeline N``: the whole pipeline on N cines, as loaded and (without ``--no-compile``)
  with ``--compile``;
- the model under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs, ``ECHOCLIP_CUDA_GRAPHS=1``);
- with ``--precision-study C``: bench/precision_study.py on C cines (autocast bf16 and fp16, weights
  in bf16, compiled): each variant's error as a share of the spread between inputs, and its speed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from pathlib import Path

import torch
from _machine import OUT as _OUT
from _machine import say
from bench_embed import cached_cines, cached_weights, echo_like_frames, write_jpeg_dicom

import echoclip_cli
from echoclip_cli.media import clip as clip_module
from echoclip_cli.media import dicom as dicom_module
from echoclip_cli.media.clip import finish_codestream_group, load_codestreams
from echoclip_cli.media.jpeg_device import backend as jpeg_backend
from echoclip_cli.media.jpeg_device import decode_jpegs

def timed(fn, sync, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    sync()
    seen = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        seen.append(time.perf_counter() - start)
    return sorted(seen)[len(seen) // 2]


def times(fn, repeats: int, before=None) -> tuple[float, float]:
    """(min, median) seconds of ``repeats`` calls after one warm-up; ``before`` runs untimed first."""
    fn()
    seen = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        seen.append(time.perf_counter() - start)
    return min(seen), statistics.median(seen)


def evict(paths) -> None:
    """Drop the files' pages from the page cache (no root needed), so the next read is cold."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cines(args) -> list[Path]:
    """bench/gpu_check.sh's cached 600×800 cines, or ``--cines`` of ``--size`` in the cache."""
    rows, cols = (int(v) for v in args.size.split("x"))
    if (rows, cols) == (600, 800):
        return cached_cines(Path(args.cache) / "cines", args.cines, args.frames)
    folder = Path(args.cache) / f"cines-{rows}x{cols}x{args.frames}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"cine{i:04d}.dcm" for i in range(args.cines)]
    for i, path in enumerate(paths):
        if not path.exists():
            write_jpeg_dicom(path, echo_like_frames(args.frames, rows, cols, i))
    return paths


def probe_parse(files: list[Path], cfg, repeats: int) -> tuple[list, int]:
    """The parse rows; returns the parsed items and the workers a run would start."""
    items = [load_codestreams(f, cfg) for f in files]
    workers = max(1, min(16, (os.cpu_count() or 2) - 1))  # as bench/gpu_check.sh starts them
    n_frames = sum(len(item.streams) for item in items)
    per_cine = lambda seconds: 1000 * seconds / len(files)  # noqa: E731
    parse = lambda: [load_codestreams(f, cfg) for f in files]  # noqa: E731
    low, mid = times(parse, repeats)
    say(f"| parse, warm (1 core) | {n_frames / low:.0f} | {per_cine(low):.2f} / {per_cine(mid):.2f} ms per cine "
        f"(min / median); ×{workers} workers ≈ {workers * n_frames / low:.0f} frames/s |")
    cold_low, cold_mid = times(parse, max(1, repeats // 2), before=lambda: evict(files))
    say(f"| parse, cold (page cache dropped) | {n_frames / cold_low:.0f} | {per_cine(cold_low):.2f} / "
        f"{per_cine(cold_mid):.2f} ms per cine |")
    saved = dicom_module.sha256_bytes
    dicom_module.sha256_bytes = lambda data: "0" * 64
    try:
        low, mid = times(parse, repeats)
    finally:
        dicom_module.sha256_bytes = saved
    say(f"| parse, warm, without the identity hash | {n_frames / low:.0f} | {per_cine(low):.2f} / "
        f"{per_cine(mid):.2f} ms per cine |")
    data = [Path(f).read_bytes() for f in files]
    low, mid = times(lambda: [hashlib.sha256(d).hexdigest() for d in data], repeats)
    size = sum(len(d) for d in data) / len(data) / 1e6
    say(f"| identity: sha256 of the bytes read | — | {per_cine(low):.2f} / {per_cine(mid):.2f} ms per cine "
        f"({size:.1f} MB) |")
    return items, workers


def probe_decode(items, device, sync, repeats: int) -> list[torch.Tensor]:
    """The decode rows; returns the decoded frames."""
    from echoclip_cli.media import jpeg_device

    streams = [s for item in items for s in item.streams]
    decoded: list[torch.Tensor] = []

    def decode() -> None:
        decoded[:] = decode_jpegs(streams, device)
        sync()

    name = jpeg_backend(device)
    low, mid = times(decode, repeats)
    say(f"| JPEG decode ({name}, {len(streams)} frames in one call, no copies) | {len(streams) / low:.0f} | "
        f"{1000 * low:.1f} / {1000 * mid:.1f} ms |")
    if name in ("nvjpeg", "torchvision"):
        fn = jpeg_device._torchvision_decode()

        def copied() -> None:
            inputs = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in streams]
            fn(inputs, mode=jpeg_device._rgb_mode(), device=device)
            sync()

        low, mid = times(copied, repeats)
        say(f"| JPEG decode, fed bytearray copies (before) | {len(streams) / low:.0f} | "
            f"{1000 * low:.1f} / {1000 * mid:.1f} ms |")
        low, mid = times(lambda: jpeg_device.codestream_tensors(streams), repeats)
        say(f"| codestreams as tensors, no copies | — | {1000 * low:.2f} / {1000 * mid:.2f} ms for {len(streams)} |")
    else:
        say(f"| JPEG decode fed copies | — | not measured: {name} does not take tensors |")
    return decoded


def probe_prepare(items, decoded, cfg, sync, repeats: int) -> None:
    from bench_prep import host_step_ms

    from echoclip_cli.preprocess import host_syncs

    per = len(items[0].streams)
    stack = torch.stack(decoded).reshape(len(items), per, *decoded[0].shape)

    def prepare() -> None:
        clips = finish_codestream_group(items, stack, cfg, "probe")
        assert all(c is not None for c in clips)
        sync()

    before = host_syncs()
    prepare()
    syncs = host_syncs() - before
    low, mid = times(prepare, repeats)
    n = len(items) * per
    say(f"| prepare ({len(items)} clips as one group), to the device's end | {n / low:.0f} | {1000 * low:.1f} / "
        f"{1000 * mid:.1f} ms; {syncs} host synchronisation(s) per group |")
    host_low, host_mid = host_step_ms(clip_module.finish_codestream_group, items, stack, cfg, repeats)
    say(f"| prepare, host steps alone | — | {host_low:.2f} / {host_mid:.2f} ms per clip |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cines", type=int, default=16, help="cines per decode/prepare group")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="600x800", help="rows x columns of the cines")
    parser.add_argument("--cache", default="/tmp/echoclip-gpu-cache")
    parser.add_argument("--weights", help="a checkpoint (default: random full-size weights in --cache)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also append every row to this file as it is measured")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--pipeline", type=int, default=0, help="also time the pipeline on this many cines")
    parser.add_argument("--precision-study", type=int, default=0, metavar="CINES",
                        help="also measure each variant's error against the spread between inputs (16 frames each)")
    args = parser.parse_args()
    if args.out:
        _OUT.append(Path(args.out))
    files = cines(args)
    weights = args.weights or str(cached_weights(Path(args.cache)))
    model = echoclip_cli.load_model(weights, device=args.device, precision=args.precision)
    cuda = model.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = model.preprocess
    name = torch.cuda.get_device_name(model.device) if cuda else "CPU"
    say(f"# {name}, torch {torch.__version__}, {model.precision}, batch {args.batch_size}, "
        f"{len(files)} cines {args.size}x{args.frames}; min / median of {args.repeats}")
    say("| stage | frames/s | notes |\n|---|---|---|")
    items, workers = probe_parse(files, cfg, args.repeats)
    decoded = probe_decode(items, model.device, sync, args.repeats)
    probe_prepare(items, decoded, cfg, sync, args.repeats)

    # The model: as loaded, then variants.
    def model_rate(encode, batch_size: int, images: torch.Tensor | None = None) -> float:
        x = images if images is not None else torch.randn(batch_size, 3, 224, 224, device=model.device)
        reps = 3 if cuda else 1
        seconds = timed(lambda: [encode(x) for _ in range(reps)], sync, 3)
        return reps * batch_size / seconds

    b = args.batch_size
    base = model_rate(model.encode_image, b)
    say(f"| model as loaded (encode_image) | {base:.0f} | autocast {model.precision} |")
    for size in (b * 2, b * 4):
        say(f"| model, batch {size} | {model_rate(model.encode_image, size):.0f} | |")
    if cuda:
        torch.backends.cudnn.benchmark = True
        say(f"| model, cudnn.benchmark | {model_rate(model.encode_image, b):.0f} | |")
        tower = model.model
        if model.dtype != torch.float32:
            tower.visual.to(model.dtype)
            x = torch.randn(b, 3, 224, 224, device=model.device, dtype=model.dtype).contiguous(
                memory_format=torch.channels_last)
            with torch.inference_mode():
                rate = model_rate(lambda images: tower.encode_image(images), b, x)
            say(f"| model, weights in {model.precision} (no autocast) | {rate:.0f} | LayerNorm in "
                  f"{model.precision} too: speed only |")
            tower.visual.float()  # back for the rows below (rounded through bf16: speed only)
        from torch.profiler import ProfilerActivity, profile

        x = torch.randn(b, 3, 224, 224, device=model.device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model.encode_image(x)
            sync()
        say("\ntop CUDA kernels of one batch:\n" + prof.key_averages().table(
            sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
    if args.pipeline:  # end to end, as bench_embed.py runs it, with and without --compile
        from echoclip_cli.pipeline import embed_videos

        inputs = [files[i % len(files)] for i in range(args.pipeline)]
        for compile_ in (False, True) if not args.no_compile else (False,):
            start = time.perf_counter()
            run = echoclip_cli.load_model(weights, device=args.device, precision=args.precision,
                                          compile=compile_)
            list(embed_videos(files, run, batch_size=b, workers=workers))  # warm-up (compiles at batch b)
            warm = time.perf_counter() - start
            sync()
            start = time.perf_counter()
            frames = sum(r.n_frames for r in embed_videos(inputs, run, batch_size=b, workers=workers) if r.ok)
            sync()
            rate = frames / (time.perf_counter() - start)
            say(f"| pipeline end to end{', --compile' if compile_ else ''} ({len(inputs)} cines, {workers} workers, "
                  f"default JPEG decode) | {rate:.0f} | load + warm-up {warm:.0f} s |")
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
        say(f"| model, torch.compile (default mode) | {rate:.0f} | first call {first:.0f} s |")
        if cuda:  # CUDA graphs: the whole tower replayed as one launch (ECHOCLIP_CUDA_GRAPHS=1)
            start = time.perf_counter()
            graphed = torch.compile(model.model.encode_image, mode="reduce-overhead", dynamic=False)
            with torch.inference_mode(), torch.autocast("cuda", dtype=model.dtype,
                                                        enabled=model.dtype != torch.float32):
                for _ in range(3):  # recorded on the second call, replayed from the third
                    graphed(x).clone()
                sync()
                first = time.perf_counter() - start
                rate = model_rate(lambda images: graphed(images).clone(), b, x)
            say(f"| model, torch.compile reduce-overhead (CUDA graphs) | {rate:.0f} | first calls {first:.0f} s |")
    if args.precision_study:  # error relative to the spread between inputs, each variant (bench/precision_study.py)
        import precision_study

        precision_study.run(argparse.Namespace(
            device=args.device, weights=weights, cache=args.cache, cines=args.precision_study, frames=16, video=[],
            gamma=1.0, batch_size=min(b, 64), compile=cuda and not args.no_compile, variants="bf16,fp16,bf16-weights"))


if __name__ == "__main__":
    main()
