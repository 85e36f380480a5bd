"""How much memory one input may take to decode, checked *before* anything is allocated.

An archive holds odd files: a 195 KB H.264 of 8192×8192 black frames needed 9.5 GB to decode,
a 2 MB deflated DICOM of zeros 5 GB, and a run killed by the OOM killer loses every result not
yet written. Each input is therefore priced from its header (DICOM rows × columns × samples of
the sampled frames, plus the decoder's working frames) or its container's stream info (video
width × height) — and, for deflated DICOM, by inflating it in bounded chunks without keeping the
output — and refused with one error record when the price exceeds the budget:
``ECHOCLIP_DECODE_MB`` (default 1024 MB, which with the model leaves room on a 2-core / 8 GB
laptop; raise it for very large clips on a big machine). Peak memory then does not depend on any
single input beyond that budget.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from ..errors import MediaError

BUDGET_ENV = "ECHOCLIP_DECODE_MB"
DEFAULT_BUDGET_MB = 1024
WORKING_FRAMES = 8  # frames a decoder holds besides the ones kept (threads, reference frames, colour conversion)
FLOAT_COPIES = 4  # pydicom's colour conversion holds float32 copies of a frame: 4 bytes per sample


def budget_bytes() -> int:
    try:
        return int(float(os.environ.get(BUDGET_ENV, DEFAULT_BUDGET_MB)) * 2**20)
    except ValueError:
        return DEFAULT_BUDGET_MB * 2**20


def check(name: str, what: str, need: int) -> None:
    """A :class:`MediaError` when ``need`` bytes exceed the decode budget."""
    budget = budget_bytes()
    if need > budget:
        raise MediaError(f"{name}: {what} would need about {need / 2**20:,.0f} MB to decode, over the decode budget "
                         f"of {budget / 2**20:,.0f} MB (set {BUDGET_ENV} to raise it)")


def check_frames(name: str, rows: int, cols: int, samples: int, kept: int, bytes_per_sample: int = 1) -> None:
    """Price ``kept`` decoded frames of rows × cols × samples, plus the decoder's working frames."""
    frame = max(0, rows) * max(0, cols) * max(1, samples)
    need = frame * bytes_per_sample * (kept + WORKING_FRAMES) + frame * FLOAT_COPIES
    check(name, f"{kept} frame(s) of {cols}×{rows}", need)


def check_deflated(path: Path, offset: int) -> None:
    """Inflate a deflated dataset (from byte ``offset``) in bounded chunks, keeping nothing, and
    refuse it when it inflates beyond the budget (a 2 MB file of zeros can inflate to gigabytes)."""
    budget = budget_bytes()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        while not inflater.eof and (chunk := fh.read(1 << 20)):
            data = chunk
            while data and not inflater.eof:  # after the stream's end only padding is left
                out = inflater.decompress(data, 1 << 22)  # at most 4 MB held at once
                total += len(out)
                if total > budget:
                    check(str(path), "its deflated dataset", total)
                if not out and inflater.unconsumed_tail == data:
                    return  # no progress: a damaged stream; pydicom reports it
                data = inflater.unconsumed_tail
