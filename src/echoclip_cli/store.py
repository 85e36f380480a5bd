"""The embedding store: a folder of video embeddings that records which model and pixels made them.

Layout::

    STORE/
      store.json                  weights name + sha256, preprocess config + digest, embed dim
      part-000001-<id>.safetensors   embeddings (n,E) float32, frame_counts (n,), optional
                                     frame_embeddings (sum of frames, E); metadata "rows": one JSON
                                     row per video (source, source_sha256, UIDs, study date, patient
                                     key, n_frames, …)

Each part is written to a temporary name and renamed, so a run killed at any moment (even
``kill -9``) leaves only whole parts, and several processes can append to one store at once
(torchrun ranks, SLURM array tasks: parts have unique names); re-running skips every input
already stored, so each input ends up exactly once. A store refuses vectors from other weights or
other preprocessing. ``read_store(path)`` gives vectors and metadata in one call.

Every part records a sha256 over its rows and tensors (parts written before checksums carry
none), and :func:`read_part` is the one reader of parts: each reader (``read_store``, ``store
verify``, a resumed writer, the frame cache) gets a part verified or a :class:`StoreError` naming
it. A damaged part is left out whole: readers go on without its rows, and a resumed run does not
count its inputs as done, so it embeds them again (``echoclip store repair`` sets the part aside).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import EchoclipError, UsageError
from .files import atomic_write, atomic_write_text
from .identity import recognise
from .preprocess_config import PreprocessConfig
from .records import VideoEmbedding
from . import remembered

HEADER = "store.json"
FORMAT_VERSION = 1


class StoreError(EchoclipError):
    """A store cannot be read, or would mix incompatible embeddings."""


@dataclass
class Store:
    """Everything in a store, in one object: ``embeddings[i]`` belongs to ``rows[i]``."""

    path: Path
    header: dict[str, Any]
    embeddings: np.ndarray  # (N,E) float32
    rows: list[dict[str, Any]]
    frame_embeddings: list[np.ndarray] | None = None  # per row (T,E), when the store kept them
    damaged: list[str] = field(default_factory=list)  # parts left out: why each (``echoclip store verify``)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def weights_sha256(self) -> str:
        return self.header["weights"]["sha256"]

    @property
    def preprocess_digest(self) -> str:
        return self.header["preprocess"]["digest"]

    def check_weights(self, name: str, sha256: str) -> None:
        """Refuse to compare this store's vectors with a model of other weights."""
        check_weights(self.path, self.header, name, sha256)


def check_weights(path: Path, header: dict[str, Any], name: str, sha256: str) -> None:
    """A usage error unless the store (``header``) was made with the weights ``sha256``."""
    recorded = header["weights"]
    if recorded["sha256"] != sha256:
        raise UsageError(f"{path} holds embeddings from weights {recorded['name']!r} ({recorded['sha256'][:12]}…), "
                         f"not {name!r}", hint="leave out --weights to use the store's own weights")


TORCH_NUMERICS = {"backend": "torch", "precision": None}  # stores written before backends were recorded


def numerics_of(header: dict[str, Any]) -> dict[str, Any]:
    """Which backend and precision made a store's embeddings (precision None: not recorded)."""
    return {**TORCH_NUMERICS, **header.get("numerics", {})}


def _header(weights_name: str, weights_sha256: str, cfg: PreprocessConfig, embed_dim: int,
            numerics: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": "echoclip-store",
        "format_version": FORMAT_VERSION,
        "weights": {"name": weights_name, "sha256": weights_sha256},
        "preprocess": {"digest": cfg.digest(), "config": cfg.to_dict()},
        "numerics": {**TORCH_NUMERICS, **(numerics or {})},
        "embed_dim": embed_dim,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_header(path: Path) -> dict[str, Any]:
    try:
        header = json.loads((path / HEADER).read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise StoreError(f"{path}: not an embedding store (no {HEADER})") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the store header ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StoreError(f"{path / HEADER}: damaged store header") from None
    if header.get("format") != "echoclip-store" or header.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: unsupported store format {header.get('format_version')!r}")
    return header


def _check_compatible(path: Path, have: dict[str, Any], want: dict[str, Any]) -> None:
    if have["weights"]["sha256"] != want["weights"]["sha256"]:
        raise StoreError(
            f"{path} holds embeddings from weights {have['weights']['name']} ({have['weights']['sha256'][:12]}…), "
            f"not {want['weights']['name']} ({want['weights']['sha256'][:12]}…)",
            hint="use another --out store for other weights",
        )
    if have["preprocess"]["digest"] != want["preprocess"]["digest"]:
        raise StoreError(
            f"{path} holds embeddings made with other preprocessing ({have['preprocess']['digest']} ≠ "
            f"{want['preprocess']['digest']})",
            hint="use the store's frame sampling and mask settings, or another --out store",
        )
    held, made = numerics_of(have), numerics_of(want)
    if held["backend"] != made["backend"] or None not in (held["precision"], made["precision"]) \
            and held["precision"] != made["precision"]:
        raise StoreError(
            f"{path} holds embeddings made by the {held['backend']} backend in {held['precision'] or 'unrecorded'} "
            f"precision, not {made['backend']} {made['precision']}: one store never mixes them",
            hint=f"use --backend {held['backend']}" + (f" --precision {held['precision']}" if held["precision"] else "")
            + ", or another --out store",
        )


def _parts(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("part-*.safetensors"))


def part_checksum(tensors: dict[str, np.ndarray], rows_json: str) -> str:
    """sha256 over a part's rows and every tensor's name, shape, dtype and bytes."""
    digest = hashlib.sha256(rows_json.encode("utf-8"))
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{array.shape}|{array.dtype.str}|".encode())
        digest.update(array)  # the buffer itself: the bytes of tobytes(), without a copy
    return digest.hexdigest()


@dataclass(frozen=True)
class Part:
    """One part of a store, verified: ``rows[i]`` belongs to ``vectors[i]`` (and ``frames[i]``)."""

    path: Path
    rows: list[dict[str, Any]]
    has_frames: bool  # whether the part keeps per-frame embeddings (known to a rows-only read too)
    vectors: np.ndarray | None = None  # (n,E) float32; None for a rows-only read
    frames: list[np.ndarray] | None = None  # per row (T,E), when asked for and kept

    def __len__(self) -> int:
        return len(self.rows)


# Parts verified by this process, by path → (inode, size, mtime ns) when verified: a rows-only
# read of a part unchanged since then trusts that check instead of hashing its tensors again.
_verified: dict[Path, tuple[int, int, int]] = {}


def read_part(part: Path, *, frames: bool = False, rows_only: bool = False, verify: bool = True) -> Part:
    """A store part's rows and vectors (and per-video frames when ``frames``), its checksum
    verified; a :class:`StoreError` naming the part when it is damaged.

    ``rows_only``: the rows without the tensors, still verified — which reads and hashes the
    tensors, unless this process verified the unchanged file before (same inode, size and mtime).
    ``verify=False`` (rows only): the rows as recorded, unchecked, for an index that reads the part
    again, verified, before it hands out anything from it (the frame cache). Tensors are never
    handed out unverified."""
    if not (verify or rows_only):
        raise ValueError("read_part hands out tensors only verified: verify=False needs rows_only=True")
    stamp = _stamp(part) if verify else None
    if rows_only and (not verify or (stamp is not None and _verified.get(part) == stamp)):
        metadata, _, names = _open_part(part, tensors=False)
        return Part(part, _parse_rows(part, metadata), "frame_embeddings" in names)
    metadata, tensors, names = _open_part(part, tensors=True)
    rows = _parse_rows(part, metadata)
    _verify(part, metadata, rows, tensors)
    if stamp is not None:
        _verified[part] = stamp
    if rows_only:
        return Part(part, rows, "frame_embeddings" in names)
    per_video = None
    if frames and "frame_embeddings" in tensors:
        per_video = np.split(tensors["frame_embeddings"], np.cumsum(tensors["frame_counts"])[:-1])
    return Part(part, rows, "frame_embeddings" in names, tensors["embeddings"], per_video)


def _stamp(part: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime ns) of a part; None when it cannot be stat'ed (opening it then fails)."""
    try:
        st = os.stat(part)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _open_part(part: Path, *, tensors: bool) -> tuple[dict[str, str], dict[str, np.ndarray], set[str]]:
    """A part's metadata, its tensors (when ``tensors``) and its tensor names, unverified."""
    from safetensors import safe_open

    try:
        with safe_open(str(part), framework="np") as fh:
            metadata = fh.metadata() or {}
            names = set(fh.keys())
            loaded = {name: fh.get_tensor(name) for name in names} if tensors else {}
    except Exception as exc:  # safetensors raises its own types for damaged files
        raise StoreError(f"{part}: damaged store part ({type(exc).__name__})") from None
    return metadata, loaded, names


def _parse_rows(part: Path, metadata: dict[str, str]) -> list[dict[str, Any]]:
    try:
        rows = json.loads(metadata["rows"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise StoreError(f"{part}: damaged store part ({type(exc).__name__})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise StoreError(f"{part}: damaged store part (its rows are not a list of records)")
    return rows


def _verify(part: Path, metadata: dict[str, str], rows: list[dict[str, Any]], tensors: dict[str, np.ndarray]) -> None:
    """A :class:`StoreError` unless the part's checksum (when it records one) and shapes agree."""
    recorded = metadata.get("sha256")  # parts written before checksums carry none
    if recorded is not None and recorded != part_checksum(tensors, metadata["rows"]):
        raise StoreError(f"{part}: damaged store part (its checksum does not match its content)")
    vectors = tensors.get("embeddings")
    if vectors is None or len(rows) != len(vectors):
        raise StoreError(f"{part}: {len(rows)} rows but {0 if vectors is None else len(vectors)} vectors")
    if "frame_embeddings" in tensors:
        counts = tensors.get("frame_counts")
        if counts is None or len(counts) != len(rows) or int(counts.sum()) != len(tensors["frame_embeddings"]):
            raise StoreError(f"{part}: damaged store part (its frame counts do not match its frame embeddings)")


def check_parts(path: str | os.PathLike[str]) -> list[tuple[Path, str | None]]:
    """Every part of a store with the reason it is damaged (None: sound)."""
    out = []
    for part in _parts(Path(path)):
        try:
            read_part(part, frames=True)
            out.append((part, None))
        except StoreError as exc:
            out.append((part, exc.message))
    return out


def set_aside(part: Path) -> Path:
    """Rename a damaged part so no reader sees it (a resumed embed re-embeds its videos)."""
    target = part.with_name(part.name + ".damaged")
    os.replace(part, target)
    return target


def stored_sources(path: str | os.PathLike[str]) -> set[str]:
    """The ``source`` of every row of the store's sound parts (rows only: no vectors are read);
    empty when there is no store there yet."""
    folder = Path(path)
    if not (folder / "store.json").is_file():
        return set()
    sources: set[str] = set()
    for part in _parts(folder):
        try:
            sources.update(str(row.get("source")) for row in read_part(part, rows_only=True).rows)
        except StoreError:
            continue
    return sources


def read_store(path: str | os.PathLike[str], *, frames: bool = False) -> Store:
    """Vectors and metadata of a store (duplicates of one source sha256 keep the first)."""
    path = Path(path)
    header = read_header(path)
    vectors: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    per_video: list[np.ndarray] = []
    seen: set[str] = set()
    has_frames = frames
    damaged: list[str] = []
    for part in _parts(path):
        try:
            stored = read_part(part, frames=frames)
        except StoreError as exc:  # one damaged part costs its own rows, named, not every reader
            damaged.append(exc.message)
            continue
        has_frames = has_frames and stored.frames is not None
        for i, row in enumerate(stored.rows):
            key = row.get("source_sha256") or row["source"]
            if key in seen:
                continue
            seen.add(key)
            rows.append(row)
            vectors.append(stored.vectors[i])
            if stored.frames is not None:
                per_video.append(stored.frames[i])
    dim = int(header["embed_dim"])
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    return Store(path, header, matrix, rows, per_video if frames and has_frames else None, damaged)


class StoreWriter:
    """Appends results to a store in whole parts; use as a context manager."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        weights_name: str,
        weights_sha256: str,
        cfg: PreprocessConfig,
        embed_dim: int,
        keep_frames: bool = False,
        flush_every: int = 256,
        numerics: dict[str, Any] | None = None,
        remember: bool = True,
    ) -> None:
        self.path = Path(path)
        self.keep_frames = keep_frames
        self.remember = remember  # note the store in the home (search finds it); not the frame cache
        self.flush_every = flush_every
        self._pending: list[VideoEmbedding] = []
        want = _header(weights_name, weights_sha256, cfg, embed_dim, numerics)
        if not (self.path / HEADER).exists():
            # Several processes may create one store at once (torchrun ranks, array jobs): their
            # temporary files start with "." and their headers agree, so only other content stops us.
            others = [p for p in self.path.iterdir() if not p.name.startswith(".")] if self.path.is_dir() else []
            if self.path.exists() and (not self.path.is_dir() or (others and not (self.path / HEADER).exists())):
                raise UsageError(f"{self.path} exists and is not an embedding store")
            self.path.mkdir(parents=True, exist_ok=True)
            if not (self.path / HEADER).exists():
                atomic_write_text(self.path / HEADER, json.dumps(want, indent=2) + "\n")
        _check_compatible(self.path, read_header(self.path), want)
        self.header = read_header(self.path)
        self._seq = len(_parts(self.path))
        self._contents: set[str] | None = None  # sha256 of what is stored or pending, loaded on first add
        self._note()

    def _stored_rows(self) -> list[dict[str, Any]]:
        """The rows of every sound part. A damaged part's inputs are not done: a resumed run
        embeds them again (``echoclip store repair`` sets the part aside, as readers skip it)."""
        rows: list[dict[str, Any]] = []
        for part in _parts(self.path):
            try:
                rows.extend(read_part(part, rows_only=True).rows)
            except StoreError:
                continue
        return rows

    def done_keys(self) -> set[str]:
        """Content sha256 of every source already stored (for skipping on resume)."""
        return {r.get("source_sha256") or r["source"] for r in self._stored_rows()}

    def resume_index(self) -> tuple[set[str], set[str]]:
        """(stat keys, content sha256s) of what is stored: unchanged files are recognised by their
        stat key without reading them, others by their content."""
        rows = self._stored_rows()
        stats = {r["source_stat_key"] for r in rows if r.get("source_stat_key")}
        contents = {r.get("source_sha256") or r["source"] for r in rows}
        if self._contents is None:  # add() needs the same set: do not read every part again
            self._contents = set(contents)
        return stats, contents

    def todo(self, files: Sequence[Path]) -> list[Path]:
        """The inputs the store does not hold yet (a rerun resumes). Files unchanged since they were
        stored are known by path, size and modification time, without reading them; any other file
        is hashed (a few threads; hashing costs far less than embedding) and skipped when its
        content is stored already, e.g. the same study exported again."""
        stats, contents = self.resume_index()
        if not contents:
            return list(files)
        known = recognise(files, stats, contents)
        return [f for f in files if f not in known]

    def add(self, result: VideoEmbedding) -> None:
        """Queue a result for the next part; failures, and content the store already holds (a
        copy of a file under another name), are not added."""
        if not result.ok:
            return
        if self._contents is None:
            self._contents = self.done_keys()
        key = result.meta.get("source_sha256")
        if key in self._contents:
            return
        if key:
            self._contents.add(key)
        self._pending.append(result)
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        from safetensors.numpy import save_file

        results, self._pending = self._pending, []
        tensors = {"embeddings": np.stack([r.embedding for r in results]).astype(np.float32)}
        if self.keep_frames:
            frames = [r.frame_embeddings for r in results]
            if all(f is not None for f in frames):
                tensors["frame_embeddings"] = np.concatenate(frames).astype(np.float32)
                tensors["frame_counts"] = np.array([len(f) for f in frames], dtype=np.int64)
        rows = [_row(r, self.header) for r in results]
        self._seq += 1
        name = f"part-{self._seq:06d}-{secrets.token_hex(4)}.safetensors"
        rows_json = json.dumps(rows)
        metadata = {"rows": rows_json, "sha256": part_checksum(tensors, rows_json)}
        atomic_write(self.path / name, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        self._note()

    def _note(self) -> None:
        """Remember the store in the home, with the videos this writer knows of (best effort)."""
        if self.remember:
            weights = self.header["weights"]
            remembered.remember(self.path, weights["name"], weights["sha256"],
                                None if self._contents is None else len(self._contents))

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()  # keep what finished, also when the run stops on an error or Ctrl-C


def _row(result: VideoEmbedding, header: dict[str, Any]) -> dict[str, Any]:
    meta = dict(result.meta)
    meta.setdefault("source", result.source)
    meta["n_frames"] = int(result.frame_embeddings.shape[0]) if result.frame_embeddings is not None else len(
        meta.get("frame_indices", [])
    )
    meta["weights_sha256"] = header["weights"]["sha256"]
    meta["preprocess_digest"] = header["preprocess"]["digest"]
    for key, value in numerics_of(header).items():  # rows say what made them (the frame cache mixes torch precisions)
        if meta.get(key) is None:
            meta[key] = value
    return meta


def merge_stores(out: str | os.PathLike[str], stores: Sequence[str | os.PathLike[str]]) -> Store:
    """Join shard stores made with the same weights and preprocessing into ``out``."""
    if not stores:
        raise UsageError("nothing to merge")
    loaded = [read_store(s, frames=True) for s in stores]
    damaged = [message for store in loaded for message in store.damaged]
    if damaged:
        raise StoreError(f"cannot merge: {damaged[0]}" + (f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""),
                         hint="echoclip store repair SHARD sets damaged parts aside; embed again into it to refill it")
    first = loaded[0]
    for other in loaded[1:]:
        _check_compatible(other.path, other.header, first.header)
    cfg = PreprocessConfig.from_dict(first.header["preprocess"]["config"])
    keep_frames = all(s.frame_embeddings is not None for s in loaded)
    writer = StoreWriter(out, weights_name=first.header["weights"]["name"], weights_sha256=first.weights_sha256,
                         cfg=cfg, embed_dim=int(first.header["embed_dim"]), keep_frames=keep_frames,
                         flush_every=1 << 30, numerics=numerics_of(first.header))
    done = writer.done_keys()
    with writer:
        for store in loaded:
            for i, row in enumerate(store.rows):
                key = row.get("source_sha256") or row["source"]
                if key in done:
                    continue
                done.add(key)
                frames = store.frame_embeddings[i] if keep_frames and store.frame_embeddings else None
                writer.add(VideoEmbedding(source=row["source"], embedding=store.embeddings[i],
                                          frame_embeddings=frames, meta=row))
    return read_store(out)


__all__ = ["Part", "Store", "StoreError", "StoreWriter", "check_parts", "merge_stores", "read_part", "read_store",
           "set_aside"]
