"""Embed once, answer many: a bounded cache of per-frame embeddings in the echoclip home.

``predict-ef`` then ``detect-devices`` (then ``zero-shot``, ``report``) on the same files used to
embed them three times — tens of seconds per cine on a CPU. Frame embeddings are kept in
``$ECHOCLIP_HOME/cache/frames/<weights sha256>-<preprocess digest>/``, an ordinary embedding
store (:mod:`echoclip_cli.store`, per-frame vectors kept), so the cache can never hand out
vectors of other weights or other preprocessing: those live in another folder. An input is
found by its stat key (path, size, mtime: no reading) or else by its content sha256, like a
resumed ``embed --out``.

Bounded: after each run whole parts are evicted, least recently used first (a part's mtime is
touched when it serves a hit), until the cache is under its cap (``ECHOCLIP_CACHE_MB``, default
2048 MB ≈ 50,000 clips of 20 frames). A part that cannot be read, or whose checksum does not
match its bytes, is deleted and its clips are embedded again — a damaged cache costs time, never
a wrong vector or a failed run. The index of what is cached comes from the parts' rows alone
(hashing a full cache would cost each command seconds); a part is verified when it serves a hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .files import home, stat_key
from .identity import recognise
from .preprocess_config import PreprocessConfig
from .records import VideoEmbedding
from .store import Part, Store, StoreError, StoreWriter, numerics_of, read_header, read_part

DEFAULT_CAP_MB = 2048
CAP_ENV = "ECHOCLIP_CACHE_MB"


def cache_root() -> Path:
    return home() / "cache" / "frames"


def cap_bytes() -> int:
    try:
        return max(0, int(float(os.environ.get(CAP_ENV, DEFAULT_CAP_MB)) * 2**20))
    except ValueError:
        return DEFAULT_CAP_MB * 2**20


@dataclass
class _Hit:
    part: Path
    row: int


class FrameCache:
    """The cached frame embeddings of one (weights, preprocessing) pair."""

    def __init__(self, weights_name: str, weights_sha256: str, cfg: PreprocessConfig, embed_dim: int,
                 numerics: dict[str, Any] | None = None) -> None:
        numerics = numerics or {"backend": "torch"}
        # torch embeddings of any precision share one cache (bf16 vs fp32 cosine 0.99999); another
        # backend's are kept apart, per precision (int8 is not fp32)
        other = "" if numerics["backend"] == "torch" else f"-{numerics['backend']}-{numerics['precision']}"
        self.path = cache_root() / f"{weights_sha256[:16]}-{cfg.digest()}{other}"
        self._writer_args = {"weights_name": weights_name, "weights_sha256": weights_sha256, "cfg": cfg,
                             "embed_dim": embed_dim, "keep_frames": True,
                             "numerics": None if numerics["backend"] == "torch" else numerics}
        self._index: dict[str, _Hit] | None = None

    def _rows(self) -> Iterator[tuple[Path, int, dict[str, Any]]]:
        for part in sorted(self.path.glob("part-*.safetensors")):
            stored = _read_or_drop(part, rows_only=True, verify=False)  # verified when it serves a hit
            for i, row in enumerate(stored.rows if stored else ()):
                yield part, i, row

    def _load_index(self) -> dict[str, _Hit]:
        if self._index is None:
            self._index = {}
            if self.path.is_dir():
                for part, i, row in self._rows():
                    for key in (row.get("source_stat_key"), row.get("source_sha256")):
                        if key:
                            self._index[key] = _Hit(part, i)
        return self._index

    def lookup(self, files: Sequence[Path]) -> dict[Path, _Hit]:
        """The files the cache holds: by stat key (no reading), else by content hash."""
        index = self._load_index()
        if not index:
            return {}
        return {path: index[key] for path, key in recognise(files, index, index).items()}

    def read(self, hits: dict[Path, _Hit]) -> dict[Path, VideoEmbedding]:
        """Load the hit clips (only the parts holding them), marking those parts recently used."""
        by_part: dict[Path, list[tuple[Path, int]]] = {}
        for path, hit in hits.items():
            by_part.setdefault(hit.part, []).append((path, hit.row))
        out: dict[Path, VideoEmbedding] = {}
        for part, wanted in by_part.items():
            stored = _read_or_drop(part, frames=True)
            if stored is None:  # damaged (its checksum fails, or it went since indexed): embedded again
                continue
            with contextlib.suppress(OSError):  # evicted meanwhile by another run: still served
                os.utime(part)
            for path, i in wanted:
                meta = {**stored.rows[i], "source": str(path), "source_stat_key": _stat_key(path), "cache": "hit"}
                per_frame = stored.frames[i].astype(np.float32)
                out[path] = VideoEmbedding(source=str(path), embedding=per_frame.mean(axis=0),
                                           frame_embeddings=per_frame, meta=meta)
        return out

    def writer(self) -> StoreWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return StoreWriter(self.path, flush_every=64, remember=False, **self._writer_args)


def _stat_key(path: Path) -> str | None:
    """``path``'s own stat key (a hit found by content may have been cached under another name)."""
    try:
        return stat_key(path)
    except OSError:
        return None


def _read_or_drop(part: Path, **how: bool) -> Part | None:
    """A cache part, read by :func:`read_part` ``(part, **how)``; None when it is damaged or keeps
    no frames (it is then deleted, so its clips are embedded again)."""
    try:
        stored = read_part(part, **how)
    except StoreError:
        stored = None
    if stored is None or not stored.has_frames:
        part.unlink(missing_ok=True)
        return None
    return stored


def through_cache(cache: FrameCache | None, files: Sequence[Path], embed: Any, clip_types: Sequence[str] | None,
                  note: Any = None) -> Iterator[VideoEmbedding]:
    """Results for ``files`` in input order: cached clips from ``cache``, the others from
    ``embed(misses)`` (kept in the cache as they come). ``embed`` must keep frames and skip clips
    outside ``clip_types``, as cached clips of other types are skipped here."""
    if cache is None:
        yield from embed(list(files))
        return
    cached = {path: _wanted(result, clip_types) for path, result in cache.read(cache.lookup(files)).items()}
    if cached and note is not None:
        note(f"{len(cached)} of {len(files)} clips from the embedding cache (--no-cache to embed again)")
    misses = [f for f in files if f not in cached]
    fresh: Iterable[VideoEmbedding] = embed(misses) if misses else ()
    fresh_iter = iter(fresh)
    writer = _open_writer(cache, note)
    try:
        for path in files:
            if path in cached:
                yield cached[path]
                continue
            result = next(fresh_iter)
            if writer is not None:
                writer = _kept(writer, result, note)
            yield result
    finally:
        _close(writer, note)
        _evict_quietly()


def _open_writer(cache: FrameCache, note: Any) -> Any:
    """The cache's writer, or None where the home refuses it (read-only, full): no cache this
    run, every record still given."""
    try:
        return cache.writer().__enter__()
    except OSError as exc:
        _say(note, exc)
        return None


def _close(writer: Any, note: Any) -> None:
    if writer is None:
        return
    try:
        writer.__exit__(None, None, None)  # the last part flushed
    except OSError as exc:
        _say(note, exc)


def _say(note: Any, exc: OSError) -> None:
    if note is not None:
        note(f"the embedding cache cannot be written ({exc.strerror or exc}): going on without it")


def _kept(writer: Any, result: VideoEmbedding, note: Any) -> Any:
    """``result`` added to the cache (failures and skipped clips are not kept); the writer, or
    None once the home refuses a write (a full disk): the run goes on without the cache."""
    try:
        writer.add(result)
        return writer
    except OSError as exc:
        _say(note, exc)
        return None


def _evict_quietly() -> None:
    try:
        evict()
    except OSError:
        pass  # a read-only home: nothing could be added, nothing needs to go


def _wanted(result: VideoEmbedding, clip_types: Sequence[str] | None) -> VideoEmbedding:
    """A cached clip as the call wants it: skipped when its type is not among ``clip_types`` (none
    given: every type is wanted, as :func:`~echoclip_cli.api.embed.embed_files` does)."""
    kind = result.meta.get("clip_type")
    if kind is None or not clip_types or kind in clip_types:
        return result
    return VideoEmbedding(source=result.source, meta=result.meta,
                          skipped=f"{kind} clip ({result.meta.get('clip_reason')}), not scored")


def evict(cap: int | None = None) -> int:
    """Delete whole parts, least recently used first, until the cache is under ``cap`` bytes;
    returns the bytes freed."""
    cap = cap_bytes() if cap is None else cap
    root = cache_root()
    if not root.is_dir():
        return 0
    parts = sorted(root.glob("*/part-*.safetensors"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in parts)
    freed = 0
    for part in parts:
        if total - freed <= cap:
            break
        size = part.stat().st_size
        part.unlink(missing_ok=True)
        freed += size
    return freed


@dataclass(frozen=True)
class CacheFolder:
    """One folder of the cache: the clips of one weights, preprocessing and backend."""

    path: Path
    weights: str
    weights_sha256: str
    backend: str
    videos: int  # rows its parts record (counted without verifying them)


def folders(weights_sha256: str | None = None) -> list[CacheFolder]:
    """The cache's folders (only those of ``weights_sha256`` when given), torch ones first."""
    root = cache_root()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            header = read_header(path)
        except StoreError:
            continue  # a folder being created, or a damaged header: nothing to hand out
        weights = header["weights"]
        if weights_sha256 in (None, weights["sha256"]):
            videos = sum(_recorded_rows(part) for part in path.glob("part-*.safetensors"))
            found.append(CacheFolder(path, weights["name"], weights["sha256"], numerics_of(header)["backend"], videos))
    return sorted(found, key=lambda folder: folder.backend != "torch")


def _recorded_rows(part: Path) -> int:
    try:
        return len(read_part(part, rows_only=True, verify=False))
    except StoreError:
        return 0


def videos(path: Path) -> Store:
    """The cached videos of one folder, read as a store reads its own: each vector is the one the
    pipeline made (the mean of the clip's normalised frame embeddings, exactly what ``embed
    --out`` stores), from verified parts; a damaged part is deleted and left out."""
    header = read_header(path)
    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    for part in sorted(path.glob("part-*.safetensors")):
        stored = _read_or_drop(part)
        if stored is not None and stored.vectors is not None:
            rows.extend(stored.rows)
            vectors.append(stored.vectors)
    dim = int(header["embed_dim"])
    matrix = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    return Store(path, header, matrix, rows)


def info() -> dict[str, Any]:
    """What the cache holds: folder, size, cap, clips per (weights, preprocessing)."""
    root = cache_root()
    entries = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            parts = list(folder.glob("part-*.safetensors"))
            header = {}
            try:
                header = json.loads((folder / "store.json").read_text())
            except (OSError, json.JSONDecodeError):
                pass  # a folder without a readable header still counts its bytes
            clips = 0
            for part in parts:
                clips += _row_count(part)
            entries.append({"weights": header.get("weights", {}).get("name"), "folder": folder.name,
                            "clips": clips, "size_mb": round(sum(p.stat().st_size for p in parts) / 2**20, 2),
                            "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(
                                max((p.stat().st_mtime for p in parts), default=folder.stat().st_mtime)))})
    return {"path": str(root), "cap_mb": round(cap_bytes() / 2**20), "entries": entries,
            "size_mb": round(sum(e["size_mb"] for e in entries), 2)}


def _row_count(part: Path) -> int:
    try:
        return len(read_part(part, rows_only=True))
    except StoreError:  # damaged: counted as nothing; the next run that meets it deletes it
        return 0


def clear() -> int:
    """Delete the whole cache; returns the bytes freed."""
    root = cache_root()
    if not root.is_dir():
        return 0
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    shutil.rmtree(root)
    return size
