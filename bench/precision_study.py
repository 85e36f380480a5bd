"""Each numeric variant's error as a share of the spread between inputs (issue 29).

    python bench/precision_study.py --device cpu --cines 4 --frames 12 [--weights W] [--gamma G] [--out F]
    python bench/precision_study.py --device cuda --cines 8 --frames 32 --compile     (a lent GPU; gpu_probe.py runs it)

"bf16 against fp32: cosine 0.99999" says nothing when different inputs land at cosine 0.99999 of
each other too, as they do on random weights. What matters is how far a variant moves an
embedding compared with how far apart the embeddings of *different* inputs are:

- reference: the tower in fp32 on the device; inputs: model-ready frames of ``--cines`` echo-like
  cines (``--frames`` each, prepared by echoclip's own pipeline), or of ``--video`` files;
- spread: the median, over pairs of different inputs, of the distance between their L2-normalised
  reference embeddings (pairs from different cines, and pairs within one cine, apart);
- error of a variant: per input, the distance between its normalised embedding and the
  reference's; reported as median and max of error / spread (between cines), and as the share of
  inputs whose nearest other input is the same as in the reference.

A random tower whose outputs barely depend on the input makes every ratio meaningless (the spread
is rounding noise): the first lines print the reference's spread and pairwise cosines so that can
be seen; ``--gamma G`` conditions the tower first (:func:`condition`: variance-preserving random
weights, zero biases, every block's layer scale G), which makes a random tower's outputs depend on
its input (trained towers do).

Variants: autocast bf16, autocast fp16, the tower's weights in bf16 (no autocast: LayerNorm in
bf16 too), and with ``--compile`` ``torch.compile`` in fp32 and under autocast bf16/fp16. Each row
also says how long the variant took per frame here (the device's speed, not the pipeline's).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from _machine import OUT as _OUT  # noqa: E402
from _machine import say  # noqa: E402

def model_inputs(model, files: list[Path], frames: int) -> tuple[torch.Tensor, list[int]]:
    """Model-ready images of ``frames`` sampled frames of each file, and the file each came from."""
    from echoclip_cli.media import load_clip
    from echoclip_cli.preprocess import to_model_input
    from echoclip_cli.preprocess_config import Sampling

    cfg = Sampling(frames=frames, stride=1).apply(model.preprocess)
    images, owners = [], []
    for k, path in enumerate(files):
        clip = load_clip(path, cfg)
        images.append(to_model_input(clip.frames, cfg, device=model.device))
        owners += [k] * clip.frames.shape[0]
    return torch.cat(images), owners


def spread(reference: torch.Tensor, owners: list[int]) -> tuple[float, float, float, float]:
    """(median distance between inputs of different cines, within one cine, mean and min cosine
    between different cines)."""
    distances = torch.cdist(reference, reference)
    cosines = reference @ reference.T
    across, within, cos_across = [], [], []
    for i in range(len(owners)):
        for j in range(i + 1, len(owners)):
            (across if owners[i] != owners[j] else within).append(float(distances[i, j]))
            if owners[i] != owners[j]:
                cos_across.append(float(cosines[i, j]))
    return (statistics.median(across), statistics.median(within) if within else float("nan"),
            statistics.fmean(cos_across), min(cos_across))


def error_over_spread(reference: torch.Tensor, candidate: torch.Tensor, scale: float) -> tuple[float, float, float]:
    """(median and max of ||candidate - reference|| / scale over inputs, share of inputs whose
    nearest other input is unchanged)."""
    errors = (candidate - reference).norm(dim=1) / scale

    def nearest(vectors: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(vectors, vectors)
        d.fill_diagonal_(float("inf"))
        return d.argmin(dim=1)

    same = float((nearest(candidate) == nearest(reference)).float().mean())
    return float(errors.median()), float(errors.max()), same


def embed(tower, images: torch.Tensor, batch: int, dtype: torch.dtype | None, sync) -> tuple[torch.Tensor, float]:
    out = []
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, images.shape[0], batch):
            x = images[i:i + batch]
            if dtype is None:
                out.append(tower(x).float())
            else:
                with torch.autocast(images.device.type, dtype=dtype):
                    out.append(tower(x).float())
    sync()
    seconds = time.perf_counter() - start
    return F.normalize(torch.cat(out), dim=-1).cpu(), seconds / images.shape[0]


def condition(visual: torch.nn.Module, gamma: float) -> None:
    """Make a random image tower's output depend on its input, as a trained one's does: every
    convolution and linear weight drawn with variance 1/fan-in, biases zero, norms the identity,
    each block's layer scale ``gamma`` (random weights of std 0.02 with biases of std 0.1, as the
    timing checkpoints have, map every input to nearly the same embedding: the biases win)."""
    from echoclip_cli.model import ConvNeXtBlock

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in visual.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in ** 0.5)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, ConvNeXtBlock):
                module.gamma.fill_(gamma)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", help="a bundle or checkpoint (default: random full-size weights in --cache)")
    parser.add_argument("--cache", default="/tmp/echoclip-gpu-cache")
    parser.add_argument("--cines", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--video", action="append", default=[], help="use these clips instead of synthetic cines")
    parser.add_argument("--gamma", type=float, help="condition the tower first (see condition()), layer scale this")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--variants", default="bf16,fp16,bf16-weights")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.out:
        _OUT.append(Path(args.out))
    run(args)


def run(args: argparse.Namespace) -> None:
    import echoclip_cli
    from bench_embed import cached_weights, echo_like_frames, write_jpeg_dicom

    weights = args.weights or str(cached_weights(Path(args.cache)))
    model = echoclip_cli.load_model(weights, device=args.device, precision="fp32")
    network = model.model
    if args.gamma is not None:
        condition(network.visual, args.gamma)
    files = [Path(v) for v in args.video]
    if not files:
        folder = Path(tempfile.mkdtemp(prefix="precision-"))
        for k in range(args.cines):
            write_jpeg_dicom(folder / f"cine{k}.dcm", echo_like_frames(args.frames, 300, 400, 7 + k))
            files.append(folder / f"cine{k}.dcm")
    images, owners = model_inputs(model, files, args.frames)
    cuda = model.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name(model.device) if cuda else "CPU"
    say(f"# precision study: {name}, torch {torch.__version__}, {images.shape[0]} frames of {len(files)} clips, "
        f"weights {Path(weights).name}, layer scale {'as stored' if args.gamma is None else args.gamma}")
    tower = network.encode_image
    reference, per_frame = embed(tower, images, args.batch_size, None, sync)
    across, within, cos_mean, cos_min = spread(reference, owners)
    say(f"reference fp32: spread between cines {across:.4g} (within a cine {within:.4g}); cosine between "
        f"cines mean {cos_mean:.6f}, min {cos_min:.6f}; {per_frame * 1e3:.1f} ms per frame")
    say("| variant | error / spread, median | max | nearest input unchanged | ms per frame |\n|---|---|---|---|---|")
    fp32_again, again = embed(tower, images, args.batch_size, None, sync)
    say("| fp32 again (run-to-run) | %.2e | %.2e | %.0f %% | %.1f |" % (
        *error_over_spread(reference, fp32_again, across)[:2], 100 * error_over_spread(reference, fp32_again, across)[2],
        again * 1e3))
    wanted = [v for v in args.variants.split(",") if v]
    rows: list[tuple[str, object, torch.dtype | None]] = []
    for variant in wanted:
        if variant in ("bf16", "fp16"):
            rows.append((f"autocast {variant}", tower, torch.bfloat16 if variant == "bf16" else torch.float16))
    if args.compile:
        compiled = torch.compile(network.encode_image)
        rows += [("torch.compile fp32", compiled, None), ("torch.compile + autocast bf16", compiled, torch.bfloat16),
                 ("torch.compile + autocast fp16", compiled, torch.float16)]
    for label, fn, dtype in rows:
        try:
            embed(fn, images[: args.batch_size], args.batch_size, dtype, sync)  # warm-up (compiles)
            got, seconds = embed(fn, images, args.batch_size, dtype, sync)
        except (RuntimeError, NotImplementedError) as exc:
            say(f"| {label} | — | — | — | not run here: {type(exc).__name__} |")
            continue
        if not torch.isfinite(got).all():
            say(f"| {label} | non-finite | | | {seconds * 1e3:.1f} |")
            continue
        med, worst, same = error_over_spread(reference, got, across)
        say(f"| {label} | {med:.3g} | {worst:.3g} | {same:.0%} | {seconds * 1e3:.1f} |")
    if "bf16-weights" in wanted:
        plain = copy.deepcopy(network).to(torch.bfloat16)
        got, seconds = embed(lambda x: plain.encode_image(x.to(torch.bfloat16)), images, args.batch_size, None, sync)
        med, worst, same = error_over_spread(reference, got, across)
        say(f"| weights in bf16 (no autocast) | {med:.3g} | {worst:.3g} | {same:.0%} | {seconds * 1e3:.1f} |")


if __name__ == "__main__":
    main()
