"""Clip types: the header decides first, the pixels where it is silent; tasks score only what suits them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from echoclip_cli.media import load_clip
from echoclip_cli.media.classify import from_pixels, parse_clip_types
from echoclip_cli.errors import UsageError
from echoclip_cli.preprocess_config import PreprocessConfig
from tests.cli_helpers import run_cli
from tests.media_factory import echo_frames, make_dicom, make_video, region_item

H, W = 48, 64
CFG = PreprocessConfig()


def _kind(path) -> tuple[str, str]:
    meta = load_clip(path, CFG).meta
    return meta["clip_type"], meta["clip_reason"]


@pytest.mark.parametrize("regions, expected", [
    ([region_item((0, 0, W - 1, H - 1), 1, 1)], "2d"),
    ([region_item((0, 0, W - 1, H - 1), 1, 1), region_item((10, 10, 40, 30), 1, 2)], "2d_colour"),
    ([region_item((0, 0, W - 1, H // 3), 1, 1), region_item((0, H // 3 + 1, W - 1, H - 1), 3, 3)],
     "spectral_doppler"),
    ([region_item((0, 0, W - 1, 9), 1, 1), region_item((0, 10, W - 1, H - 1), 2, 1)], "m_mode"),
    ([region_item((0, 0, W - 1, H - 1), 1, 1), region_item((0, H - 6, W - 1, H - 1), 4, 10)], "2d"),  # + ECG
])
def test_the_header_regions_decide(tmp_path, regions, expected):
    path = make_dicom(tmp_path / "x.dcm", echo_frames(12, H, W, seed=1), "rgb", regions=regions)
    assert _kind(path)[0] == expected


def test_non_ultrasound_and_single_frames_from_the_header(tmp_path):
    from pydicom.data import get_testdata_file

    assert _kind(get_testdata_file("CT_small.dcm")) == ("not_ultrasound", "Modality CT, not ultrasound (US)")
    assert _kind(get_testdata_file("US1_UNCR.dcm"))[0] == "still"


def test_the_pixels_decide_where_the_header_is_silent(tmp_path):
    moving = echo_frames(12, H, W, seed=2)
    assert _kind(make_video(tmp_path / "cine.avi", moving))[0] == "2d"
    assert from_pixels(np.repeat(moving[:1], 6, axis=0)) == ("still", "the frames do not change")
    assert from_pixels(moving[:1])[0] == "still"
    coloured = moving.copy()
    coloured[:, 10:30, 20:40] = (200, 30, 30)  # a colour-flow jet over the sector
    kind, reason = from_pixels(coloured)
    assert kind == "2d_colour" and "coloured" in reason


def test_clip_type_option_values():
    assert parse_clip_types(None, ("2d",)) == ("2d",)
    assert parse_clip_types("2d, 2d_colour", ("2d",)) == ("2d", "2d_colour")
    assert "still" in parse_clip_types("all", ("2d",))
    with pytest.raises(UsageError):
        parse_clip_types("2D-colour", ("2d",))
    with pytest.raises(UsageError):
        parse_clip_types("not_ultrasound", ("2d",))


def _jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_predict_ef_scores_the_cine_only_and_says_why_not_the_others(tiny_bundle, tmp_path):
    """A folder as a PACS export has it: a cine, a CT, a single-frame still, and the cine again
    under another name (the same SOP instance): one EF, one study mean over one clip."""
    from pydicom.data import get_testdata_file

    study = tmp_path / "study"
    study.mkdir()
    cine = make_dicom(study / "cine.dcm", echo_frames(30, H, W, seed=3), "jpeg", seed=7,
                      regions=[region_item((0, 0, W - 1, H - 1))])
    shutil.copy(cine, study / "cine_again.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), study / "ct.dcm")
    shutil.copy(get_testdata_file("US1_UNCR.dcm"), study / "still.dcm")
    result = run_cli("predict-ef", "--dir", study, "-w", "tiny", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr  # skipped clips are not failures
    records = _jsonl(result.stdout)
    videos = {r["source"].rsplit("/", 1)[-1]: r for r in records if r["level"] == "video"}
    assert videos["cine.dcm"]["ef"] is not None and videos["cine.dcm"]["clip_type"] == "2d"
    for name, kind in (("ct.dcm", "not_ultrasound"), ("still.dcm", "still")):
        assert videos[name]["ef"] is None and videos[name]["clip_type"] == kind
        assert videos[name]["skipped"] and videos[name]["error"] is None
    cine_study = [r for r in records if r["level"] == "study" and r["study"] == videos["cine.dcm"]["study"]]
    assert len(cine_study) == 1 and cine_study[0]["n_videos"] == 1 and cine_study[0]["n_duplicates"] == 1
    assert cine_study[0]["ef"] == videos["cine.dcm"]["ef"]
    assert "not scored for their type" in result.stderr
    assert not any(r["level"] == "study" and r["study"] == videos["ct.dcm"]["study"] for r in records)
    everything = _jsonl(run_cli("predict-ef", "--dir", study, "-w", "tiny", "-f", "jsonl",
                                "--clip-types", "all").stdout)
    assert {r["source"].rsplit("/", 1)[-1] for r in everything if r["level"] == "video" and r["ef"] is not None} == {
        "cine.dcm", "cine_again.dcm", "still.dcm"}  # a CT is never scored


def test_embed_records_clip_types_and_refuses_non_ultrasound(tiny_bundle, tmp_path):
    from pydicom.data import get_testdata_file

    cine = make_dicom(tmp_path / "cine.dcm", echo_frames(12, H, W, seed=4), "rgb")
    result = run_cli("embed", cine, get_testdata_file("CT_small.dcm"), "-w", "tiny", "-f", "jsonl",
                     "--out", tmp_path / "s")
    assert result.exit_code == 0, result.stderr
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in _jsonl(result.stdout)}
    assert rows["cine.dcm"]["clip_type"] == "2d" and rows["cine.dcm"]["skipped"] is None
    assert rows["CT_small.dcm"]["clip_type"] == "not_ultrasound" and rows["CT_small.dcm"]["skipped"]
    from echoclip_cli.store import read_store

    stored = read_store(tmp_path / "s")
    assert [r["clip_type"] for r in stored.rows] == ["2d"]


@pytest.mark.parametrize("kind", ["jpeg", "rgb"])
def test_a_clip_its_header_refuses_is_read_once_and_never_decoded(tmp_path, monkeypatch, kind):
    """A run that scores 2D only reads a Doppler clip's header once — the parse the reader does
    anyway — and decodes none of its frames, on the CPU path and on the device path's parse."""
    from echoclip_cli.media import clip as clip_module
    from echoclip_cli.media import dicom

    regions = [region_item((0, 0, 63, 20), 1, 1), region_item((0, 21, 63, 47), 3, 3)]
    path = make_dicom(tmp_path / "doppler.dcm", echo_frames(6, 48, 64, seed=1), kind, regions=regions)
    parses = []
    real, real_decode = dicom._parsed, dicom._decode_rgb
    monkeypatch.setattr(dicom, "_parsed", lambda *a, **k: parses.append(1) or real(*a, **k))
    monkeypatch.setattr(dicom, "_decode_rgb", lambda *a, **k: pytest.fail("a refused clip was decoded"))
    cfg = PreprocessConfig()
    clip = load_clip(path, cfg, wanted_types=("2d",))
    assert clip.frames.shape[0] == 0 and clip.meta["clip_type"] == "spectral_doppler" and clip.meta["refused"]
    assert len(parses) == 1
    parses.clear()
    item = clip_module.load_codestreams(path, cfg, wanted_types=("2d",))
    assert isinstance(item, clip_module.Clip) and item.meta["clip_type"] == "spectral_doppler"
    assert len(parses) <= 1  # JPEG: parsed from the bytes in memory (no header parse at all); else once
    monkeypatch.setattr(dicom, "_decode_rgb", real_decode)
    scored = make_dicom(tmp_path / "a4c.dcm", echo_frames(6, 48, 64, seed=2), kind,
                        regions=[region_item((0, 0, 63, 47), 1, 1)])
    parses.clear()
    assert load_clip(scored, cfg, wanted_types=("2d",)).frames.shape[0] == 3
    assert len(parses) == 1  # a clip that is scored: its header is not parsed a second time to decide
