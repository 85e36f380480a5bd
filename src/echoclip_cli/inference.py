"""The inference core: a loaded model on its device, in its precision, with its preprocessing.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip", device="auto", precision="auto")
    >>> model.encode_image(images)   # images: N×3×224×224 float, already normalised → N×512
    >>> model.encode_text(ids)       # ids: N×77 long → N×512

Every command builds on this object; it never holds random weights (loading is strict).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import weights as weights_mod
from .device import autocast, precision_name, resolve_device, resolve_precision, set_deterministic, strict_fp32
from .model import EchoClipModel, build_model
from .preprocess_config import PreprocessConfig
from .weights import Bundle


@dataclass
class EchoClip:
    """A model ready to embed: weights checked and loaded, device and precision chosen.

    Loaded lazily (``load_model(..., lazy=True)``) the network is built on first use: a command
    whose frames and prompts all come from caches never spends seconds reading 600 MB.
    """

    _module: EchoClipModel | None
    bundle: Bundle
    device: torch.device
    dtype: torch.dtype
    _tokenizer: Any = field(default=None, repr=False)
    _build: Callable[[], EchoClipModel] | None = field(default=None, repr=False)

    @property
    def model(self) -> EchoClipModel:
        if self._module is None:
            assert self._build is not None
            self._module, self._build = self._build(), None
        return self._module

    @property
    def loaded(self) -> bool:
        return self._module is not None

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.bundle.preprocess

    @property
    def weights_sha256(self) -> str:
        return self.bundle.weights_sha256

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    @property
    def embed_dim(self) -> int:
        return int(self.bundle.model_cfg["embed_dim"])

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings (N,E) in fp32 for normalised images (N,3,H,W)."""
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.dtype):
            return self.model.encode_image(images).float()

    @torch.inference_mode()
    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Unnormalised text embeddings (N,E) in fp32 for token ids (N,L)."""
        with autocast(self.device, self.dtype):
            return self.model.encode_text(ids.to(self.device)).float()


def load_model(
    weights: str | os.PathLike[str] | Bundle | None = None,
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    deterministic: bool = False,
    compile: bool = False,
    lazy: bool = False,
) -> EchoClip:
    """Load a bundle (name, path or :class:`Bundle`) strictly onto ``device`` in ``precision``.

    ``compile=True`` wraps the image tower in ``torch.compile`` (same results; a one-off warm-up
    of tens of seconds, then faster batches on GPU). ``lazy=True`` checks the weights' hash now and
    builds the network on first use.
    """
    bundle = weights if isinstance(weights, Bundle) else weights_mod.resolve(weights)
    torch_device = resolve_device(device)
    dtype = resolve_precision(precision, torch_device)
    strict_fp32(torch_device, dtype)
    set_deterministic(deterministic)
    weights_mod.ensure_verified(bundle)
    build = functools.partial(_build, bundle, torch_device, compile)
    if lazy:
        return EchoClip(None, bundle=bundle, device=torch_device, dtype=dtype, _build=build)
    return EchoClip(build(), bundle=bundle, device=torch_device, dtype=dtype)


def _build(bundle: Bundle, torch_device: torch.device, compile: bool) -> EchoClipModel:
    """The network with the bundle's checked weights, on ``torch_device``."""
    state = bundle.state_dict()
    with torch.device("meta"):  # no memory until the checked tensors are assigned
        model = build_model(bundle.model_cfg)
    weights_mod.check_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, state)
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(torch_device).eval()
    if torch_device.type == "cuda":
        model.visual.to(memory_format=torch.channels_last)
    if compile:
        model.visual = torch.compile(model.visual, dynamic=False)  # type: ignore[assignment]
    return model
