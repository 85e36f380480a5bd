"""JPEG frames: where the codestream ends, padding and stray bytes after it, truncated frames.

A frame whose data goes on after its end-of-image marker (padding, junk left by an encoder or a
PACS) is whole and must decode as before; a frame cut short must fail its file.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from echoclip_cli.errors import MediaError
from echoclip_cli.media import load_clip, read_frames
from echoclip_cli.media.clip import load_codestreams
from echoclip_cli.media.jpeg_codestream import codestream_end
from echoclip_cli.media.jpeg_device import decode_jpegs
from echoclip_cli.preprocess_config import PreprocessConfig
from tests.media_factory import echo_frames, jpeg_dicom, jpeg_frames

CFG = PreprocessConfig()
EOI = b"\xff\xd9"


def _encode(image: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _with_app15(codestream: bytes, payload: bytes) -> bytes:
    """``codestream`` with an APP15 segment holding ``payload`` right after its SOI marker."""
    return codestream[:2] + b"\xff\xef" + (len(payload) + 2).to_bytes(2, "big") + payload + codestream[2:]


FRAME = echo_frames(1, 40, 56, seed=3)[0]
THUMBNAIL = _encode(echo_frames(1, 8, 8, seed=4)[0])  # a complete JPEG, EOI included
CODESTREAMS = {
    "baseline colour 4:2:0": _encode(FRAME, quality=90),
    "baseline grey": _encode(np.ascontiguousarray(FRAME[..., 0]), quality=90),
    "4:4:4, optimised tables": _encode(FRAME, quality=75, subsampling=0, optimize=True),
    "progressive (several scans)": _encode(FRAME, quality=90, progressive=True),
    "restart markers": _encode(FRAME, quality=90, restart_marker_blocks=2),
    "EOI inside an APP segment": _with_app15(_encode(FRAME, quality=90), THUMBNAIL),
}


@pytest.mark.parametrize("name", sorted(CODESTREAMS))
def test_a_whole_codestream_ends_at_its_eoi(name: str) -> None:
    data = CODESTREAMS[name]
    assert data.endswith(EOI)
    assert codestream_end(data) == len(data)


@pytest.mark.parametrize("name", sorted(CODESTREAMS))
@pytest.mark.parametrize(
    "tail",
    [b"\x00", b"\x0d\x0a", b"\xff\xd9", b"\xff\xd9\x00\x00", b"\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF",
     bytes(np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8))],
    ids=["pad", "two stray bytes", "a second EOI", "EOI + pad", "FF", "another SOI", "1000 random bytes"],
)
def test_bytes_after_the_eoi_are_not_part_of_the_codestream(name: str, tail: bytes) -> None:
    data = CODESTREAMS[name]
    assert codestream_end(data + tail) == len(data)


@pytest.mark.parametrize("name", sorted(CODESTREAMS))
def test_every_cut_short_codestream_is_truncated(name: str) -> None:
    data = CODESTREAMS[name]
    cut_points = range(2, len(data)) if len(data) < 4000 else range(2, len(data), 7)
    assert [k for k in cut_points if codestream_end(data[:k]) is not None] == []


def test_a_cut_frame_holding_a_thumbnail_eoi_is_still_truncated() -> None:
    # Its last FF D9 is the thumbnail's (inside the APP15 segment): not the end of the image.
    data = CODESTREAMS["EOI inside an APP segment"]
    cut = data[: len(data) // 2]
    assert cut.rfind(EOI) > 0
    assert codestream_end(cut) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "start-of-image"),
        (b"\x00\x00\xff\xd8" + CODESTREAMS["baseline grey"], "start-of-image"),
        (b"\xff\xd8\xff\xe0\x00\x01", "length 1"),
        (b"\xff\xd8\xff\xd8\xff\xd9", "second start-of-image"),
    ],
)
def test_data_that_is_no_codestream(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codestream_end(data)


# --------------------------------------------------------------------------- DICOM files


@pytest.fixture(scope="module")
def cine() -> tuple[np.ndarray, list[bytes]]:
    """Six 480×640 echo frames and their JPEG Baseline codestreams (the shape of the real file)."""
    frames = echo_frames(6, 480, 640, seed=8)
    return frames, jpeg_frames(frames)


@pytest.mark.parametrize("tail", [b"\x12\x34", b"\xff\xd9\x00\x00", b"\x00" * 64], ids=["stray", "eoi", "pad"])
def test_frames_with_bytes_after_their_eoi_decode_as_without(tmp_path, cine, tail: bytes) -> None:
    frames, streams = cine
    clean = jpeg_dicom(tmp_path / "clean.dcm", streams, 480, 640, seed=1)
    padded = jpeg_dicom(tmp_path / "padded.dcm", [s + tail for s in streams], 480, 640, seed=1)
    indices = [0, 2, 4]
    expected, _ = read_frames(clean, indices)
    got, meta = read_frames(padded, indices)
    assert meta["decoder"] == "pillow"
    assert np.array_equal(got, expected)
    assert torch.equal(load_clip(padded, CFG).frames, load_clip(clean, CFG).frames)
    # the device path cuts the same codestreams (without the tail) out of the file
    item = load_codestreams(padded, CFG)
    assert item is not None and item.streams == [streams[i] for i in indices]
    decoded = decode_jpegs(item.streams, torch.device("cpu"))
    assert np.array_equal(decoded[0].permute(1, 2, 0).numpy(), expected[0])


def test_a_truncated_frame_fails_its_file(tmp_path, cine) -> None:
    _, streams = cine
    cut = list(streams)
    cut[2] = cut[2][: len(cut[2]) * 2 // 3] + b"\x12\x34"  # cut short, then stray bytes
    path = jpeg_dicom(tmp_path / "cut.dcm", cut, 480, 640, seed=2)
    message = r"frame 2's JPEG data is truncated \(no end-of-image marker\): its pixels would be partly made up"
    with pytest.raises(MediaError, match=message):
        read_frames(path, [0, 2, 4])
    with pytest.raises(MediaError, match=message):
        load_codestreams(path, CFG)
    assert read_frames(path, [0, 1, 3])[0].shape == (3, 480, 640, 3)  # frames that are whole still read


@pytest.mark.parametrize("progressive", [False, True])
def test_declared_size_is_read_from_the_start_of_frame_header(progressive):
    import io

    from PIL import Image

    from echoclip_cli.media.jpeg_codestream import declared_size

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 90, 90)).save(buffer, "JPEG", progressive=progressive)
    data = buffer.getvalue()
    assert declared_size(data) == (240, 320)
    assert declared_size(memoryview(data)) == (240, 320)
    assert declared_size(b"not a jpeg") is None and declared_size(data[:20]) is None
