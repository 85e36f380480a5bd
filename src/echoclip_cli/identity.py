"""How an input is recognised: is it already in a store, or in the frame cache?

Two keys, cheapest first. The *stat key* (:func:`echoclip_cli.files.stat_key`: a digest of the
absolute path, size and modification time) knows an unchanged file without reading a byte. Any
other file is known by its *content key*: the sha256 of its bytes — or, for one of our
preprocessed files, the sha256 of the original it was made from, which its metadata records, so a
study embedded from its DICOM is recognised again in its preprocessed form. Stores and the frame
cache keep both keys in every row (``source_stat_key``, ``source_sha256``).

**Why the whole file is hashed** (issue 29 weighed a key from the header instead: SOP Instance
UID + file size + a digest of the sampled fragments). The content key stays the sha256 of every
byte, because

* it is exact: two inputs share a key only when they are the same bytes. A header key is not:
  anonymisers and vendors reuse or regenerate UIDs, and a file edited in place (a header tag
  corrected, a frame that is not sampled re-encoded) keeps its UID and often its size, yet is
  another input; duplicate detection and resume must not skip it;
* :func:`recognise` knows a file from its bytes alone, before (and without) parsing it, for
  every kind of input (videos and our own files have no UIDs), and every store and frame cache
  written so far is keyed by it: another key would make every existing store embed again.

Its cost is kept to the hash itself: where a file is parsed anyway (the device path's
:func:`echoclip_cli.media.dicom.read_jpeg_codestreams`) it is hashed from the bytes of the one
read that also yields the header and the frames, never read a second time. That is about 5.1 ms
per 8 MB cine on a 2-core AMD EPYC (sha256 at 1.6 GB/s; docs/BENCHMARKS.md, section 2), spent in
the decode workers with the GIL released, beside a parse of about 3 ms (2.65–2.98 ms at best).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Container, Sequence

from .files import sha256_file, stat_key
from .media.store_file import is_store_file, recorded_source_sha256

MAX_HASH_THREADS = 8  # hashing is disk-bound: a few threads keep a disk busy, more only contend


def input_key(path: str | os.PathLike[str]) -> str:
    """Identity of an input for resuming: the sha256 of its content (of the original, for our
    preprocessed files, whose metadata records it)."""
    path = Path(path)
    if path.suffix == ".safetensors" and is_store_file(path):
        recorded = recorded_source_sha256(path)
        if recorded:
            return recorded
    return sha256_file(path)  # anything else, ours without a recorded original included


def recognise(files: Sequence[Path], stat_keys: Container[str], contents: Container[str]) -> dict[Path, str]:
    """The files a store (or cache) already holds, each with the key that matched: its stat key
    when the file is unchanged (nothing read), else its content key (hashed on a few threads:
    hashing costs far less than embedding; a file asked about twice in a run, by a store and then
    by the frame cache, is read once). Files gone or unreadable are left out: the pipeline
    reports them."""
    found: dict[Path, str] = {}
    changed: list[tuple[Path, str]] = []
    for path in files:
        try:
            key = stat_key(path)
        except OSError:
            continue
        if key in stat_keys:
            found[path] = key
        else:
            changed.append((path, key))
    for (path, key), content in zip(changed, _contents(changed), strict=True):
        if content is not None and content in contents:
            found[path] = content
    return found


_HASHED: OrderedDict[str, str] = OrderedDict()  # stat key -> content key of files this process hashed
_HASHED_MAX = 65536  # ~10 MB of keys


def _contents(changed: Sequence[tuple[Path, str]]) -> list[str | None]:
    """The content keys of ``(path, stat key)`` pairs: remembered by stat key (the same path,
    size and modification time) or hashed now on a few threads."""
    todo = [path for path, key in changed if key not in _HASHED]
    if todo:
        with ThreadPoolExecutor(max_workers=min(MAX_HASH_THREADS, 2 * (os.cpu_count() or 1))) as pool:
            hashed = dict(zip(todo, pool.map(_content_key, todo), strict=True))
        for path, key in changed:
            if hashed.get(path) is not None:
                _HASHED[key] = hashed[path]  # type: ignore[assignment]
        while len(_HASHED) > _HASHED_MAX:
            _HASHED.popitem(last=False)
    return [_HASHED.get(key) for _, key in changed]


def _content_key(path: Path) -> str | None:
    """:func:`input_key`, or None when the file cannot be read (any more)."""
    try:
        return input_key(path)
    except OSError:
        return None
