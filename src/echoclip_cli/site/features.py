"""A head's features: the L2-normalised video embedding and, optionally, the zero-shot score.

The zero-shot score is computed from the one (mean) embedding, by the released protocol with a
single "frame" (:func:`echoclip_cli.zeroshot.regression` on one row: the lower median of the
top 20 % of the candidates ranked by cosine; binary: the mean cosine with the prompts). Fitting
and predicting compute it the same way from the same vector, so a store that kept only video
embeddings, an ``--embeddings`` file and a store with frames all give one feature.
"""

from __future__ import annotations

import numpy as np

from ..zeroshot import TOP_FRACTION, normalise


def zero_shot_feature(kind: str, embeddings: np.ndarray, prompts: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    """(N,) zero-shot scores of N video embeddings against a task's normalised prompts (K,E)."""
    X = normalise(np.asarray(embeddings, dtype=np.float64))
    similarity = X @ np.asarray(prompts, dtype=np.float64).T  # N,K
    if kind == "binary":
        return similarity.mean(axis=1)
    assert values is not None
    top = max(1, int(similarity.shape[1] * TOP_FRACTION))
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :top]
    ranked = np.sort(np.asarray(values, dtype=np.float64)[order], axis=1)
    return ranked[:, (top - 1) // 2]  # the lower median, as torch.median takes it


def design(embeddings: np.ndarray, zero_shot: np.ndarray | None) -> np.ndarray:
    """(N, E [+1]) float64: normalised embeddings, then the zero-shot score when given."""
    X = normalise(np.asarray(embeddings, dtype=np.float64))
    return X if zero_shot is None else np.hstack([X, np.asarray(zero_shot, dtype=np.float64)[:, None]])
