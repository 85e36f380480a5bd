"""How pixels must be prepared for a model: stored in each weights bundle, hashed into every output.

The defaults reproduce the released EchoCLIP pipeline (``src/echoclip_cli/preprocess.py`` says how): frames
0, 2, …, 38; centre crop to a square; a further 10 % removed on each side ("zoom"); bicubic resize
(a = −0.75) to 224×224; scale to [0, 1]; normalise with OpenAI CLIP's mean and std. The released
pipeline decoded with OpenCV, so the model was fed frames in **BGR** order as if they were RGB:
``channel_order="BGR"`` reproduces that. Embeddings made with different settings are not
comparable, which is why every store and output records :meth:`PreprocessConfig.digest`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from .errors import ConfigError

# OpenAI CLIP's normalisation constants, kept by OpenCLIP's convnext_base config and by EchoCLIP.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MASK_MODES = ("auto", "sector", "none")


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    channel_order: str = "BGR"  # order of the channels handed to the model (released pipeline: BGR)
    zoom: float = 0.1  # fraction removed from each side after the square centre crop
    interpolation: str = "bicubic"  # a = -0.75, pixel-centre aligned (OpenCV INTER_CUBIC)
    frames: int = 20  # frames sampled per video (at most)
    stride: int = 2  # every 2nd frame ...
    start: int = 0  # ... from frame 0: frames 0, 2, ..., 38
    # "sector": black out what lies outside the moving scan sector (overlays, text, ECG);
    # "auto": "sector" for DICOM (scanner output carries burned-in overlays), nothing for video
    # files (research sets such as the released example are distributed already masked, and
    # masking them again moves the released pipeline's results); "none": never.
    mask: str = "auto"

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ConfigError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")
        if not 0 <= self.zoom < 0.5:
            raise ConfigError(f"zoom must be in [0, 0.5), not {self.zoom}")
        if self.interpolation != "bicubic":
            raise ConfigError(f"interpolation {self.interpolation!r} is not supported (bicubic only)")
        if self.mask not in MASK_MODES:
            raise ConfigError(f"mask must be one of {', '.join(MASK_MODES)}, not {self.mask!r}")
        if min(self.image_size, self.frames, self.stride) < 1 or self.start < 0:
            raise ConfigError("image_size, frames and stride must be positive and start non-negative")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean and std need three values each, std positive")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown preprocess settings: {', '.join(unknown)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    def replace(self, **changes: Any) -> "PreprocessConfig":
        return PreprocessConfig.from_dict({**self.to_dict(), **changes})

    def digest(self) -> str:
        """A short, stable hash of every setting (16 hex digits of a sha256 over canonical JSON)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def frame_indices(self) -> list[int]:
        """Frame numbers to sample, before clipping to the video's length."""
        return [self.start + i * self.stride for i in range(self.frames)]


@dataclass(frozen=True)
class Sampling:
    """Which frames and mask a run takes, where it departs from the weights' own settings (None:
    keep the bundle's value). One value instead of four loose options."""

    frames: int | None = None
    stride: int | None = None
    start: int | None = None
    mask: str | None = None

    def apply(self, cfg: PreprocessConfig) -> PreprocessConfig:
        changes = {k: v for k, v in asdict(self).items() if v is not None}
        return cfg.replace(**changes) if changes else cfg


def from_openclip(preprocess_cfg: Mapping[str, Any] | None, image_size: int) -> PreprocessConfig:
    """Our config from an OpenCLIP ``preprocess_cfg`` (mean/std) and the tower's image size."""
    cfg = dict(preprocess_cfg or {})
    mean = tuple(float(v) for v in cfg.get("mean", CLIP_MEAN))
    std = tuple(float(v) for v in cfg.get("std", CLIP_STD))
    return PreprocessConfig(image_size=image_size, mean=mean, std=std)  # type: ignore[arg-type]
