"""Many inputs: load clips in parallel processes, in input order, and write preprocessed files.

:func:`iter_clips` yields ``(path, Clip | MediaError)`` for each input, in the order given, with
at most ``2 × workers`` inputs in flight (memory stays flat over thousands of files);
:func:`iter_clips_as_ready` yields them as they are ready, with their input index. Workers are
fresh processes (``forkserver``, else ``spawn``) using one thread each. :func:`preprocess_files` writes one
safetensors file per clip and yields one :class:`PreprocessRecord` per input; a failed input is
a record, never an exception, and never a partial file.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..errors import MediaError
from ..parallel import completion_map
from ..preprocess_config import PreprocessConfig
from .clip import Clip, Codestreams, load_clip, load_codestreams
from .phi import run_salt
from .store_file import SUFFIX, write_clip_file

_UID = re.compile(r"[0-9][0-9.]{0,63}")

# ("ok", frames ndarray, meta), ("jpeg", Codestreams, None) or ("error", message, hint)
Outcome = tuple[str, Any, Any]


def load_outcome(path: str, cfg: PreprocessConfig, keep_phi: bool, salt: str | None,
                 wanted_types: Sequence[str] | None = None) -> Outcome:
    """Load one clip; in a worker process the frames travel back as a numpy array. A DICOM clip
    whose header gives a type not in ``wanted_types`` comes back without frames (not decoded)."""
    try:
        clip = load_clip(path, cfg, keep_phi=keep_phi, salt=salt, wanted_types=wanted_types)
    except MediaError as exc:
        return ("error", exc.message, exc.hint)
    except Exception as exc:  # a decoder bug on one file must not end a run over thousands
        return ("error", f"{path}: unexpected {type(exc).__name__} while decoding", "report this file's format")
    return ("ok", clip.frames.numpy(), clip.meta)


def _codestream_outcome(path: str, cfg: PreprocessConfig, keep_phi: bool, salt: str | None,
                        wanted_types: Sequence[str] | None = None) -> Outcome:
    """JPEG Baseline DICOM as undecoded codestreams; any other input loaded as usual."""
    try:
        item = load_codestreams(path, cfg, keep_phi=keep_phi, salt=salt, wanted_types=wanted_types)
    except MediaError as exc:
        return ("error", exc.message, exc.hint)
    except Exception as exc:
        return ("error", f"{path}: unexpected {type(exc).__name__} while reading", "report this file's format")
    if item is None:
        return load_outcome(path, cfg, keep_phi, salt, wanted_types)
    if isinstance(item, Clip):  # refused from its header: no frames
        return ("ok", item.frames.numpy(), item.meta)
    return ("jpeg", item, None)


def _crashed(path: str) -> Outcome:
    return ("error", f"{path}: the decoder crashed (its worker process died)", "the file is probably damaged")


def outcome_result(path: Path, outcome: Outcome) -> Clip | Codestreams | MediaError:
    status, first, second = outcome
    if status == "error":
        return MediaError(first, second)
    if status == "jpeg":
        return first
    return Clip(frames=torch.from_numpy(np.asarray(first)), meta=second, source=str(path))


def _load_job(job: tuple[int, str, bool], cfg: PreprocessConfig, keep_phi: bool, salt: str | None,
              codestreams: bool, wanted_types: Sequence[str] | None = None) -> Outcome:
    """Load one ``(index, path, again)`` job: as codestreams when wanted, unless it comes ``again``."""
    _, path, again = job
    load = _codestream_outcome if codestreams and not again else load_outcome
    return load(path, cfg, keep_phi, salt, wanted_types)


def _crashed_job(job: tuple[int, str, bool]) -> Outcome:
    return _crashed(job[1])


def _jobs(paths: Iterable[str | Path], again: deque[tuple[int, str]] | None) -> Iterator[tuple[int, str, bool]]:
    """``(index, path, again)`` for each input, read lazily; entries put in ``again`` meanwhile
    come first, with their own index."""
    inputs = enumerate(paths)
    while True:
        if again:
            index, path = again.popleft()
            yield index, str(path), True
            continue
        entry = next(inputs, None)
        if entry is None:
            return
        yield entry[0], str(entry[1]), False


def iter_clips_as_ready(
    paths: Iterable[str | Path],
    cfg: PreprocessConfig,
    *,
    workers: int = 0,
    keep_phi: bool = False,
    salt: str | None = None,
    window: int | None = None,
    lead: int | None = None,
    codestreams: bool = False,
    again: deque[tuple[int, str]] | None = None,
    wanted_types: Sequence[str] | None = None,
) -> Iterator[tuple[int, Path, Clip | Codestreams | MediaError]]:
    """Yield ``(index, path, Clip or MediaError)`` per input as each is ready, decoding in
    ``workers`` processes (``0``: inline, in this process, in input order).

    At most ``window`` (default ``2 × workers``) inputs are in flight, all fewer than
    ``window + lead`` places after the oldest unfinished one; a worker that crashes costs only
    the input it was decoding (:func:`echoclip_cli.parallel.completion_map`). With
    ``codestreams``, JPEG Baseline DICOM files come as undecoded :class:`Codestreams` instead
    (for decoding on a GPU). ``(index, path)`` entries the consumer puts in ``again`` while it
    iterates (inputs the GPU gave back) are loaded the ordinary way ahead of the next input;
    entries put there after the last input was taken need another call (``paths`` empty).
    With ``wanted_types``, DICOM clips whose header gives another type come without frames.
    """
    load = partial(_load_job, cfg=cfg, keep_phi=keep_phi, salt=run_salt(salt), codestreams=codestreams,
                   wanted_types=tuple(wanted_types) if wanted_types is not None else None)
    jobs = _jobs(paths, again)
    if workers < 1:
        for job in jobs:
            yield job[0], Path(job[1]), outcome_result(Path(job[1]), load(job))
        return
    for _, job, outcome in completion_map(load, jobs, workers=workers, window=window or 2 * workers,
                                          on_crash=_crashed_job, lead=lead):
        yield job[0], Path(job[1]), outcome_result(Path(job[1]), outcome)


def iter_clips(
    paths: Iterable[str | Path],
    cfg: PreprocessConfig,
    *,
    workers: int = 0,
    keep_phi: bool = False,
    salt: str | None = None,
    window: int | None = None,
) -> Iterator[tuple[Path, Clip | MediaError]]:
    """Yield ``(path, Clip or MediaError)`` per input, in input order (:func:`iter_clips_as_ready`
    with at most ``window`` inputs decoded ahead of the one awaited)."""
    waiting: dict[int, tuple[Path, Any]] = {}
    expected = 0
    for index, path, result in iter_clips_as_ready(paths, cfg, workers=workers, keep_phi=keep_phi, salt=salt,
                                                   window=window, lead=0):
        waiting[index] = (path, result)
        while expected in waiting:
            yield waiting.pop(expected)
            expected += 1


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
    workers: int = 0,
    keep_phi: bool = False,
    salt: str | None = None,
) -> Iterator[PreprocessRecord]:
    """Prepare each input and write ``out_dir/<name>.safetensors``; yield one record per input."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        from ..errors import UsageError

        raise UsageError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    used: dict[str, str] = {}
    for path, result in iter_clips(paths, cfg, workers=workers, keep_phi=keep_phi, salt=salt):
        if isinstance(result, MediaError):
            yield PreprocessRecord(source=str(path), status="error", error=result.message)
            continue
        meta = result.meta
        try:
            written = _write(result, out, used)
        except Exception as exc:  # OSError, or safetensors' own error for a full disk: this input fails, the next is tried
            if not isinstance(exc, OSError) and type(exc).__name__ != "SafetensorError":
                raise
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:160]
            yield PreprocessRecord(source=str(path), status="error", error=f"{path}: cannot write output ({reason})")
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
