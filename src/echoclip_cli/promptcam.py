"""PromptCAM: where in a frame the image tower found what a prompt says (the paper's saliency maps).

The algorithm is the released Grad-CAM script's (Christensen et al. 2024; ``shared/docs/ECHO.md``,
"PromptCAM"), written from its description:

1. Target layer: the last ConvNeXt block of the last stage (``visual.trunk.stages[3].blocks[2]``
   in convnext_base): its output A is (C, h, w) = (1024, 7, 7) for a 224² input.
2. Forward one preprocessed frame to the tower's *unnormalised* embedding e (E,), and
   backpropagate with e's gradient set to the L2-normalised prompt embedding t: the gradient of
   e · t. Only A needs a gradient; the parameters are frozen (no graph is kept below A, so a map
   costs one forward pass and a backward pass through the tower's head).
3. α_c = mean over the h × w positions of ∂(e · t)/∂A_c; raw map = ReLU(Σ_c α_c A_c) (h × w).
4. Upsample bicubically to the input size (align_corners false) with no clamp after it: the
   224² map keeps the small negative overshoots of bicubic upsampling, as released.

Display (the released demo): a Gaussian blur with σ = 0.02 × the image side (4.48 px at 224),
min-max normalisation to [0, 1], the ``jet`` colour map, and overlay = (1 − m)·image + m·colour.

The maps always run on the torch network (``EchoClip.model.visual``), never on a built CPU
backend (ONNX, AOTInductor): those have no gradients. By default in fp32, as released; under bf16
autocast a map differs (docs/BENCHMARKS.md says by how much).
"""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .device import autocast

BLUR_SIGMA = 0.02  # of the image side: the released demo's blur (4.48 px at 224)
BLUR_TRUNCATE = 4.0  # the kernel reaches 4 σ each side, then stops (reflected at the borders)
MAPS_PER_PASS = 1  # frames per forward/backward pass: one frame's activations, whatever the batch size


@dataclass(frozen=True)
class CamMaps:
    """PromptCAM maps of N frames, float32 on the CPU.

    raw: (N, h, w) the maps at the target block's resolution (7×7 for a 224² input), ≥ 0.
    cam: (N, S, S) bicubically upsampled to the input size (small negative overshoots kept).
    embeddings: (N, E) the frames' unnormalised image embeddings (the forward pass's e).
    """

    raw: np.ndarray
    cam: np.ndarray
    embeddings: np.ndarray


def target_block(visual: nn.Module) -> nn.Module:
    """The block PromptCAM reads: the last block of the trunk's last stage."""
    visual = getattr(visual, "_orig_mod", visual)  # a torch.compile wrapper: its module, which hooks reach
    return visual.trunk.stages[-1].blocks[-1]


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """The module's parameters need no gradient for the duration (as they were afterwards)."""
    params = list(module.parameters())
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, wanted in zip(params, before):
            p.requires_grad_(wanted)


def prompt_cam(
    visual: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    batch_size: int = MAPS_PER_PASS,
) -> CamMaps:
    """PromptCAM of normalised ``images`` (N, 3, S, S) for ``targets``: (N, E) or (E,), each the
    L2-normalised prompt embedding (or a mean of several, for a task's prompts) whose dot product
    with the frame's embedding is explained. ``visual`` is the torch image tower; the maps run
    ``batch_size`` frames at a time on its device, under autocast when ``dtype`` is not fp32. On
    a CPU, frames are shared out between the cores, each running its own one thread at a time
    (as the eager tower splits a batch: ConvNeXt's small operations share out poorly between
    threads, and not at all while another process holds a core)."""
    from .backends.eager import split_wanted

    module = getattr(visual, "_orig_mod", visual)
    device = next(module.parameters()).device
    targets = targets.to(torch.float32)
    targets = targets.expand(images.shape[0], -1) if targets.ndim == 1 else targets
    if targets.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} targets")
    parts = min(torch.get_num_threads(), images.shape[0]) if device.type == "cpu" and split_wanted() else 1
    with _frozen(module), _Tap(target_block(module)) as tap:
        def run(rows: range) -> list[tuple[torch.Tensor, torch.Tensor]]:
            with torch.inference_mode(False), torch.enable_grad():  # both are per thread
                return [_raw_maps(module, tap, images[start : min(start + batch_size, rows.stop)].to(device, torch.float32).clone(),
                                  targets[start : min(start + batch_size, rows.stop)].to(device), dtype)
                        for start in range(rows.start, rows.stop, batch_size)]

        shares = [range(int(part[0]), int(part[-1]) + 1) for part in torch.arange(images.shape[0]).tensor_split(parts)
                  if len(part)]
        results = [pair for share in _side_by_side(run, shares) for pair in share]
    raw = torch.cat([r for r, _ in results])
    embeddings = torch.cat([e for _, e in results])
    cam = upsample(raw, images.shape[-2:])
    return CamMaps(raw=raw.cpu().numpy(), cam=cam.cpu().numpy(), embeddings=embeddings.cpu().numpy())


def _side_by_side(run: Callable[[range], list], shares: list[range]) -> list[list]:
    """``run`` of each share: one after the other when there is one, else one thread each."""
    if len(shares) == 1:
        return [run(shares[0])]
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()

    def one(rows: range) -> list:
        torch.set_num_threads(1)  # this thread's own operations (OpenMP keeps it per thread)
        return run(rows)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(len(shares), thread_name_prefix="echoclip-cam") as pool:
            return list(pool.map(one, shares))
    finally:
        torch.set_num_threads(threads)


class _Tap:
    """A forward hook on the target block that makes its output the start of the graph: a leaf
    that needs a gradient, kept per thread (several threads may run the tower at once)."""

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self.seen: dict[int, torch.Tensor] = {}

    def __enter__(self) -> "_Tap":
        self.handle = self.block.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()
        self.seen.clear()

    def _keep(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        activation = output.detach().requires_grad_(True)  # nothing below it is kept for backward
        self.seen[threading.get_ident()] = activation
        return activation

    def activation(self) -> torch.Tensor:
        return self.seen.pop(threading.get_ident())


def _raw_maps(module: nn.Module, tap: _Tap, images: torch.Tensor, targets: torch.Tensor,
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw maps (n, h, w) fp32, embeddings (n, E) fp32) of one pass."""
    with autocast(images.device, dtype):
        embedding = module(images)  # n,E unnormalised
    activation = tap.activation()  # n,C,h,w
    (gradient,) = torch.autograd.grad(embedding, activation, grad_outputs=targets.to(embedding.dtype))
    alpha = gradient.float().mean(dim=(2, 3), keepdim=True)  # n,C,1,1
    raw = F.relu((alpha * activation.detach().float()).sum(dim=1))  # n,h,w
    return raw, embedding.detach().float()


def upsample(raw: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Raw maps (n, h, w) → (n, H, W): bicubic, align_corners false, not clamped (as released)."""
    return F.interpolate(raw[:, None], size=tuple(size), mode="bicubic", align_corners=False)[:, 0]


# --------------------------------------------------------------------------- display


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A 2-D map blurred by a separable Gaussian of ``sigma`` pixels (borders reflected)."""
    radius = max(1, int(BLUR_TRUNCATE * sigma + 0.5))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(2)], mode="symmetric")
        windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.size, axis=axis)
        out = windows @ kernel
    return out


def normalise_map(image: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a flat map becomes all zeros."""
    low, high = float(image.min()), float(image.max())
    if high - low <= 0:
        return np.zeros_like(image, dtype=np.float64)
    return (image - low) / (high - low)


# The jet colour map: piecewise-linear red, green and blue ramps, (position, value) pairs from
# dark blue through cyan, yellow and red to dark red, sampled into 256 entries.
_JET_KNOTS = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}
JET_ENTRIES = 256


def _jet_table() -> np.ndarray:
    steps = np.linspace(0.0, 1.0, JET_ENTRIES)
    channels = [np.interp(steps, *zip(*_JET_KNOTS[name])) for name in ("red", "green", "blue")]
    return np.stack(channels, axis=1)  # 256,3 in [0,1]


JET = _jet_table()


def jet(values: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] of values in [0, 1] (clipped), through the 256-entry jet table."""
    index = np.clip(np.asarray(values) * (JET_ENTRIES - 1) + 0.5, 0, JET_ENTRIES - 1).astype(np.int64)
    return JET[index]


def display_map(cam: np.ndarray) -> np.ndarray:
    """The released display's map: blurred (σ = 0.02 × side) and min-max normalised to [0, 1]."""
    return normalise_map(gaussian_blur(cam, BLUR_SIGMA * max(cam.shape)))


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB: ``image`` (H, W, 3) uint8 RGB under the jet-coloured display map of
    ``cam`` (H, W), weighted by the map itself: (1 − m)·image + m·colour."""
    if image.shape[:2] != cam.shape:
        raise ValueError(f"image {image.shape[:2]} and map {cam.shape} differ in size")
    weight = display_map(cam)[..., None]  # H,W,1
    mixed = (1.0 - weight) * (image.astype(np.float64) / 255.0) + weight * jet(weight[..., 0])
    return np.clip(np.round(mixed * 255.0), 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an (H, W, 3) uint8 RGB image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
