"""JPEG codestreams decoded in batches where the model runs (nvJPEG on a GPU).

Most echo archives store cines as JPEG Baseline DICOM: each frame is a plain JPEG codestream in
the encapsulated pixel data. On a GPU machine the CPU cannot decode them as fast as the model
embeds them (Pillow: about 300 frames/s per core for 480×640 frames; the ConvNeXt-B tower: over
5,000 frames/s on an H100), so with ``jpeg_decode="device"`` the worker processes only *cut* the
needed codestreams out of each file (:func:`echoclip_cli.media.dicom.read_jpeg_codestreams`) and
the main process decodes them in batches on the device, where cropping, masking and resizing
follow (:func:`echoclip_cli.preprocess.prepare_frames` runs on any device).

Backends, by what is installed:

* ``nvjpeg`` — ``torchvision.io.decode_jpeg(list, device="cuda")``, batched nvJPEG (torchvision
  built for the installed torch: ``pip install 'echoclip[gpu]'``);
* ``torchvision`` — the same call on the CPU (libjpeg-turbo), for a CPU model;
* ``pillow`` — one frame at a time with Pillow (libjpeg-turbo), for a CPU model without
  torchvision: the same pixels as the worker path, so the device path is testable anywhere.

Every backend returns (3, H, W) uint8 RGB tensors; one-component (grey) codestreams come back
with the grey copied to three channels, as the worker path gives them.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch


class JpegDecodeError(RuntimeError):
    """A batch could not be decoded (a damaged codestream, or a decoder that refused it)."""


@lru_cache(maxsize=None)
def _torchvision_probe() -> tuple[object | None, str | None]:
    """(``torchvision.io.decode_jpeg``, None) when torchvision and its image extension load,
    else (None, why not)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 0.29 deprecates its decoders in favour of TorchCodec
            from torchvision.io import decode_jpeg, encode_jpeg

            decode_jpeg(encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8)))
    except Exception as exc:  # not installed, or built for another torch: its extension does not load
        return None, f"torchvision's JPEG decoder does not load ({_reason(exc)})"
    return decode_jpeg, None


def _torchvision_decode() -> object | None:
    """``torchvision.io.decode_jpeg`` when torchvision and its image extension load, else None."""
    return _torchvision_probe()[0]


@lru_cache(maxsize=None)
def _nvjpeg_probe(device: str) -> str | None:
    """Why torchvision cannot decode on this CUDA device (it may be built without nvJPEG), or
    None when it can."""
    decode, why = _torchvision_probe()
    if decode is None:
        return why
    try:
        from torchvision.io import encode_jpeg

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = encode_jpeg(torch.zeros(3, 16, 16, dtype=torch.uint8))
            decode([sample], mode=_rgb_mode(), device=device)  # type: ignore[operator]
    except Exception as exc:
        return f"nvJPEG decoding on {device} failed its test ({_reason(exc)})"
    return None


def _nvjpeg_works(device: str) -> bool:
    """Whether torchvision decodes on this CUDA device (:func:`unavailable_reason` says why not)."""
    return _nvjpeg_probe(device) is None


def _reason(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    from .phi import safe_reason

    return f"{type(exc).__name__}: {safe_reason(exc)}"


def unavailable_reason(device: torch.device) -> str | None:
    """Why :func:`backend` finds no JPEG decoder for ``device`` (None when it finds one)."""
    if device.type == "cuda":
        return _nvjpeg_probe(str(device))
    if device.type == "cpu":
        return None
    return f"no JPEG decoder runs on {device.type}"


def _rgb_mode() -> object:
    from torchvision.io import ImageReadMode

    return ImageReadMode.RGB


def backend(device: torch.device) -> str | None:
    """The decoder :func:`decode_jpegs` uses for ``device``: ``"nvjpeg"``, ``"torchvision"``,
    ``"pillow"``, or ``None`` when JPEG cannot be decoded on that device (CUDA without nvJPEG)."""
    if device.type == "cuda":
        return "nvjpeg" if _nvjpeg_works(str(device)) else None
    if device.type == "cpu":
        return "torchvision" if _torchvision_decode() is not None else "pillow"
    return None


def _pillow_rgb(data: bytes) -> torch.Tensor:
    """The worker path's Pillow decoding (:func:`~echoclip_cli.media.dicom.pillow_jpeg`) as a
    (3, H, W) RGB tensor, grey copied to three channels as :mod:`.colour` does."""
    from .dicom import pillow_jpeg

    frame = pillow_jpeg(data)
    rgb = np.repeat(frame[..., None], 3, axis=-1) if frame.ndim == 2 else np.array(frame)  # writable copies
    return torch.from_numpy(rgb).permute(2, 0, 1)


def codestream_tensors(streams: Sequence[bytes | memoryview]) -> list[torch.Tensor]:
    """Each codestream as a 1-D uint8 CPU tensor over its own memory, not a copy (320 frames of
    134 kB: 0.7 ms, against 10 ms through ``bytearray`` copies, with the GIL held either way).
    The tensors are read-only in fact, which torch cannot mark (its warning about that is
    silenced): the decoders only read them, and each keeps its buffer alive."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "The given buffer is not writable"
        return [torch.frombuffer(data, dtype=torch.uint8) for data in streams]


def decode_jpegs(streams: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """Decode JPEG codestreams to (3, H, W) uint8 RGB tensors on ``device``, in one batch.

    Raises :class:`JpegDecodeError` when any of them fails (callers retry smaller groups to
    find the damaged one) and ``ValueError`` when ``device`` has no JPEG backend.
    """
    name = backend(device)
    if name is None:
        raise ValueError(f"no JPEG decoder for {device}: {unavailable_reason(device)}")
    if not streams:
        return []
    try:
        if name == "pillow":
            return [_pillow_rgb(data) for data in streams]
        decode = _torchvision_decode()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = decode(codestream_tensors(streams), mode=_rgb_mode(), device=device)  # type: ignore[operator]
        return list(out)
    except Exception as exc:  # C decoders raise RuntimeError, Pillow OSError/ValueError/SyntaxError
        raise JpegDecodeError(_reason(exc)) from None
