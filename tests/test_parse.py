"""The device path's parse (``load_codestreams``): one read of the file, frames cut from the
encapsulated items, the identity hashed from the same bytes: the same streams, metadata and
errors as the general reader (pydicom's header reader and ``generate_frames``) on every layout."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from echoclip_cli.errors import MediaError
from echoclip_cli import identity
from echoclip_cli.files import sha256_file
from echoclip_cli.media import dicom
from echoclip_cli.media.clip import load_codestreams
from echoclip_cli.media.jpeg_codestream import _SCAN_END_RE, _scan_end
from echoclip_cli.preprocess_config import PreprocessConfig
from tests.media_factory import base_dataset, echo_frames, jpeg_dicom, jpeg_frames, make_dicom, region_item

CFG = PreprocessConfig()
INDICES = CFG.frame_indices


def _both(path):
    """(in memory, general reader): each a result or the MediaError message."""
    out = []
    for read in (lambda: dicom._codestreams_in_memory(path, path.read_bytes(), INDICES, keep_phi=True, salt="s"),
                 lambda: dicom._codestreams_from_file(path, INDICES, keep_phi=True, salt="s")):
        try:
            out.append(read())
        except MediaError as exc:
            out.append(exc.message)
    return out


def _layout(path, frames, *, bot=False, fragments=1, extended=False):
    ds = base_dataset(n_frames=len(frames), rows=frames.shape[1], cols=frames.shape[2], seed=3)
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated = "YBR_FULL_422", 3, 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.PlanarConfiguration = 8, 7, 0, 0
    streams = jpeg_frames(frames)
    if extended:
        from pydicom.encaps import encapsulate_extended

        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(streams)
    else:
        ds.PixelData = encapsulate(streams, fragments_per_frame=fragments, has_bot=bot)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path, enforce_file_format=True)
    return path


FRAMES = echo_frames(24, 48, 64, seed=2)


@pytest.mark.parametrize("case", ["jpeg", "jpeg_mono", "jpeg_as_rgb", "regions", "no_preamble", "bot", "two_fragments",
                                  "extended", "rgb", "rle", "padded", "truncated_frame", "cut_file", "few_frames"])
def test_the_in_memory_parse_gives_what_the_general_reader_gives(tmp_path, case):
    path = tmp_path / f"{case}.dcm"
    if case in ("jpeg", "jpeg_mono", "jpeg_as_rgb", "rgb", "rle"):
        make_dicom(path, FRAMES, case)
    elif case == "regions":
        make_dicom(path, FRAMES, "jpeg", regions=[region_item([4, 2, 60, 44])], patient={"PatientID": "P1"})
    elif case == "no_preamble":
        make_dicom(path, FRAMES, "jpeg", preamble=False)
    elif case in ("bot", "two_fragments", "extended"):
        _layout(path, FRAMES, bot=case == "bot", fragments=2 if case == "two_fragments" else 1,
                extended=case == "extended")
    elif case == "few_frames":
        make_dicom(path, FRAMES[:1], "jpeg")
    else:
        streams = jpeg_frames(FRAMES)
        if case == "padded":
            streams = [s + b"\x00\x00junk" for s in streams]
        if case == "truncated_frame":
            streams[4] = streams[4][: len(streams[4]) // 2]
        jpeg_dicom(path, streams, 48, 64)
        if case == "cut_file":
            path.write_bytes(path.read_bytes()[:-5000])
    fast, general = _both(path)
    if fast is dicom._UNUSUAL:  # declined: read_jpeg_codestreams asks the general reader
        assert case in ("no_preamble", "two_fragments", "extended", "cut_file")
        return
    assert case not in ("two_fragments", "extended", "cut_file")
    assert fast == general


@pytest.mark.parametrize("kind", ["jpeg", "jpeg_mono"])
def test_load_codestreams_reads_once_and_keeps_the_identity(tmp_path, kind, monkeypatch):
    path = make_dicom(tmp_path / "a.dcm", FRAMES, kind)
    item = load_codestreams(path, CFG)
    assert item is not None and item.meta["source_sha256"] == sha256_file(path)
    monkeypatch.setattr(dicom, "_codestreams_from_file", lambda *a, **k: pytest.fail("read twice"))
    monkeypatch.setattr(dicom, "read_header", lambda *a, **k: pytest.fail("read twice"))
    again = load_codestreams(path, CFG)
    assert again is not None and again.streams == item.streams and again.meta == item.meta


def test_declined_layouts_still_take_the_device_path(tmp_path):
    path = _layout(tmp_path / "two.dcm", FRAMES, fragments=2)
    item = load_codestreams(path, CFG)
    assert item is not None and item.streams == jpeg_frames(FRAMES[INDICES[: len(item.streams)]])
    assert item.meta["source_sha256"] == sha256_file(path)


def test_the_scan_end_search_equals_the_pattern():
    rng = np.random.default_rng(0)
    alphabet = np.array([0x00, 0xFF, 0xD0, 0xD7, 0xD8, 0xD9, 0x12, 0xC4], dtype=np.uint8)
    for size in (0, 1, 2, 3, 17, 400):
        for _ in range(200):
            data = rng.choice(alphabet, size).tobytes()
            pos = int(rng.integers(0, size + 1))
            found = _SCAN_END_RE.search(data, pos)
            assert _scan_end(data, pos) == (found.start() if found else None)
            assert _scan_end(memoryview(data), pos) == (found.start() if found else None)


def test_the_identity_is_exact_whatever_the_header_says(tmp_path):
    """The device path's key is the one a store recognises the file by (identity.input_key), and
    a file whose header and sampled frames are the same but whose other bytes differ is another
    input (identity.py: why the whole file is hashed)."""
    path = make_dicom(tmp_path / "a.dcm", FRAMES, "jpeg")
    streams = jpeg_frames(FRAMES)
    other = FRAMES.copy()
    other[1] = 255 - other[1]  # frame 1 is never sampled (frames 0, 2, 4, ...)
    changed = make_dicom(tmp_path / "b.dcm", other, "jpeg")
    assert len(jpeg_frames(other)[1]) != len(streams[1]) or jpeg_frames(other)[1] != streams[1]
    first, second = load_codestreams(path, CFG), load_codestreams(changed, CFG)
    assert first.meta["sop_uid"] == second.meta["sop_uid"] and first.streams == second.streams
    assert first.meta["source_sha256"] == identity.input_key(path)
    assert second.meta["source_sha256"] == identity.input_key(changed) != first.meta["source_sha256"]
