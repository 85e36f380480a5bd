"""Frame-extracted instances: files holding some frames of a multi-frame source.

:mod:`echoclip_cli.dicomweb.staging` writes one for each archive instance a run reads, with only
the sampled frames. It is a standard DICOM instance with the Frame Extraction Module (PS3.3
C.12.3): its Simple Frame List names the source frame (1-based) each held frame is. The
source's frame count, which that module does not keep, and the instance's origin (its URL on the
server, which records and stores name as its ``source``) are in private elements. The reader
(:mod:`echoclip_cli.media.dicom`) maps the sampled source indices onto the held frames, so such a
file gives the same frame indices, frame count and clip type as the whole source would.
"""

from __future__ import annotations

from typing import Any

PRIVATE_CREATOR = "echoclip frame extraction"
PRIVATE_GROUP = 0x0071
SOURCE_FRAMES = 0x01  # element offset in the private block: the source's NumberOfFrames
ORIGIN = 0x02  # element offset in the private block: where the instance came from (its WADO-RS URL)


def origin(ds: Any) -> str | None:
    """Where a staged instance came from (its URL on the server, no credentials), or None."""
    try:
        value = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[ORIGIN].value
    except (KeyError, AttributeError, TypeError, ValueError):
        return None
    return str(value) if value else None


def extracted_frames(ds: Any) -> tuple[list[int], int] | None:
    """(the 0-based source index of each frame ``ds`` holds, the source's frame count) for a
    frame-extracted instance written by echoclip; None for any other dataset."""
    from pydicom.multival import MultiValue

    if "FrameExtractionSequence" not in ds:
        return None
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        n_source = int(block[SOURCE_FRAMES].value)
        listed = ds.FrameExtractionSequence[0].SimpleFrameList
        numbers = [int(n) - 1 for n in (listed if isinstance(listed, (list, MultiValue)) else [listed])]
    except (KeyError, AttributeError, IndexError, TypeError, ValueError):
        return None
    return (numbers, n_source) if numbers and all(0 <= n < n_source for n in numbers) else None
