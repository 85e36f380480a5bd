"""Our preprocessed files: one safetensors file per video, read back without decoding again.

Layout: one tensor ``frames`` (uint8, T×3×S×S, RGB, already cropped, masked and resized) and
one metadata entry ``echoclip`` holding a JSON object (safetensors metadata is str → str): the
source path and sha256, frame indices, fps, sizes, crop box, mask, the preprocess config and its
digest, DICOM UIDs and the salted patient key (see :mod:`echoclip_cli.media.phi`). Files are
written to a temporary name beside the target and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MediaError
from ..files import atomic_write, sha256_bytes
from .phi import safe_reason

if TYPE_CHECKING:  # torch loads when a file is read or written, not when inputs are found
    import torch

META_KEY = "echoclip"
FORMAT = "echoclip-frames"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"


def is_store_file(path: Path) -> bool:
    """Whether ``path`` looks like a safetensors file (8-byte header length, then a JSON object)."""
    if path.suffix.lower() != SUFFIX:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def write_clip_file(path: Path, frames: "torch.Tensor", meta: dict[str, Any]) -> Path:
    """Write frames + metadata to ``path`` atomically (temp file in the same folder, then rename).
    A recorded ``source_sha256`` is signed for these frames (:func:`source_claim`)."""
    from safetensors.torch import save_file

    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    if record.get("source_sha256"):
        record[CLAIM] = source_claim(str(record["source_sha256"]), frames_sha256(frames),
                                     str(record.get("preprocess_digest")))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: save_file({"frames": frames.contiguous()}, str(tmp),
                                                    metadata={META_KEY: json.dumps(record)}))


CLAIM = "source_claim"


def frames_sha256(frames: Any) -> str:
    """sha256 of a frames tensor's bytes (uint8, contiguous), hashed in place (no copy)."""
    import numpy as np

    array = frames.contiguous().numpy() if hasattr(frames, "numpy") else np.ascontiguousarray(frames)
    return sha256_bytes(memoryview(array).cast("B"))


def source_claim(source_sha256: str, frames_digest: str, preprocess_digest: str) -> str:
    """HMAC-SHA256, keyed with this home's secret salt (:func:`echoclip_cli.media.phi.resolve_salt`),
    of the claim "these frames were made from the file of this sha256 with these settings".

    A frames file stands for its original (resume, duplicates and the frame cache take it as
    that file, :mod:`echoclip_cli.identity`) only when the claim verifies: a file that merely
    *says* it was made from another input's bytes (hand-made, or copied from another home) would
    otherwise take that input's place and get its cached embeddings. A claim from another home
    does not verify: such a file is its own input (its own bytes are its identity)."""
    import hashlib
    import hmac

    from .phi import resolve_salt

    message = "\0".join(("echoclip frames claim", source_sha256, frames_digest, preprocess_digest)).encode()
    return hmac.new(resolve_salt(None).encode(), message, hashlib.sha256).hexdigest()


def claim_holds(meta: dict[str, Any], frames: Any) -> bool:
    """Whether a frames file's recorded ``source_sha256`` is signed for its frames (:func:`source_claim`)."""
    import hmac

    recorded, signed = meta.get("source_sha256"), meta.get(CLAIM)
    if not isinstance(recorded, str) or not isinstance(signed, str):
        return False
    expected = source_claim(recorded, frames_sha256(frames), str(meta.get("preprocess_digest")))
    return hmac.compare_digest(expected, signed)


def recorded_source_sha256(path: Path) -> str | None:
    """The sha256 of the original input that one of our frames files records and signed
    (:func:`claim_holds`); None for a file that is not ours, cannot be read, or whose claim does
    not verify: its own bytes are then its identity."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get(META_KEY, "{}"))
            if not isinstance(meta, dict) or not meta.get("source_sha256") or "frames" not in fh.keys():
                return None
            _price(path, fh.get_slice("frames"))
            frames = fh.get_tensor("frames")
    except (SafetensorError, OSError, ValueError, MediaError):
        return None
    return str(meta["source_sha256"]) if claim_holds(meta, frames) else None


def _price(path: Path, frames: Any) -> None:
    """The frames tensor's size from the file's header, checked against the decode budget before it
    is loaded (frame files were not priced at all; the frames a file holds are counted from its
    array, not from its metadata)."""
    import math

    from . import budget

    shape = [int(n) for n in frames.get_shape()]
    itemsize = {"U8": 1, "I8": 1, "BOOL": 1}.get(str(frames.get_dtype()), 8)
    budget.check(str(path), f"its frames tensor {tuple(shape)}", math.prod(shape) * itemsize)


def read_clip_file(path: Path) -> tuple["torch.Tensor", dict[str, Any]]:
    """Frames and metadata of one of our files; :class:`MediaError` for anything else."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            if META_KEY not in header or "frames" not in fh.keys():
                raise MediaError(f"{path}: a safetensors file but not an echoclip preprocessed file")
            _price(path, fh.get_slice("frames"))
            frames = fh.get_tensor("frames")
    except (SafetensorError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: cannot read safetensors file ({safe_reason(exc)})") from None
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError:
        raise MediaError(f"{path}: its echoclip metadata is not valid JSON") from None
    if meta.pop("format", None) != FORMAT or frames.dtype != torch.uint8 or frames.ndim != 4:
        raise MediaError(f"{path}: not an echoclip frames file")
    if meta.pop("format_version", None) != FORMAT_VERSION:
        raise MediaError(f"{path}: written by a newer echoclip (format version not {FORMAT_VERSION})")
    return frames, meta
