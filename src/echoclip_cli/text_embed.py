"""Text embeddings, with an on-disk cache so zero-shot runs do not re-embed their prompts.

The cache is an SQLite file in the weights home (``$ECHOCLIP_HOME/cache/text.sqlite``). Each row
is keyed by sha256(weights sha256, precision, the exact token ids), so a changed tokenizer,
vocabulary, text or checkpoint can never be served an old vector; deleting the file is always
safe. A damaged cache file is set aside and rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .tokenizer import tokenizer_for
from .files import home

if TYPE_CHECKING:
    from .inference import EchoClip

# Each row carries a digest of its key and vector: a row whose vector was swapped, shuffled or
# damaged is not served (an EF moved 9 points on shuffled rows) but dropped and embedded again.
# (v2: the table without digests is left alone and no longer read.)
_TABLE = "text_embeddings_v2"
_SCHEMA = f"CREATE TABLE IF NOT EXISTS {_TABLE} (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB, digest TEXT)"


def _digest(key: str, dim: int, blob: bytes) -> str:
    return hashlib.sha256(f"{key}|{dim}|".encode() + blob).hexdigest()[:32]


def cache_path() -> Path:
    return home() / "cache" / "text.sqlite"


class TextEmbeddingCache:
    """Vectors by key in one SQLite table; every failure degrades to "not cached"."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_path()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10)
            db.execute(_SCHEMA)
            db.execute(f"SELECT count(*) FROM {_TABLE}").fetchone()
        except sqlite3.DatabaseError:
            self._set_aside()
            return None
        except OSError:
            return None
        self._db = db
        return db

    def _set_aside(self) -> None:
        try:
            os.replace(self.path, self.path.with_suffix(".damaged"))
        except OSError:
            pass  # cannot move it (read-only home): it is not used either way, only re-created when possible

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        db = self._connect()
        if db is None or not keys:
            return {}
        found: dict[str, np.ndarray] = {}
        bad: list[str] = []
        try:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, dim, vec, digest FROM {_TABLE} WHERE key IN ({marks})"
                for key, dim, blob, digest in db.execute(query, chunk):
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.size == dim and digest == _digest(key, dim, blob) and np.isfinite(vec).all():
                        found[key] = vec
                    else:
                        bad.append(key)
        except sqlite3.DatabaseError:
            return {}
        self._drop(bad)
        return found

    def _drop(self, keys: list[str]) -> None:
        """Forget rows that failed their check (they are embedded again and put back)."""
        if not keys or self._db is None:
            return
        try:
            with self._db:
                self._db.executemany(f"DELETE FROM {_TABLE} WHERE key = ?", [(k,) for k in keys])
        except sqlite3.DatabaseError:
            pass  # a read-only cache: the rows stay, and are still never served

    def put(self, items: dict[str, np.ndarray]) -> None:
        db = self._connect()
        if db is None or not items:
            return
        rows = []
        for key, vector in items.items():
            blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
            rows.append((key, int(vector.size), blob, _digest(key, int(vector.size), blob)))
        try:
            with db:
                db.executemany(f"INSERT OR REPLACE INTO {_TABLE} VALUES (?, ?, ?, ?)", rows)
        except sqlite3.DatabaseError:
            pass  # read-only home or full disk: the vectors are still returned, just not kept

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> "TextEmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key(weights_sha256: str, precision: str, ids: torch.Tensor) -> str:
    digest = hashlib.sha256(f"{weights_sha256}|{precision}|".encode())
    digest.update(ids.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def embed_token_ids(
    model: "EchoClip", ids: torch.Tensor, *, cache: TextEmbeddingCache | None = None, batch_size: int = 128
) -> torch.Tensor:
    """Unnormalised embeddings (N,E) for token ids (N,L), served from ``cache`` where present."""
    keys = [_key(model.weights_sha256, model.text_precision, row) for row in ids]
    cached = cache.get(keys) if cache else {}
    missing = [i for i, k in enumerate(keys) if k not in cached]
    out = torch.empty(len(keys), model.embed_dim)
    for i, k in enumerate(keys):
        if k in cached:
            out[i] = torch.from_numpy(cached[k].copy())
    fresh: dict[str, np.ndarray] = {}
    for start in range(0, len(missing), batch_size):
        rows = missing[start : start + batch_size]
        vectors = model.encode_text(ids[rows]).cpu()
        out[rows] = vectors
        fresh.update({keys[i]: vectors[j].numpy() for j, i in enumerate(rows)})
    if cache:
        cache.put(fresh)
    return out


def embed_ids(model: "EchoClip", ids: torch.Tensor, *, use_cache: bool = True) -> torch.Tensor:
    """Unnormalised embeddings (N,E) for token ids (N,L), through the on-disk cache unless told not to."""
    if not use_cache:
        return embed_token_ids(model, ids)
    with TextEmbeddingCache() as cache:
        return embed_token_ids(model, ids, cache=cache)


def embed_texts(model: "EchoClip", texts: Sequence[str], *, template_vocab: str | os.PathLike[str] | None = None,
                use_cache: bool = True) -> torch.Tensor:
    """Unnormalised text embeddings (N,E) of ``texts`` with the tokenizer ``model``'s weights were
    trained with (``template_vocab``: EchoCLIP-R's vocabulary where the bundle lacks it)."""
    tokenizer = tokenizer_for(model.bundle, template_vocab=template_vocab)
    return embed_ids(model, tokenizer(list(texts)), use_cache=use_cache)
