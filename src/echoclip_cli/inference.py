"""The inference core: a loaded model on its device, in its precision, with its preprocessing.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip", device="auto", precision="auto")
    >>> model.encode_image(images)   # images: N×3×224×224 float, already normalised → N×512
    >>> model.encode_text(ids)       # ids: N×77 long → N×512

The image tower runs on one :class:`~echoclip_cli.backends.base.Tower` (eager torch, or a built
CPU path), which also says what made the embeddings (``numerics``); the text tower is always
torch. Every command builds on this object; it never holds random weights (loading is strict).
Which backend to run, and building it, is decided above this module (``echoclip_cli.load_model``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import weights as weights_mod
from .backends import registry
from .backends.base import Tower
from .backends.eager import split_wanted
from .device import autocast, precision_name
from .model import EchoClipModel, build_skeleton
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
    dtype: torch.dtype  # the text tower's, and the eager image tower's
    tower: Tower = field(default=None, repr=False)  # type: ignore[assignment]  # None: eager torch
    _build: Callable[[], EchoClipModel] | None = field(default=None, repr=False)
    jit: bool = False  # the torch image tower wrapped in torch.compile (--compile)
    on_build: Callable[[], None] | None = field(default=None, repr=False)  # hears a lazy build
    _jit_batch: int | None = field(default=None, repr=False)  # the batch size it was compiled for
    note: Callable[[str], None] | None = field(default=None, repr=False)  # hears a fallback from torch.compile

    def __post_init__(self) -> None:
        if self.tower is None:
            split = self.device.type == "cpu" and not self.jit and split_wanted()
            self.tower = registry.get("torch").tower(self.bundle, precision_name(self.dtype), self._eager, split=split)

    @property
    def model(self) -> EchoClipModel:
        if self._module is None:
            assert self._build is not None
            if self.on_build is not None:
                self.on_build()
            with torch.inference_mode(False):  # first use may come from inside encode_image: the
                # parameters must still be ordinary tensors, which PromptCAM's backward pass can use
                self._module, self._build = self._build(), None
        return self._module

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.visual

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
        """The image tower's precision: fp32, bf16, fp16, or int8 (ONNX MatMuls)."""
        return self.tower.precision

    @property
    def text_precision(self) -> str:
        """The text tower's precision (always torch)."""
        return precision_name(self.dtype)

    @property
    def numerics(self) -> dict[str, str]:
        """What produced this model's image embeddings (records and stores carry it)."""
        return self.tower.numerics

    @property
    def backend(self) -> str:
        """The backend records name: torch (eager or compiled) or onnx."""
        return self.numerics["backend"]

    @property
    def compiled(self) -> bool:
        """The image tower is the AOTInductor package (torch numerics, built for this CPU)."""
        return self.tower.name == "compiled"

    @property
    def embed_dim(self) -> int:
        return int(self.bundle.model_cfg["embed_dim"])

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings (N,E) in fp32 for normalised images (N,3,H,W)."""
        return self.tower(images).float()

    def _eager(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        count = images.shape[0]
        if self.jit:  # torch.compile(dynamic=False) would compile again for a shorter last batch: pad it
            self._jit_batch = self._jit_batch or count
            if count < self._jit_batch:
                images = torch.cat([images, images.new_zeros(self._jit_batch - count, *images.shape[1:])])
            elif not images.is_inference():  # one kind of tensor always, or dynamo guards fail and recompile
                images = images.clone()
        with autocast(self.device, self.dtype):
            try:
                out = self.model.encode_image(images)[:count].float()
                # CUDA graphs (ECHOCLIP_CUDA_GRAPHS=1) write every batch's output to the same memory
                return out.clone() if self.jit and self.device.type == "cuda" else out
            except Exception as exc:  # noqa: BLE001 - a compiler missing or failing on this machine
                if not self.jit or not self._eager_after(exc):
                    raise
                return self.model.encode_image(images[:count]).float()

    def _eager_after(self, exc: Exception) -> bool:
        """After torch.compile failed (no compiler, no Triton, an unsupported GPU): go on with the
        eager tower, said once. False when the tower is not a compiled one (``exc`` is raised)."""
        visual = self.model.visual
        original = getattr(visual, "_orig_mod", None)
        if original is None:
            return False
        self.model.visual = original  # type: ignore[assignment]
        self.jit, self._jit_batch = False, None
        message = (f"torch.compile failed on this machine ({type(exc).__name__}); the image tower runs "
                   "eagerly (ECHOCLIP_COMPILE=0 skips the attempt)")
        if self.note is not None:
            self.note(message)
        else:
            import warnings

            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return True

    @torch.inference_mode()
    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Unnormalised text embeddings (N,E) in fp32 for token ids (N,L)."""
        with autocast(self.device, self.dtype):
            return self.model.encode_text(ids.to(self.device)).float()


def assemble(bundle: Bundle, device: torch.device, dtype: torch.dtype, backend: str = "torch",
             precision: str | None = None, *, jit: bool = False, lazy: bool = False) -> EchoClip:
    """The model of a verified ``bundle`` whose image tower runs on ``backend`` (built already, when
    it needs building). The network is built now for eager torch unless ``lazy``; with another
    backend it is built only if the text tower is used."""
    build = functools.partial(build_network, bundle, device, jit)
    module = build() if backend == "torch" and not lazy else None
    model = EchoClip(module, bundle=bundle, device=device, dtype=dtype, _build=None if module else build, jit=jit)
    if backend != "torch":
        model.tower = registry.get(backend).tower(bundle, precision or "fp32")
    return model


def reference(bundle: Bundle) -> EchoClip:
    """The eager fp32 CPU model every CPU backend is built from and measured against (lazy)."""
    return assemble(bundle, torch.device("cpu"), torch.float32, lazy=True)


def build_network(bundle: Bundle, torch_device: torch.device, compile: bool = False) -> EchoClipModel:
    """The network with the bundle's checked weights, on ``torch_device``."""
    state = bundle.state_dict()
    model = build_skeleton(bundle.model_cfg)  # no memory until the checked tensors are assigned
    weights_mod.check_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, state)
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(torch_device).eval()
    if torch_device.type == "cuda":
        model.visual.to(memory_format=torch.channels_last)
    if compile:
        # CUDA graphs (torch.compile's reduce-overhead mode) replay the whole tower as one launch:
        # opt-in (ECHOCLIP_CUDA_GRAPHS=1) until bench/gpu_probe.py has measured them on a GPU
        graphs = torch_device.type == "cuda" and os.environ.get("ECHOCLIP_CUDA_GRAPHS") == "1"
        model.visual = torch.compile(model.visual, dynamic=False,  # type: ignore[assignment]
                                     mode="reduce-overhead" if graphs else None)
    return model
