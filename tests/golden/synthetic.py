"""Deterministic tensors for golden tests, shared by the test suite and scripts/make_golden.py.

Weights are drawn per tensor from numpy's PCG64 seeded by the tensor's name, so the same names and
shapes give the same values in any environment (the golden script's OpenCLIP venv and the test
venv alike). Scales keep activations in a realistic range: fan-in scaled matrices, LayerNorm
weights near 1, layer-scale gammas large enough that every block matters.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

# Two tiny OpenCLIP model configs of the real architecture families: convnext_atto (1x1-conv MLP)
# and convnext_tiny (Linear MLP, the same block type as EchoCLIP's convnext_base).
TINY_CONFIGS = {
    "atto": {
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "timm_drop": 0.0, "image_size": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
    },
    "tiny": {
        "embed_dim": 48,
        "vision_cfg": {"timm_model_name": "convnext_tiny", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "timm_drop": 0.0, "image_size": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 96, "heads": 4, "layers": 3},
    },
}
PREPROCESS_CFG = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}

# Token id rows: start, some real CLIP BPE ids, end (the argmax), padding; one row fills all 77.
TEXT_IDS = [
    [49406, 320, 2830, 44602, 522, 621, 268, 17001, 533, 2881, 49407],
    [49406, 6215, 1982, 49407],
    [49406, 11184, 29771, 740, 26788, 533, 274, 276, 12475, 49407],
    [49406] + [(i * 7919) % 49000 + 1 for i in range(75)] + [49407],
]


def _rng(name: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(zlib.crc32(name.encode())))


def synthetic_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    normal = _rng(name).standard_normal(shape).astype(np.float32)
    leaf = name.rsplit(".", 1)[-1]
    if name == "logit_scale":
        return torch.tensor(math.log(1 / 0.07), dtype=torch.float32)
    if leaf == "gamma":
        return torch.from_numpy(0.5 + 0.1 * normal)
    if len(shape) == 1 and leaf == "weight":  # LayerNorm scales
        return torch.from_numpy(1.0 + 0.1 * normal)
    if len(shape) == 1:  # biases
        return torch.from_numpy(0.02 * normal)
    if name in ("token_embedding.weight", "positional_embedding"):
        return torch.from_numpy(0.05 * normal)
    fan_in = shape[0] if name == "text_projection" else int(np.prod(shape[1:]))
    return torch.from_numpy(normal / math.sqrt(fan_in))


def synthetic_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {name: synthetic_tensor(name, tuple(shape)) for name, shape in sorted(shapes.items())}


def synthetic_images(n: int, size: int) -> torch.Tensor:
    """Normalised-image-like inputs (N,3,size,size): smooth structure plus noise."""
    rng = np.random.Generator(np.random.PCG64(1234))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([np.sin(6 * x + k) * np.cos(4 * y - k) for k in range(3)])
    images = base[None] + 0.5 * rng.standard_normal((n, 3, size, size)).astype(np.float32)
    return torch.from_numpy(images.astype(np.float32))


def text_ids() -> torch.Tensor:
    rows = [r + [0] * (77 - len(r)) for r in TEXT_IDS]
    return torch.tensor(rows, dtype=torch.long)
