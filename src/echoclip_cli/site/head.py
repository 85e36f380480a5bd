"""A fitted head: its coefficients, its conformal calibration, its distance model and where it came from.

One file: safetensors tensors (coefficients, distance model, thresholds) whose metadata holds the
JSON provenance under ``echoclip_head``: task, kind, coverage, whether the zero-shot score is a
feature, the weights (name, sha256) and preprocessing digest of the embeddings it was fitted on,
the label source, n, the calibration n, the regularisation, the cross-validated metrics and the
date. A head refuses embeddings made with other weights or preprocessing (:meth:`Head.check`).

:meth:`Head.predict` is deterministic: float64 numpy on the file's float64 tensors, so one head
file gives bit-identical outputs for one input, run after run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from .conformal import Distance
from .features import design
from .linear import Linear, sigmoid

FORMAT = "echoclip-head"
FORMAT_VERSION = 1
KINDS = ("regression", "binary")


@dataclass(frozen=True)
class HeadPredictions:
    """Per input: the head's value (regression) or probability (binary), its interval or set,
    its distance from the training data, and whether it abstains (then no value is given)."""

    value: np.ndarray  # (N,) regression value, or binary probability of "yes"
    low: np.ndarray | None  # regression interval
    high: np.ndarray | None
    sets: list[tuple[str, ...]] | None  # binary prediction sets
    distance: np.ndarray
    abstain: np.ndarray  # (N,) bool


@dataclass(frozen=True)
class Head:
    task: str
    kind: str
    linear: Linear
    zero_shot: bool
    distance: Distance
    distance_threshold: float
    coverage: float
    quantile: float  # regression: the interval half-width; binary: the set threshold on 1 − p
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.provenance.get("name") or self.task)

    # ------------------------------------------------------------------ use

    def check(self, weights_sha256: str, preprocess_digest: str | None, what: str = "the model") -> None:
        """A usage error unless the embeddings to score come from this head's weights and preprocessing."""
        want = self.provenance.get("weights_sha256")
        if want != weights_sha256:
            raise UsageError(f"head {self.name!r} was fitted on embeddings of weights {str(want)[:12]}…, not those of "
                             f"{what} ({weights_sha256[:12]}…)",
                             hint="use the weights the head was fitted with, or fit a head for these")
        digest = self.provenance.get("preprocess_digest")
        if preprocess_digest is not None and digest != preprocess_digest:
            raise UsageError(f"head {self.name!r} was fitted on embeddings preprocessed otherwise ({digest} ≠ "
                             f"{preprocess_digest})", hint="use the frame sampling and mask the head was fitted with")

    def predict(self, embeddings: np.ndarray, zero_shot: np.ndarray | None = None) -> HeadPredictions:
        """Predictions for (N,E) video embeddings (and their zero-shot scores when the head uses them)."""
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if self.zero_shot and zero_shot is None:
            raise UsageError(f"head {self.name!r} needs the zero-shot score as a feature")
        X = design(embeddings, np.atleast_1d(zero_shot) if self.zero_shot else None)
        decision = self.linear.decision(X)
        distance = self.distance.of(design(embeddings, None))
        abstain = ~(distance <= self.distance_threshold)
        if self.kind == "regression":
            return HeadPredictions(decision, decision - self.quantile, decision + self.quantile, None, distance, abstain)
        p = sigmoid(decision)
        sets = [tuple(label for label, prob in (("no", 1.0 - q), ("yes", q)) if 1.0 - prob <= self.quantile)
                for q in p]
        return HeadPredictions(p, None, None, sets, distance, abstain)

    def abstain_reason(self, distance: float) -> str:
        return (f"unlike the calibration data: distance {distance:.3g} beyond the calibration set's "
                f"{self.provenance.get('abstain_quantile', '?')} quantile {self.distance_threshold:.3g}")

    # ------------------------------------------------------------------ file

    def save(self, path: str | Path) -> Path:
        """Write the head file (atomically)."""
        from safetensors.numpy import save

        from ..files import atomic_write

        tensors = {"coef": self.linear.coef, "intercept": np.asarray([self.linear.intercept]),
                   "distance_mean": self.distance.mean, "distance_axes": self.distance.axes,
                   "distance_variances": self.distance.variances,
                   "scalars": np.asarray([self.distance.residual, self.distance_threshold, self.quantile])}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": self.task, "kind": self.kind,
                "zero_shot": self.zero_shot, "coverage": self.coverage, **self.provenance}
        data = save({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()},
                    metadata={"echoclip_head": json.dumps(meta, sort_keys=True)})
        path = Path(path)
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Head":
        """Read a head file; a usage error when it is missing or not a head."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        path = Path(path)
        if not path.is_file():
            raise UsageError(f"no such head file: {path}", hint="make one with `echoclip fit`")
        try:
            raw = path.read_bytes()
            tensors = load(raw)
            meta = json.loads(_metadata(raw).get("echoclip_head", "{}"))
        except (OSError, SafetensorError, json.JSONDecodeError, ValueError) as exc:
            raise UsageError(f"{path}: not a head file ({type(exc).__name__})") from None
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION or meta.get("kind") not in KINDS:
            raise UsageError(f"{path}: not an echoclip head file (format {meta.get('format_version')!r})")
        scalars = tensors["scalars"]
        provenance = {k: v for k, v in meta.items()
                      if k not in ("format", "format_version", "task", "kind", "zero_shot", "coverage")}
        provenance.setdefault("name", path.stem)
        return cls(task=meta["task"], kind=meta["kind"],
                   linear=Linear(tensors["coef"], float(tensors["intercept"][0])), zero_shot=bool(meta["zero_shot"]),
                   distance=Distance(tensors["distance_mean"], tensors["distance_axes"], tensors["distance_variances"],
                                     float(scalars[0])),
                   distance_threshold=float(scalars[1]), coverage=float(meta["coverage"]), quantile=float(scalars[2]),
                   provenance=provenance)


def _metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header."""
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    return dict(header.get("__metadata__") or {})

