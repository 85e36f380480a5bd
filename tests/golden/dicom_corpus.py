"""The DICOM regression corpus: public echo files and what echoclip makes of them.

Every public DICOM file the tests read pixels from (pydicom's bundled examples, pydicom's test
files and the pydicom-data package) is listed in :data:`CORPUS`. For each one
``tests/golden/dicom_corpus.json`` records, at the default preprocessing:

- ``file_sha256``: the file the record was made from;
- ``decoder``, ``frame_indices``, ``decoded_shape``: how it was read;
- ``decoded_sha256``: sha256 of the decoded RGB frames (``read_frames``, uint8, T×H×W×3);
- ``preprocessed_sha256``: sha256 of the model's frames (``load_clip``, uint8, T×3×224×224);
- ``frame_means`` (per frame and channel) and ``thumbnail`` (8×8 block means of the mean frame,
  per channel), in grey levels, for a comparison that holds across decoders.

Exact digests hold only where the decoders (pydicom, Pillow's libjpeg-turbo, pylibjpeg, gdcm,
numpy) and, for the preprocessed frames, torch and the CPU's vector unit are the ones recorded in
``environment``: JPEG decoders differ by a few grey levels on lossy frames (ECHO.md) and float
resizes can round the other way on another CPU. The means are checked everywhere, within
:data:`TOLERANCE` grey levels: decoders move them by under 0.06 here (Pillow against
pylibjpeg-libjpeg on the two lossy cines), a reader mistake (colours swapped, a wrong frame, a
shifted crop) by far more.

``scripts/make_dicom_corpus.py`` rewrites the JSON; run it after a deliberate change and read
the diff.
"""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

JSON_PATH = Path(__file__).with_name("dicom_corpus.json")
TOLERANCE = 0.5  # grey levels, on frame means and 8×8 block means
THUMBNAIL = 8

# (name, what it is): "example:NAME" is pydicom.examples.NAME; any other name a pydicom test file
# (pydicom's own or pydicom-data's, found by pydicom.data.get_testdata_file).
CORPUS: tuple[tuple[str, str], ...] = (
    ("example:ybr_color", "US, JPEG Baseline YBR_FULL_422 cine, 30 frames, 240×320"),
    ("example:rgb_color", "US, RGB, power Doppler over B-mode"),
    ("example:palette_color", "US, PALETTE COLOR B-mode"),
    ("color3d_jpeg_baseline.dcm", "US, JPEG Baseline YBR_FULL_422 cine, 120 frames, 480×640"),
    ("US1_J2KR.dcm", "US, JPEG 2000 lossless, power Doppler"),
    ("US1_UNCR.dcm", "US, uncompressed RGB still"),
    ("OBXXXX1A_rle_2frame.dcm", "US, RLE palette, 2 frames, 2D + ECG regions"),
    ("gdcm-US-ALOKA-16.dcm", "US, 16-bit palette, implicit VR"),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "US, JPEG Lossless monochrome"),
    ("SC_jpeg_no_color_transform.dcm", "secondary capture, RGB JPEG codestream without a colour transform"),
    ("image_dfl.dcm", "deflated explicit VR"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR, JPEG-LS lossless, 16-bit signed"),
    ("MR_small_bigendian.dcm", "MR, explicit VR big endian, 16-bit"),
    ("SC_rgb_rle_2frame.dcm", "secondary capture, RGB RLE, 2 frames"),
)

_DECODER_PACKAGES = (
    "pydicom", "pillow", "numpy", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle",
    "python-gdcm",
)  # fmt: skip


def find_file(name: str) -> Path | None:
    """The corpus file ``name``, or None when it is not installed (pydicom-data missing)."""
    if name.startswith("example:"):
        import pydicom.examples

        return Path(pydicom.examples.get_path(name.split(":", 1)[1]))
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    return Path(found) if found else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, dict[str, str | None]]:
    """What the exact digests depend on: the decoders, and what the preprocessing runs on."""
    import torch
    from PIL import features

    decoders = {package: _version(package) for package in _DECODER_PACKAGES}
    decoders["libjpeg-turbo"] = features.version("libjpeg_turbo")
    preprocess = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }
    return {"decoders": decoders, "preprocess": preprocess}


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _means(frames: np.ndarray) -> tuple[list[list[float]], list[list[list[float]]]]:
    """Per-frame channel means and 8×8 block means of the mean frame: (T, 3, S, S) uint8 in."""
    x = frames.astype(np.float64)
    frame_means = x.mean(axis=(2, 3))
    mean_frame = x.mean(axis=0)  # (3, S, S)
    c, h, w = mean_frame.shape
    blocks = mean_frame[:, : h - h % THUMBNAIL, : w - w % THUMBNAIL]
    blocks = blocks.reshape(c, THUMBNAIL, h // THUMBNAIL, THUMBNAIL, w // THUMBNAIL).mean(axis=(2, 4))
    return np.round(frame_means, 2).tolist(), np.round(blocks, 2).tolist()


def measure(path: Path) -> dict[str, Any]:
    """The corpus record of one file, at the default preprocessing."""
    from echoclip_cli.media import load_clip, read_frames
    from echoclip_cli.preprocess_config import PreprocessConfig

    cfg = PreprocessConfig()
    decoded, meta = read_frames(path, cfg.frame_indices)
    frames = load_clip(path, cfg).frames.numpy()
    frame_means, thumbnail = _means(frames)
    return {
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "decoder": meta.get("decoder"),
        "frame_indices": list(meta["frame_indices"]),
        "decoded_shape": list(decoded.shape),
        "decoded_sha256": _sha256(decoded),
        "preprocessed_sha256": _sha256(frames),
        "frame_means": frame_means,
        "thumbnail": thumbnail,
    }


def preprocess_digest() -> str:
    """The digest of the default preprocessing the corpus was made with."""
    from echoclip_cli.preprocess_config import PreprocessConfig

    return PreprocessConfig().digest()
