"""Video files (AVI, MP4, MOV, MKV, …) through PyAV: decode only up to the last frame needed.

Frames are numbered in presentation order from 0 and converted to RGB by FFmpeg's swscale
(``rgb24``) — for the MJPEG AVI files of the released pipeline these are the same pixels OpenCV
gives, in RGB instead of BGR. Decoding stops after the last requested frame, so sampling 20
frames from a long clip costs 39 decoded frames, not the whole file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from ..errors import MediaError
from . import budget
from .phi import safe_reason

VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ogv", ".mts", ".m2ts", ".flv", ".3gp"}
)


def _fps(stream: Any) -> float | None:
    rate: Fraction | None = stream.average_rate or stream.guessed_rate or stream.base_rate
    return round(float(rate), 4) if rate else None


def decode_video(source: str | Path | BinaryIO, indices: Sequence[int], name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode frames ``indices`` (ascending) of the first video stream of ``source``.

    Returns (frames (T, H, W, 3) uint8 RGB, info) with the indices actually found (those past
    the end are dropped), fps, the stream's frame count when the container knows it, and codec.
    ``name`` is used in error messages.
    """
    import av

    wanted = sorted(set(int(i) for i in indices))
    try:
        container = av.open(source if not isinstance(source, Path) else str(source), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{name}: not a readable video ({safe_reason(exc)})") from None
    with container:
        if not container.streams.video:
            raise MediaError(f"{name}: holds no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        budget.check_frames(name, int(context.height or 0), int(context.width or 0), 3, len(wanted))
        stream.thread_type = "AUTO"
        info = {"fps": _fps(stream), "n_frames_total": int(stream.frames) or None, "codec": stream.codec_context.name}
        size = (int(context.height or 0), int(context.width or 0))
        frames, found, decoded = _decode_wanted(container, stream, wanted, name, info, size)
    if decoded == 0:
        raise MediaError(f"{name}: the video has no frames")
    _check_count(name, info, decoded, wanted)
    if not found:
        raise MediaError(f"{name}: the video has {decoded} frames, none at the sampled indices (from {wanted[0]})")
    info["frame_indices"] = found
    info["frames_decoded"] = decoded
    return np.stack(frames), info


def _check_count(name: str, info: dict[str, Any], decoded: int, wanted: list[int]) -> None:
    """A container that declares many more frames than can be read before the last one sampled
    (an AVI whose index points every entry at frame 0: one frame came out, silently) is damaged or
    lying: refused. A count off by a frame or two, or a damaged tail already said, is not."""
    declared = info.get("n_frames_total") or 0
    missing = min(declared, wanted[-1] + 1 if wanted else 0) - decoded
    if "decode_warning" not in info and missing > max(2, declared // 10):
        raise MediaError(f"{name}: its container declares {declared} frames but only {decoded} could be read "
                         "(a damaged or lying index)")


def _upright(frame: Any, name: str, info: dict[str, Any]) -> np.ndarray:
    """The frame as RGB, turned as its display matrix says (a phone or cart recording stored
    sideways carries a rotation the player applies: 90, 180 or 270 degrees counterclockwise);
    ``info["rotation"]`` says so. Other angles are refused: no resampling is done here."""
    pixels = frame.to_ndarray(format="rgb24")
    angle = float(getattr(frame, "rotation", 0) or 0)
    if not angle:
        return pixels
    turns = round(angle / 90)
    if abs(angle - 90 * turns) > 0.5:
        raise MediaError(f"{name}: its display matrix rotates it by {angle:g} degrees (only multiples of 90 are "
                         "turned upright)")
    info["rotation"] = int(90 * turns) % 360
    return np.ascontiguousarray(np.rot90(pixels, k=turns % 4))


def _decode_wanted(
    container: Any, stream: Any, wanted: list[int], name: str, info: dict[str, Any], size: tuple[int, int] = (0, 0)
) -> tuple[list[np.ndarray], list[int], int]:
    """(frames, their indices, frames decoded); a damaged tail after good frames is noted in ``info``.
    Every frame must have the ``size`` the stream declared when it was priced (:mod:`.budget`): a
    stream that grows later (an MJPEG AVI whose frames become 16000², H.264 switching to 8192²
    after the probe) is refused before its frames are converted or kept."""
    import av

    targets, last = set(wanted), wanted[-1] if wanted else -1
    frames: list[np.ndarray] = []
    found: list[int] = []
    decoded = 0
    try:
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if size[0] and (frame.height, frame.width) != size:
                raise MediaError(f"{name}: frame {index} is {frame.height}×{frame.width}, the stream declared "
                                 f"{size[0]}×{size[1]}: not kept")
            if index in targets:
                frames.append(_upright(frame, name, info))
                found.append(index)
            if index >= last:
                break
    except (av.error.FFmpegError, ValueError) as exc:
        if not frames:
            raise MediaError(f"{name}: cannot decode the video ({safe_reason(exc)})") from None
        info["decode_warning"] = f"stopped after frame {decoded - 1}: {safe_reason(exc)}"
    return frames, found, decoded
