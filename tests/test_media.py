"""Reading inputs: DICOM of every encoding, videos, our own files, broken files, PHI, the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from echoclip_cli.errors import MediaError
from echoclip_cli.media import find_inputs, load_clip, preprocess_files, read_frames
from echoclip_cli.media.colour import grey_fraction
from echoclip_cli.media.dicom import plugin_hint
from echoclip_cli.media.phi import patient_key
from echoclip_cli.media.store_file import read_clip_file
from echoclip_cli.preprocess import to_model_input
from echoclip_cli.preprocess_config import PreprocessConfig
from tests import media_factory as mf
from tests.cli_helpers import one_error_line, run_cli

pydicom = pytest.importorskip("pydicom")

CFG = PreprocessConfig()
SMALL = PreprocessConfig(image_size=64)


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available (install pydicom-data)")
    return Path(path)


def _example(name: str) -> Path:
    import pydicom.examples

    return Path(pydicom.examples.get_path(name))


@pytest.fixture(scope="module")
def grey_frames() -> np.ndarray:
    return mf.echo_frames(6, seed=11)


# --------------------------------------------------------------------------- real files

# (file, frames expected with the default sampling, ultrasound region used, B-mode (mostly grey))
REAL_FILES = [
    ("example:ybr_color", 15, False, True),  # JPEG Baseline YBR cine; its region belongs to a larger image
    ("example:rgb_color", 1, False, False),  # power Doppler (colour) over B-mode
    ("example:palette_color", 1, False, False),  # B-mode, but the crop keeps a blue title banner
    ("color3d_jpeg_baseline.dcm", 20, True, True),  # 120-frame JPEG Baseline cine
    ("US1_J2KR.dcm", 1, False, False),  # JPEG 2000, power Doppler
    ("OBXXXX1A_rle_2frame.dcm", 1, True, True),  # RLE palette, two regions: 2D + ECG
    ("gdcm-US-ALOKA-16.dcm", 1, True, True),  # 16-bit palette, implicit VR, two 2D regions
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", 1, True, True),  # JPEG Lossless monochrome
]


def _real(name: str) -> Path:
    return _example(name.split(":", 1)[1]) if name.startswith("example:") else _testdata(name)


@pytest.mark.parametrize(("name", "n_frames", "region", "bmode"), REAL_FILES, ids=[r[0] for r in REAL_FILES])
def test_real_ultrasound_files_preprocess(name, n_frames, region, bmode):
    clip = load_clip(_real(name), CFG)
    assert clip.frames.shape == (n_frames, 3, 224, 224) and clip.frames.dtype == torch.uint8
    assert clip.meta["frame_indices"] == list(range(0, 2 * n_frames, 2))
    assert (clip.meta["region"] is not None) == region
    grey = grey_fraction(clip.frames.permute(0, 2, 3, 1).numpy())
    assert grey is not None and grey > (0.85 if bmode else 0.5), grey  # colours right: no green/purple
    assert clip.meta["modality"] == "US" and clip.meta["preprocess_digest"] == CFG.digest()
    json.dumps(clip.meta)  # JSON-serialisable


def test_region_pick_is_largest_2d_and_bounds_are_inclusive():
    clip = load_clip(_testdata("OBXXXX1A_rle_2frame.dcm"), CFG)
    assert clip.meta["region"] == [120, 60, 800, 519]  # 2D item, not the ECG item; MaxX1 800 clipped
    aloka = load_clip(_testdata("gdcm-US-ALOKA-16.dcm"), CFG)
    assert aloka.meta["region"] == [32, 24, 336, 416]  # two equal 2D views: the first
    ybr = load_clip(_example("ybr_color"), CFG)
    assert "outside" in ybr.meta["region_note"]


def test_jpeg_fast_path_matches_pydicom_pipeline():
    from pydicom.pixels import pixel_array

    path = _example("ybr_color")
    frames, meta = read_frames(path, [0, 7, 29])
    assert meta["decoder"] == "pillow" and frames.shape == (3, 240, 320, 3)
    for k, index in enumerate([0, 7, 29]):
        reference = pixel_array(path, index=index, decoding_plugin="pillow").astype(int)
        diff = np.abs(frames[k].astype(int) - reference)
        assert diff.mean() < 0.1 and diff.max() <= 2


def test_only_the_sampled_frames_are_decoded(monkeypatch):
    from echoclip_cli.media import dicom

    calls = []
    original = dicom.pillow_jpeg
    monkeypatch.setattr(dicom, "pillow_jpeg", lambda *a: calls.append(1) or original(*a))
    frames, meta = read_frames(_testdata("color3d_jpeg_baseline.dcm"), CFG.frame_indices)
    assert len(calls) == 20 and meta["n_frames_total"] == 120 and frames.shape[0] == 20


# Other encodings from pydicom's own test files: (file, frames, check against pydicom's pixels)
OTHER_FILES = [
    ("SC_jpeg_no_color_transform.dcm", True),  # RGB JPEG codestream Pillow would take for YCbCr
    ("image_dfl.dcm", False),  # deflated explicit VR
    ("MR_small_jpeg_ls_lossless.dcm", False),  # JPEG-LS, 16-bit signed
    ("MR_small_bigendian.dcm", False),  # explicit VR big endian, 16-bit
    ("SC_rgb_rle_2frame.dcm", True),
]


@pytest.mark.parametrize(("name", "compare"), OTHER_FILES, ids=[n for n, _ in OTHER_FILES])
def test_other_encodings_from_pydicom(name, compare):
    path = _testdata(name)
    frames, meta = read_frames(path, [0])
    assert frames.dtype == np.uint8 and frames.shape[0] == 1 and frames.shape[-1] == 3
    if compare:
        reference = pydicom.dcmread(path).pixel_array
        reference = reference[0] if reference.ndim == 4 else reference
        assert np.abs(frames[0].astype(int) - reference).max() <= 1
    assert load_clip(path, SMALL).frames.shape == (1, 3, 64, 64)


def test_frame_options_and_short_files():
    path = _testdata("OBXXXX1A_rle_2frame.dcm")
    clip = load_clip(path, CFG.replace(frames=5, stride=1))
    assert clip.meta["frame_indices"] == [0, 1] and clip.meta["mask"]["applied"] in (True, False)
    with pytest.raises(MediaError, match="none at the sampled indices"):
        load_clip(path, CFG.replace(start=5))


# --------------------------------------------------------------------------- synthetic DICOM

# kind → (expected decoder, max mean abs error against the grey source frames)
KINDS = {
    "rgb": ("pydicom", 0.0),
    "rgb_planar": ("pydicom", 0.0),
    "ybr_full": ("pydicom", 0.05),
    "ybr_as_rgb": ("pydicom", 0.05),  # YCbCr bytes labelled RGB: found and converted
    "jpeg": ("pillow", 2.0),
    "jpeg_as_rgb": ("pillow", 2.0),  # mislabelled RGB, YCbCr codestream without JFIF
    "rle": ("pydicom", 0.0),
    "mono2": ("pydicom", 0.0),
    "mono1": ("pydicom", 0.0),
    "grey16_window": ("pydicom", 0.6),
    "palette8": ("pydicom", 0.0),
    "palette16": ("pydicom", 0.0),
    "implicit": ("pydicom", 0.0),
    "h264": ("pyav", 3.0),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_synthetic_dicom_encodings_decode_to_the_same_pixels(tmp_path, grey_frames, kind):
    decoder, tolerance = KINDS[kind]
    path = mf.make_dicom(tmp_path / f"{kind}.dcm", grey_frames, kind)
    frames, meta = read_frames(path, [0, 2, 4])
    assert frames.shape == (3, *grey_frames.shape[1:]) and frames.dtype == np.uint8
    assert meta["decoder"] == decoder and meta["frame_indices"] == [0, 2, 4]
    diff = np.abs(frames.astype(int) - grey_frames[[0, 2, 4]])
    assert diff.mean() <= tolerance, diff.mean()
    assert grey_fraction(frames) > 0.95
    assert ("colour_fix" in meta) == (kind == "ybr_as_rgb")


@pytest.mark.parametrize("kind", ["grey16", "big_endian"])
def test_16_bit_grey_without_window_is_stretched(tmp_path, grey_frames, kind):
    path = mf.make_dicom(tmp_path / f"{kind}.dcm", grey_frames, kind)
    frames, meta = read_frames(path, [0, 2, 4])
    assert meta["grey_scaling"] == "minmax"
    source = grey_frames[[0, 2, 4], ..., 0].astype(float)
    expected = np.rint((source - source.min()) * 255 / (source.max() - source.min()))
    assert np.abs(frames[..., 0] - expected).max() <= 1


def test_mislabelled_jpeg_is_fixed_on_the_pydicom_fallback(tmp_path, grey_frames, monkeypatch):
    from echoclip_cli.media import dicom

    def refuse(*args, **kwargs):
        raise ValueError("Pillow refused")

    monkeypatch.setattr(dicom, "_jpeg_baseline_frames", refuse)
    path = mf.make_dicom(tmp_path / "mislabelled.dcm", grey_frames, "jpeg_as_rgb")
    frames, meta = read_frames(path, [0, 1])
    assert meta["decoder"] == "pydicom" and "YCbCr" in meta["colour_fix"]
    assert grey_fraction(frames) > 0.95
    assert np.abs(frames.astype(int) - grey_frames[:2]).mean() < 2.5


def test_dicom_without_preamble_and_metadata(tmp_path, grey_frames):
    regions = [mf.region_item((0, 0, 127, 95)), mf.region_item((10, 80, 120, 95), spatial_format=4, data_type=10)]
    path = mf.make_dicom(tmp_path / "IM0001", grey_frames, "implicit", preamble=False, regions=regions, fps=25)
    clip = load_clip(path, SMALL)
    meta = clip.meta
    assert meta["region"] == [0, 0, 128, 96] and meta["fps"] == 25.0
    assert meta["study_uid"] and meta["series_uid"] and meta["sop_uid"]
    assert meta["study_date"] == "20240102" and meta["manufacturer"] == "Synthetic Echo Co"
    assert meta["source_sha256"] and meta["original_size"] == [96, 128] and meta["n_frames_total"] == 6


def test_zero_frames_in_header_is_an_error(tmp_path, grey_frames):
    path = mf.make_dicom(tmp_path / "zero.dcm", grey_frames, "rgb")
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 0
    ds.save_as(path)
    with pytest.raises(MediaError, match="zero frames"):
        read_frames(path, [0])


def test_missing_plugin_names_the_package(monkeypatch):
    from types import SimpleNamespace

    import pydicom.pixels

    fake = SimpleNamespace(is_available=False, missing_dependencies=["pylibjpeg - requires pylibjpeg-openjpeg"])
    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: fake)
    with pytest.raises(MediaError, match="install pylibjpeg-openjpeg"):
        read_frames(_testdata("US1_J2KR.dcm"), [0])
    assert plugin_hint("JPEG-LS Lossless Image Compression") == "pylibjpeg-libjpeg"
    assert plugin_hint("RLE Lossless") == "pylibjpeg-rle"


# --------------------------------------------------------------------------- videos


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_video_files(tmp_path, suffix):
    frames = mf.echo_frames(45, seed=12)
    path = mf.make_video(tmp_path / f"clip{suffix}", frames)
    decoded, meta = read_frames(path, CFG.frame_indices)
    assert meta["frame_indices"] == list(range(0, 40, 2)) and meta["fps"] == 30.0
    assert meta["frames_decoded"] == 39  # decoding stops after the last frame needed
    assert np.abs(decoded.astype(int) - frames[0:40:2]).mean() < 3.0
    clip = load_clip(path, SMALL.replace(frames=4, stride=3, start=1))
    assert clip.frames.shape == (4, 3, 64, 64) and clip.meta["frame_indices"] == [1, 4, 7, 10]
    assert clip.meta["source_kind"] == "video" and clip.meta["sop_uid"] is None and clip.meta["patient_key"] is None


def test_short_video_gives_the_frames_it_has(tmp_path):
    path = mf.make_video(tmp_path / "short.avi", mf.echo_frames(7, seed=13))
    clip = load_clip(path, SMALL)
    assert clip.meta["frame_indices"] == [0, 2, 4, 6] and clip.frames.shape[0] == 4


def _upstream_like(path: Path, indices: list[int], size: int = 224, zoom: float = 0.1) -> np.ndarray:
    """The released pipeline as described (OpenCV decode → BGR, centre crop, 10 % zoom, INTER_CUBIC)."""
    import cv2

    capture, frames, index = cv2.VideoCapture(str(path)), [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index in indices:
            frames.append(frame)
        index += 1
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        side = min(h, w)
        frame = frame[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        m = int(side * zoom)
        out.append(cv2.resize(frame[m : side - m, m : side - m], (size, size), interpolation=cv2.INTER_CUBIC))
    return np.stack(out)  # BGR, as the model saw it


@pytest.mark.parametrize("mask", ["none", "auto"])
def test_reference_video_matches_opencv_pipeline(reference_dir, mask):
    pytest.importorskip("cv2")
    path = reference_dir / "example_video.avi"
    cfg = CFG.replace(mask=mask)
    clip = load_clip(path, cfg)
    expected = _upstream_like(path, cfg.frame_indices)
    ours_bgr = clip.frames.flip(1).permute(0, 2, 3, 1).numpy().astype(int)
    assert ours_bgr.shape == expected.shape == (20, 224, 224, 3)
    assert np.abs(ours_bgr - expected).mean() <= 1.0
    model_in = to_model_input(clip.frames, cfg)  # BGR /255, normalised: what the released code fed
    mean, std = np.array(cfg.mean), np.array(cfg.std)
    reference_in = ((expected / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    assert np.abs(model_in.numpy() - reference_in).mean() < 1.0 / 255 / min(cfg.std)


# --------------------------------------------------------------------------- finding inputs


def test_find_inputs_walks_folders_and_skips_non_images(tmp_path, grey_frames):
    root = tmp_path / "study"
    (root / "series" / "deep").mkdir(parents=True)
    bare = mf.make_dicom(root / "series" / "deep" / "IM0002", grey_frames[:2], "rgb", preamble=False, seed=2)
    named = mf.make_dicom(root / "series" / "a.dcm", grey_frames[:2], "mono2", seed=3)
    noext = mf.make_dicom(root / "IM0001", grey_frames[:2], "rgb", seed=4)
    video = mf.make_video(root / "clip.avi", grey_frames)
    (root / "notes.txt").write_text("not an input")
    (root / ".hidden.dcm").write_text("ignored")
    mf.make_dicomdir(root / "DICOMDIR")
    mf.make_sr(root / "series" / "report.dcm")
    files, records = find_inputs([root, tmp_path / "missing.dcm"])
    assert files == sorted([bare, named, noext, video], key=str)
    kinds = {Path(r["source"]).name: r["kind"] for r in records}
    assert kinds == {"DICOMDIR": "skipped", "report.dcm": "skipped", "missing.dcm": "error"}
    assert find_inputs([root], recursive=False)[0] == sorted([noext, video], key=str)


# --------------------------------------------------------------------------- our files


def test_preprocessed_file_reads_back_identically_and_refuses_other_settings(tmp_path, grey_frames):
    source = mf.make_dicom(tmp_path / "in.dcm", grey_frames, "jpeg", patient={"PatientID": "X1"})
    original = load_clip(source, SMALL)
    (record,) = list(preprocess_files([source], tmp_path / "out", SMALL))
    assert record.status == "ok" and Path(record.output).name == f"{original.meta['sop_uid']}.safetensors"
    again = load_clip(record.output, SMALL)
    assert torch.equal(again.frames, original.frames)
    own = "source_stat_key"  # resuming recognises the file given: the preprocessed one
    assert {k: v for k, v in again.meta.items() if k != own} == {k: v for k, v in original.meta.items() if k != own}
    assert again.meta[own] != original.meta[own]
    with pytest.raises(MediaError, match="other settings"):
        load_clip(record.output, SMALL.replace(frames=10))
    with pytest.raises(MediaError, match="already preprocessed"):
        read_frames(record.output, [0])


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(MediaError, match="not an echoclip preprocessed file"):
        load_clip(path, CFG)


# --------------------------------------------------------------------------- patient data

PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-98765", "PatientBirthDate": "19510302"}
PHI_STRINGS = ("Doe", "Jane", "PID-98765", "98765", "19510302")


def test_no_phi_in_any_output_without_keep_phi(tmp_path, grey_frames):
    (tmp_path / "in").mkdir()
    source = mf.make_dicom(tmp_path / "in" / "scan.dcm", grey_frames, "rgb", patient=PATIENT)
    out = tmp_path / "out"
    result = run_cli("preprocess", source, "--out", out, "--format", "jsonl", "--salt", "s3cret")
    assert result.exit_code == 0, result.stderr
    written = list(out.iterdir())
    assert len(written) == 1
    texts = [result.stdout, result.stderr, written[0].name, written[0].read_bytes().decode("latin-1")]
    for text in texts:
        for phi in PHI_STRINGS:
            assert phi not in text
    _, meta = read_clip_file(written[0])
    assert meta["patient_key"] == patient_key("PID-98765", "s3cret") and "phi" not in meta
    kept = run_cli("preprocess", source, "--out", tmp_path / "out2", "--keep-phi", "--salt", "s3cret", "-q")
    _, meta = read_clip_file(next((tmp_path / "out2").iterdir()))
    assert meta["phi"]["patient_id"] == "PID-98765" and meta["phi"]["patient_name"] == "Doe^Jane"
    assert kept.exit_code == 0


def test_patient_key_salt_sources(tmp_path, grey_frames, monkeypatch, _hermetic_home):
    source = mf.make_dicom(tmp_path / "p.dcm", grey_frames[:2], "rgb", patient={"PatientID": "ABC"})
    home_key = load_clip(source, SMALL).meta["patient_key"]
    salt_file = _hermetic_home / "salt"
    assert salt_file.is_file() and stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert home_key == patient_key("ABC", salt_file.read_text().strip())
    assert load_clip(source, SMALL).meta["patient_key"] == home_key  # stable
    monkeypatch.setenv("ECHOCLIP_SALT", "env-salt")
    assert load_clip(source, SMALL).meta["patient_key"] == patient_key("ABC", "env-salt")
    assert load_clip(source, SMALL, salt="arg").meta["patient_key"] == patient_key("ABC", "arg")
    assert patient_key("", "x") is None


# --------------------------------------------------------------------------- the command


def test_broken_inputs_one_error_line_each_and_exit_1(tmp_path):
    good, broken = mf.make_broken_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = run_cli("preprocess", tmp_path / "in", "--out", out, "--format", "jsonl", "--quiet")
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("error: ") for line in lines), result.stderr
    assert len(lines) == len(broken)
    for path in broken:
        assert sum(str(path) in line for line in lines) == 1, (path, result.stderr)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["status"] for r in records) == ["error"] * len(broken) + ["ok"] * len(good)
    outputs = sorted(p.name for p in out.iterdir())
    assert len(outputs) == len(good) and all(name.endswith(".safetensors") for name in outputs)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
    messages = " ".join(lines)
    for reason in ("empty file", "truncated", "not a DICOM file", "no pixel data", "no frames",
                   "not a readable video", "unsupported transfer syntax"):
        assert reason in messages


def test_cli_workers_table_and_skips(tmp_path, grey_frames):
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(3):
        mf.make_dicom(folder / f"v{seed}.dcm", mf.echo_frames(4, seed=seed), "rgb", seed=seed)
    mf.make_dicomdir(folder / "DICOMDIR")
    one = run_cli("preprocess", folder, "--out", tmp_path / "one", "--format", "jsonl", "--frames", "2")
    two = run_cli("preprocess", folder, "--out", tmp_path / "two", "--format", "table", "--workers", "2",
                  "--frames", "2")
    assert one.exit_code == 0 and two.exit_code == 0, two.stderr
    assert "skipped" in one.stderr and "DICOMDIR" in one.stderr
    assert "3 written, 0 failed, 1 skipped" in two.stderr and "status" in two.stdout
    for path in (tmp_path / "one").iterdir():
        a, meta_a = read_clip_file(path)
        b, meta_b = read_clip_file(tmp_path / "two" / path.name)
        assert torch.equal(a, b) and meta_a["frame_indices"] == [0, 2]


def test_cli_empty_folder_is_one_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("preprocess", tmp_path / "empty", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "no DICOM or video files" in one_error_line(result)


def test_cli_mask_option_is_validated(tmp_path):
    result = run_cli("preprocess", tmp_path, "--out", tmp_path / "o", "--mask", "sometimes")
    assert result.exit_code == 2


def test_error_reasons_name_the_decoder_that_failed_not_pydicoms_preamble():
    from echoclip_cli.media.phi import safe_reason

    exc = RuntimeError("Unable to decode as exceptions were raised by all available plugins:\n"
                       "  pylibjpeg: libjpeg error code '-1038' returned from Decode(): A misplaced marker\n"
                       "  pillow: Pillow does not support 'JPEG Extended'")
    assert safe_reason(exc) == "pylibjpeg: libjpeg error code '…' returned from Decode(): A misplaced marker"
    assert safe_reason(ValueError("one line 'PATIENT^NAME' here")) == "one line '…' here"
