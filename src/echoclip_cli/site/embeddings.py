"""Video embeddings to fit a head on: from a store, or from an embeddings file made elsewhere.

**The embeddings file** (``--embeddings FILE``) is a NumPy ``.npz`` archive (``np.savez``; read
without pickle) holding:

- ``embeddings``: (N, E) float — one video embedding per row (the mean of its L2-normalised frame
  embeddings, as echoclip stores them; the head normalises each row again);
- ``ids``: (N,) str — each row's id, matched against a labels file's ``source`` column (exact, else
  the unique file name);
- ``studies``: (N,) str, optional — each row's study, matched against a ``study`` column and used
  to keep a study's videos in one fold (default: the ids);
- ``weights_sha256`` and ``preprocess_digest``: str scalars — the weights and preprocessing that
  made the vectors (``echoclip store info`` shows a store's); a head remembers them and refuses
  other embeddings. ``weights``: str scalar, optional — the weights' name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Sequence

import numpy as np

from ..errors import UsageError
from ..records import study_key


@dataclass(frozen=True)
class EmbeddingTable:
    ids: np.ndarray  # (N,) str
    studies: np.ndarray  # (N,) str
    vectors: np.ndarray  # (N,E)
    weights: str
    weights_sha256: str
    preprocess_digest: str
    source: str  # where they were read: the store or file

    def take(self, rows: np.ndarray) -> "EmbeddingTable":
        return EmbeddingTable(self.ids[rows], self.studies[rows], self.vectors[rows], self.weights,
                              self.weights_sha256, self.preprocess_digest, self.source)


def from_store(store: Any, clip_types: Sequence[str] | None) -> EmbeddingTable:
    """A store's rows of the scored clip types (rows stored before clips were classified count)."""
    keep = [i for i, row in enumerate(store.rows)
            if clip_types is None or row.get("clip_type") is None or row.get("clip_type") in clip_types]
    rows = [store.rows[i] for i in keep]
    return EmbeddingTable(ids=np.asarray([str(r.get("source", "")) for r in rows], dtype=str),
                          studies=np.asarray([study_key(str(r.get("source", "")), r) for r in rows], dtype=str),
                          vectors=np.asarray(store.embeddings)[keep],
                          weights=str(store.header["weights"].get("name")), weights_sha256=store.weights_sha256,
                          preprocess_digest=store.preprocess_digest, source=str(store.path))


REQUIRED = ("embeddings", "ids", "weights_sha256", "preprocess_digest")


def read_embeddings(path: str | Path) -> EmbeddingTable:
    """An embeddings file (the format above); a usage error naming what is missing or wrong."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such embeddings file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{path}: not a .npz embeddings file ({type(exc).__name__})",
                         hint="np.savez(path, embeddings=…, ids=…, weights_sha256=…, preprocess_digest=…)") from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise UsageError(f"{path}: no {', '.join(missing)} array", hint=f"an embeddings file holds {', '.join(REQUIRED)}")
    vectors, ids = arrays["embeddings"], arrays["ids"].astype(str).ravel()
    studies = arrays["studies"].astype(str).ravel() if "studies" in arrays else ids
    if vectors.ndim != 2 or vectors.shape[0] != ids.size or studies.size != ids.size:
        raise UsageError(f"{path}: embeddings of shape {vectors.shape} for {ids.size} ids and {studies.size} studies")
    if not np.issubdtype(vectors.dtype, np.floating) or not np.isfinite(vectors).all():
        raise UsageError(f"{path}: the embeddings must be finite floats")
    return EmbeddingTable(ids=ids, studies=studies, vectors=vectors,
                          weights=str(arrays["weights"]) if "weights" in arrays else "",
                          weights_sha256=str(arrays["weights_sha256"]),
                          preprocess_digest=str(arrays["preprocess_digest"]), source=str(path))


def match_rows(table: EmbeddingTable, key: str, values: Sequence[str]) -> list[np.ndarray]:
    """For each label key (a study, or a source), the table rows it labels: every video of a
    study; a source's row by its exact id, else by its unique file name."""
    column = table.studies if key == "study" else table.ids
    index: dict[str, list[int]] = {}
    for i, name in enumerate(column):
        index.setdefault(str(name), []).append(i)
    by_name: dict[str, list[int]] = {}
    if key == "source":
        for i, name in enumerate(column):
            by_name.setdefault(PurePath(str(name).replace("\\", "/")).name, []).append(i)
    out = []
    for value in values:
        rows = index.get(value)
        if rows is None and key == "source":
            found = by_name.get(PurePath(value.replace("\\", "/")).name, [])
            rows = found if len(found) == 1 else None
        out.append(np.asarray(rows or [], dtype=np.int64))
    return out
