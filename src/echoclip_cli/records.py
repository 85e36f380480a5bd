"""Result records shared by the pipeline, the store and the use cases (numpy only: no torch here,
so reading a store or checking arguments does not load the model stack)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class VideoEmbedding:
    """One input's result: its embedding, or the reason it has none."""

    source: str
    embedding: np.ndarray | None = None  # (E,) mean of normalised frame embeddings
    frame_embeddings: np.ndarray | None = None  # (T,E) normalised, when asked for
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def n_frames(self) -> int:
        return len(self.meta.get("frame_indices", [])) if self.ok else 0
