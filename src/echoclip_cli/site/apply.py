"""A head applied to one video: its value (or probability), interval (or set) and abstention."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import zero_shot_feature
from .head import Head


@dataclass(frozen=True)
class HeadValue:
    """One video's head output; ``value`` and the bounds are None when it abstains."""

    head: str
    value: float | None
    low: float | None = None
    high: float | None = None
    prediction_set: list[str] | None = None
    abstain: bool = False
    abstain_reason: str | None = None


def apply_head(head: Head, frames: np.ndarray, prompts: np.ndarray | None, values: np.ndarray | None,
               digits: int = 2) -> HeadValue:
    """``head`` on a video's normalised frame embeddings (T,E): its mean is the video embedding;
    the zero-shot feature is computed from it with the task's prompts (``values``: regression)."""
    mean = np.asarray(frames, dtype=np.float64).mean(axis=0)[None, :]
    zero_shot = None
    if head.zero_shot:
        assert prompts is not None
        zero_shot = zero_shot_feature(head.kind, mean, prompts, values)
    out = head.predict(mean, zero_shot)
    if out.abstain[0]:
        return HeadValue(head.name, None, abstain=True, abstain_reason=head.abstain_reason(float(out.distance[0])))
    if head.kind == "regression":
        assert out.low is not None and out.high is not None
        return HeadValue(head.name, round(float(out.value[0]), digits), round(float(out.low[0]), digits),
                         round(float(out.high[0]), digits))
    assert out.sets is not None
    return HeadValue(head.name, round(float(out.value[0]), 4), prediction_set=list(out.sets[0]))
