"""A head's features: the L2-normalised video embedding and, optionally, the zero-shot score.

The zero-shot score is computed from the one (mean) embedding, by the released protocol with a
single "frame" (:func:`echoclip_cli.zeroshot.regression` on one row: the lower median of the
values of the top 20 % of the candidates by cosine; binary: the mean cosine with the prompts).
Which candidates make the top 20 % when two tie exactly at its edge is left to ``argpartition``
(the same at fit and predict time); exact ties do not occur with real weights. Fitting
and predicting compute it the same way from the same vector, so a store that kept only video
embeddings, an ``--embeddings`` file and a store with frames all give one feature.
"""

from __future__ import annotations

import numpy as np

from ..zeroshot import TOP_FRACTION


def zero_shot_feature(kind: str, embeddings: np.ndarray, prompts: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    """(N,) zero-shot scores of N video embeddings against a task's normalised prompts (K,E),
    computed in float32 (the embeddings' own precision) at fit and predict time alike."""
    X = np.asarray(embeddings, dtype=np.float32)
    X = X / np.maximum(np.sqrt(np.einsum("ij,ij->i", X, X)), 1e-12)[:, None]
    similarity = X @ np.asarray(prompts, dtype=np.float32).T  # N,K
    if kind == "binary":
        return similarity.mean(axis=1, dtype=np.float64)
    assert values is not None
    top = max(1, int(similarity.shape[1] * TOP_FRACTION))
    chosen = np.argpartition(-similarity, top - 1, axis=1)[:, :top]  # the top 20 %, in no order
    ranked = np.partition(np.asarray(values, dtype=np.float64)[chosen], (top - 1) // 2, axis=1)
    return ranked[:, (top - 1) // 2]  # the lower median, as torch.median takes it


def design(embeddings: np.ndarray, zero_shot: np.ndarray | None) -> np.ndarray:
    """(N, E [+1]) float64: normalised embeddings, then the zero-shot score when given."""
    E = embeddings.shape[1]
    X = np.empty((embeddings.shape[0], E + (zero_shot is not None)), dtype=np.float64)
    X[:, :E] = embeddings
    rows = X[:, :E]
    rows /= np.maximum(np.sqrt(np.einsum("ij,ij->i", rows, rows)), 1e-12)[:, None]
    if zero_shot is not None:
        X[:, E] = zero_shot
    return X
