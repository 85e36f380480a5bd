"""The EchoCLIP model in plain torch: a ConvNeXt image tower and a causal text transformer.

Both released EchoCLIP checkpoints are OpenCLIP ``convnext_base`` models. This file rebuilds that
architecture from the checkpoint's OpenCLIP ``model_cfg`` alone, with parameter names that mirror
the checkpoint keys (``visual.trunk.stages.2.blocks.7.mlp.fc1.weight`` …) so loading is a
dictionary match. No I/O, printing or device choice happens here: see ``weights.py`` and
``inference.py``.

Shapes use N (batch), C (channels), H/W (spatial), L (context length), D (width), E (embed dim).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import ConfigError

# timm ConvNeXt variants an OpenCLIP config can name: stage depths, stage widths, whether the MLP is
# made of 1x1 convolutions (the small variants), and the LayerNorm epsilon. Values as timm defines
# the architectures; convnext_base is the one EchoCLIP uses.
CONVNEXT_VARIANTS: dict[str, dict[str, Any]] = {
    "convnext_atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True),
    "convnext_femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), conv_mlp=True),
    "convnext_pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), conv_mlp=True),
    "convnext_nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), conv_mlp=True),
    "convnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "convnext_small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "convnext_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "convnext_large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
    "convnext_xlarge": dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
    "convnext_xxlarge": dict(depths=(3, 4, 30, 3), dims=(384, 768, 1536, 3072), norm_eps=1e-5),
}


@dataclass(frozen=True)
class VisionConfig:
    """The image tower: a timm ConvNeXt trunk, global average pool, LayerNorm, linear projection."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    conv_mlp: bool = False
    norm_eps: float = 1e-6
    image_size: int = 224
    proj_bias: bool = False


@dataclass(frozen=True)
class TextConfig:
    """The text tower: a pre-LN causal transformer pooled at the end-of-text token."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class ClipConfig:
    embed_dim: int
    vision: VisionConfig
    text: TextConfig

    @classmethod
    def from_openclip(cls, model_cfg: Mapping[str, Any]) -> "ClipConfig":
        """Read an OpenCLIP ``model_cfg`` (the ``model_cfg`` entry of ``open_clip_config.json``)."""
        if model_cfg.get("quick_gelu"):
            raise ConfigError("unsupported model config: quick_gelu (EchoCLIP uses exact GELU)")
        try:
            vision_cfg = dict(model_cfg["vision_cfg"])
            text_cfg = dict(model_cfg["text_cfg"])
            embed_dim = int(model_cfg["embed_dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"model config lacks {exc}: expected embed_dim, vision_cfg, text_cfg") from None
        return cls(embed_dim=embed_dim, vision=_vision_config(vision_cfg), text=_text_config(text_cfg))


def _vision_config(cfg: dict[str, Any]) -> VisionConfig:
    name = cfg.get("timm_model_name")
    if name not in CONVNEXT_VARIANTS:
        known = ", ".join(CONVNEXT_VARIANTS)
        raise ConfigError(f"unsupported image tower {name!r}: echoclip builds timm ConvNeXt models ({known})")
    if cfg.get("timm_pool", "") not in ("", "avg"):
        raise ConfigError(f"unsupported timm_pool {cfg['timm_pool']!r}: ConvNeXt towers pool by average")
    if cfg.get("timm_proj", "linear") != "linear":
        raise ConfigError(f"unsupported timm_proj {cfg['timm_proj']!r}: only 'linear' is implemented")
    variant = CONVNEXT_VARIANTS[name]
    return VisionConfig(
        depths=tuple(variant["depths"]),
        dims=tuple(variant["dims"]),
        conv_mlp=variant.get("conv_mlp", False),
        norm_eps=variant.get("norm_eps", 1e-6),
        image_size=int(cfg.get("image_size", 224)),
        proj_bias=bool(cfg.get("timm_proj_bias", False)),
    )


# Text-tower options OpenCLIP offers and the value the CLIP transformer we build assumes; a config
# that sets any of them otherwise describes a different architecture, so we refuse it by name.
_TEXT_DEFAULTS: dict[str, Any] = {
    "hf_model_name": None, "ls_init_value": None, "embed_cls": False, "no_causal_mask": False,
    "final_ln_after_pool": False, "pool_type": "argmax", "proj_bias": False, "proj_type": "linear",
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
    "scale_attn": False, "scale_fc": False, "act_kwargs": None, "norm_kwargs": None,
}


def _text_config(cfg: dict[str, Any]) -> TextConfig:
    unsupported = {k: cfg[k] for k, default in _TEXT_DEFAULTS.items() if cfg.get(k, default) != default}
    if unsupported:
        raise ConfigError(f"unsupported text tower settings {unsupported}: echoclip builds the CLIP text transformer")
    fields = ("context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio")
    return TextConfig(**{k: type(getattr(TextConfig, k))(cfg[k]) for k in fields if k in cfg})


# --------------------------------------------------------------------------- image tower


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # N,H,W,C
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # N,C,H,W


class Mlp(nn.Module):
    """Two layers with GELU between; 1x1 convolutions on NCHW when ``conv`` is set, else Linear on NHWC."""

    def __init__(self, dim: int, hidden: int, conv: bool) -> None:
        super().__init__()
        layer = (lambda i, o: nn.Conv2d(i, o, kernel_size=1)) if conv else nn.Linear
        self.fc1 = layer(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = layer(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, MLP x4, layer scale, residual."""

    def __init__(self, dim: int, conv_mlp: bool, eps: float) -> None:
        super().__init__()
        self.conv_mlp = conv_mlp
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=eps) if conv_mlp else nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, 4 * dim, conv=conv_mlp)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)  # N,C,H,W
        if self.conv_mlp:
            x = self.mlp(self.norm(x)) * self.gamma.reshape(1, -1, 1, 1)
        else:
            x = x.permute(0, 2, 3, 1)  # N,H,W,C
            x = self.mlp(self.norm(x)) * self.gamma
            x = x.permute(0, 3, 1, 2)  # N,C,H,W
        return x + shortcut


class ConvNeXtStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, cfg: VisionConfig) -> None:
        super().__init__()
        if in_dim != dim:  # stages 1-3 halve the resolution; stage 0 follows the stem directly
            self.downsample = nn.Sequential(
                LayerNorm2d(in_dim, eps=cfg.norm_eps), nn.Conv2d(in_dim, dim, kernel_size=2, stride=2)
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim, cfg.conv_mlp, cfg.norm_eps) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXtHead(nn.Module):
    """timm's ConvNeXt head as OpenCLIP leaves it: global average pool, then LayerNorm (no classifier)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=(2, 3), keepdim=True)  # N,C,1,1
        return self.norm(x).flatten(1)  # N,C


class ConvNeXt(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        dims = cfg.dims
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=cfg.norm_eps))
        in_dims = (dims[0],) + tuple(dims[:-1])
        self.stages = nn.Sequential(*(ConvNeXtStage(i, o, d, cfg) for i, o, d in zip(in_dims, dims, cfg.depths)))
        self.head = ConvNeXtHead(dims[-1], cfg.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))  # N,C_last


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, embed_dim: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        self.trunk = ConvNeXt(cfg)
        self.head = ProjectionHead(cfg.dims[-1], embed_dim, cfg.proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))  # N,E


# --------------------------------------------------------------------------- text tower


class Attention(nn.Module):
    """Multi-head self-attention with a packed q/k/v projection (``nn.MultiheadAttention`` key names)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # N,L,3D
        q, k, v = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)  # N,heads,L,D/h
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # N,heads,L,D/h
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class TextMlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = TextMlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


# --------------------------------------------------------------------------- CLIP


class EchoClipModel(nn.Module):
    """CLIP with a ConvNeXt image tower; ``encode_*`` return unnormalised N×E embeddings."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.config = cfg
        text = cfg.text
        if text.width % text.heads:
            raise ConfigError(f"text width {text.width} is not divisible by {text.heads} heads")
        self.visual = VisionTower(cfg.vision, cfg.embed_dim)
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.zeros(text.context_length, text.width))
        self.transformer = Transformer(text)
        self.ln_final = nn.LayerNorm(text.width)
        self.text_projection = nn.Parameter(torch.empty(text.width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def dtype(self) -> torch.dtype:
        return self.text_projection.dtype

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Embed normalised images (N,3,H,W) → (N,E)."""
        return self.visual(images)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Embed token ids (N,L) → (N,E), pooled at each row's largest id (the end-of-text token)."""
        x = self.token_embedding(ids) + self.positional_embedding  # N,L,D
        x = self.ln_final(self.transformer(x))  # N,L,D
        pooled = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]  # N,D
        return pooled @ self.text_projection  # N,E

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(ids)


def build_model(model_cfg: Mapping[str, Any]) -> EchoClipModel:
    """Build an (uninitialised) model from an OpenCLIP ``model_cfg``; load weights before use."""
    return EchoClipModel(ClipConfig.from_openclip(model_cfg))


class _SkipInit(TorchFunctionMode):
    """``torch.nn.init`` calls return their tensor untouched. On the meta device there is nothing to
    initialise, and torch runs ``normal_`` there through its Python reference kernels, whose first use
    imports ``torch._dynamo``: 1.6 s of every command's start-up, for no number."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def build_skeleton(model_cfg: Mapping[str, Any]) -> EchoClipModel:
    """The model's structure on the meta device, no memory and no initialisation: its shapes, or a
    network to fill with ``load_state_dict(..., assign=True)``."""
    with torch.device("meta"), _SkipInit():
        return build_model(model_cfg)
