"""Many inputs: load clips in parallel processes, in input order, and write preprocessed files.

:func:`iter_clips` yields ``(path, Clip | MediaError)`` for each input, in the order given, with
at most ``2 × workers`` inputs in flight (memory stays flat over thousands of files). Workers are
fresh processes (``forkserver``, else ``spawn``) using one thread each. :func:`preprocess_files` writes one
safetensors file per clip and yields one :class:`PreprocessRecord` per input; a failed input is
a record, never an exception, and never a partial file.
"""

from __future__ import annotations

import multiprocessing
import re
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..errors import MediaError
from ..preprocess_config import PreprocessConfig
from .clip import Clip, load_clip
from .store_file import SUFFIX, write_clip_file

_UID = re.compile(r"[0-9][0-9.]{0,63}")

Outcome = tuple[str, Any, Any]  # ("ok", frames ndarray, meta) or ("error", message, hint)


def _load_outcome(path: str, cfg: PreprocessConfig, keep_phi: bool, salt: str | None) -> Outcome:
    """Load one clip; in a worker process the frames travel back as a numpy array."""
    try:
        clip = load_clip(path, cfg, keep_phi=keep_phi, salt=salt)
    except MediaError as exc:
        return ("error", exc.message, exc.hint)
    return ("ok", clip.frames.numpy(), clip.meta)


def _to_result(path: Path, outcome: Outcome) -> Clip | MediaError:
    status, first, second = outcome
    if status == "error":
        return MediaError(first, second)
    return Clip(frames=torch.from_numpy(np.asarray(first)), meta=second, source=str(path))


def _init_worker() -> None:
    torch.set_num_threads(1)


def _pool_context() -> Any:
    """Fresh worker processes, never forked from a parent that may hold CUDA or thread pools.

    ``forkserver`` (Linux, macOS) forks workers from a clean server that has imported us once;
    elsewhere ``spawn`` starts each worker from scratch.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["echoclip_cli.media"])
        return context
    return multiprocessing.get_context("spawn")


def iter_clips(
    paths: Iterable[str | Path],
    cfg: PreprocessConfig,
    *,
    workers: int = 1,
    keep_phi: bool = False,
    salt: str | None = None,
) -> Iterator[tuple[Path, Clip | MediaError]]:
    """Yield ``(path, Clip or MediaError)`` per input, in input order, decoding in ``workers`` processes."""
    items = [Path(p) for p in paths]
    if workers <= 1 or len(items) <= 1:
        for path in items:
            yield path, _to_result(path, _load_outcome(str(path), cfg, keep_phi, salt))
        return
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=_pool_context(), initializer=_init_worker) as pool:
        pending: deque[tuple[Path, Future[Outcome]]] = deque()
        queue = iter(items)
        for path in queue:
            pending.append((path, pool.submit(_load_outcome, str(path), cfg, keep_phi, salt)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            path, future = pending.popleft()
            outcome = future.result()
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_load_outcome, str(nxt), cfg, keep_phi, salt)))
            yield path, _to_result(path, outcome)


@dataclass
class PreprocessRecord:
    """The outcome for one input: written (``ok``), failed (``error``) or not an input (``skipped``)."""

    source: str
    status: str
    output: str | None = None
    frames: int | None = None
    size: str | None = None
    fps: float | None = None
    region: bool | None = None
    mask: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_name(meta: dict[str, Any]) -> str:
    """A PHI-free file name: the SOP Instance UID, else the source file's sha256 (16 digits)."""
    uid = meta.get("sop_uid") or ""
    if _UID.fullmatch(uid):
        return f"{uid}{SUFFIX}"
    return f"sha256-{meta['source_sha256'][:16]}{SUFFIX}"


def _mask_summary(mask: dict[str, Any]) -> str:
    if mask.get("applied"):
        return f"{mask.get('mode')}: kept {100 * mask.get('kept_fraction', 1):.0f}%"
    reason = mask.get("reason")
    return f"{mask.get('mode')}: not applied ({reason})" if reason else str(mask.get("mode"))


def _write(clip: Clip, out_dir: Path, used: dict[str, str]) -> Path:
    """Write ``clip`` under its name; a second source claiming a name gets a hash suffix."""
    name = output_name(clip.meta)
    owner = used.setdefault(name, clip.meta["source_sha256"])
    if owner != clip.meta["source_sha256"]:
        name = f"{Path(name).stem}-{clip.meta['source_sha256'][:8]}{SUFFIX}"
    return write_clip_file(out_dir / name, clip.frames, clip.meta)


def preprocess_files(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    cfg: PreprocessConfig,
    *,
    workers: int = 1,
    keep_phi: bool = False,
    salt: str | None = None,
) -> Iterator[PreprocessRecord]:
    """Prepare each input and write ``out_dir/<name>.safetensors``; yield one record per input."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: dict[str, str] = {}
    for path, result in iter_clips(paths, cfg, workers=workers, keep_phi=keep_phi, salt=salt):
        if isinstance(result, MediaError):
            yield PreprocessRecord(source=str(path), status="error", error=result.message)
            continue
        meta = result.meta
        try:
            written = _write(result, out, used)
        except OSError as exc:
            yield PreprocessRecord(source=str(path), status="error", error=f"{path}: cannot write output ({exc})")
            continue
        height, width = meta["original_size"]
        yield PreprocessRecord(
            source=str(path),
            status="ok",
            output=str(written),
            frames=int(result.frames.shape[0]),
            size=f"{width}x{height}",
            fps=meta.get("fps"),
            region=meta.get("region") is not None,
            mask=_mask_summary(meta["mask"]),
        )
