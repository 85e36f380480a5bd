"""Synthetic echo inputs for the tests: frames, DICOM files of every encoding we read, videos, junk.

Everything is small (about 96×128 pixels, a dozen frames) so the media tests stay fast on two
cores. Frames look like a B-mode echo: a grey, speckled, moving scan sector on black, with
optional burned-in white text, a green ECG trace that sweeps, and a static grey-scale bar.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

H, W = 96, 128  # default synthetic frame size


# --------------------------------------------------------------------------- frames


def sector_mask(height: int = H, width: int = W) -> np.ndarray:
    """(H, W) bool fan: apex at the top centre, ±40°, radius 0.85·H."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    apex_x, apex_y = (width - 1) / 2, 2.0
    dx, dy = xx - apex_x, yy - apex_y
    radius = np.hypot(dx, dy)
    angle = np.degrees(np.arctan2(dx, np.maximum(dy, 1e-3)))
    return (radius < 0.85 * height) & (np.abs(angle) < 40) & (dy > 0)


def echo_frames(
    n: int = 12,
    height: int = H,
    width: int = W,
    *,
    seed: int = 0,
    text: bool = False,
    ecg: bool = False,
    bar: bool = False,
) -> np.ndarray:
    """(n, H, W, 3) uint8 grey B-mode-like frames (see module docstring)."""
    rng = np.random.default_rng(seed)
    sector = sector_mask(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 60 + 50 * np.sin(xx / 9.0) * np.cos(yy / 7.0)
    frames = np.zeros((n, height, width, 3), np.uint8)
    for t in range(n):
        wall = 90 * np.exp(-(((np.hypot(xx - width / 2, yy - height / 2) - 20 - 6 * np.sin(t / 2)) / 4) ** 2))
        grey = np.clip(base + wall + rng.normal(0, 25, (height, width)), 15, 250) * sector
        frames[t] = grey.astype(np.uint8)[..., None]
    for t in range(n):
        image = Image.fromarray(frames[t])
        draw = ImageDraw.Draw(image)
        if text:
            draw.text((2, 1), "ID 4711", fill=(255, 255, 255))
            draw.text((width - 30, 1), "HR60", fill=(255, 255, 255))
        if ecg:
            base_y, x0, x1 = height - 6, 4, width - 4
            points = [(x, base_y - (4 if (x + 3 * t) % 24 < 2 else 0)) for x in range(x0, x1)]
            draw.line(points, fill=(0, 255, 0), width=1)
        if bar:
            for y in range(20, height - 20):
                draw.point([(width - 3, y), (width - 2, y)], fill=(255 - 3 * (y - 20),) * 3)
        frames[t] = np.asarray(image)
    return frames


def overlay_pixels(height: int = H, width: int = W) -> np.ndarray:
    """(H, W) bool: where text and ECG are drawn in :func:`echo_frames` (outside the sector)."""
    with_overlays = echo_frames(3, height, width, seed=1, text=True, ecg=True)
    plain = echo_frames(3, height, width, seed=1)
    return (with_overlays != plain).any(axis=(0, 3)) & ~sector_mask(height, width)


# --------------------------------------------------------------------------- DICOM

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
BASIC_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def region_item(box: Sequence[int], spatial_format: int = 1, data_type: int = 1) -> Any:
    """A SequenceOfUltrasoundRegions item with inclusive bounds ``box`` = (x0, y0, x1, y1)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.RegionSpatialFormat = spatial_format
    item.RegionDataType = data_type
    item.RegionFlags = 0
    item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1, item.RegionLocationMaxY1 = box
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = item.PhysicalDeltaY = 0.03
    return item


def base_dataset(
    *,
    n_frames: int,
    rows: int,
    cols: int,
    sop_class: str = US_MULTIFRAME,
    patient: dict[str, str] | None = None,
    regions: Sequence[Any] = (),
    fps: float | None = 30.0,
    seed: int = 0,
) -> Any:
    """A header-only ultrasound dataset (file meta included), deterministic UIDs from ``seed``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"sop{seed}"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[f"study{seed}"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"series{seed}"])
    ds.Modality = "US"
    ds.Manufacturer = "Synthetic Echo Co"
    ds.StudyDate = "20240102"
    for key, value in (patient or {}).items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = rows, cols
    if n_frames > 1 or sop_class == US_MULTIFRAME:
        ds.NumberOfFrames = n_frames
        if fps:
            ds.FrameTime = round(1000.0 / fps, 3)
    if regions:
        ds.SequenceOfUltrasoundRegions = list(regions)
    return ds


def _set_pixels(ds: Any, photometric: str, samples: int, bits: int, data: bytes, *, signed: bool = False) -> None:
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = data


def strip_jfif(codestream: bytes) -> bytes:
    """Remove the JFIF APP0 segment, so nothing in the codestream says it holds YCbCr."""
    if codestream[2:4] == b"\xff\xe0":
        length = int.from_bytes(codestream[4:6], "big")
        return codestream[:2] + codestream[4 + length :]
    return codestream


def jpeg_frames(frames: np.ndarray, quality: int = 95, strip: bool = False) -> list[bytes]:
    """Encode each RGB (or grey) frame as JPEG Baseline with Pillow (YCbCr 4:2:0 for colour)."""
    out = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        out.append(strip_jfif(buffer.getvalue()) if strip else buffer.getvalue())
    return out


def jpeg_dicom(path: Path, streams: Sequence[bytes], rows: int, cols: int, *, seed: int = 0) -> Path:
    """Write JPEG codestreams as they are (damaged, padded...) as a YBR_FULL_422 JPEG Baseline cine."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = base_dataset(n_frames=len(streams), rows=rows, cols=cols, seed=seed)
    _set_pixels(ds, "YBR_FULL_422", 3, 8, b"")
    ds.PixelData = encapsulate(list(streams))
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    ds.save_as(path, enforce_file_format=True)
    return path


def h264_stream(frames: np.ndarray, fps: int = 30) -> bytes:
    """An H.264 Annex-B elementary stream of the frames (as a DICOM MPEG-4 transfer syntax holds)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="h264") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast", "tune": "zerolatency"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def ycbcr_of(frames: np.ndarray) -> np.ndarray:
    """Full-range YCbCr of RGB frames (JFIF equations), uint8."""
    rgb = frames.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    return np.clip(np.rint(np.stack([y, cb, cr], -1)), 0, 255).astype(np.uint8)


def make_dicom(
    path: Path,
    frames: np.ndarray,
    kind: str = "rgb",
    *,
    patient: dict[str, str] | None = None,
    regions: Sequence[Any] = (),
    fps: float | None = 30.0,
    seed: int = 0,
    preamble: bool = True,
) -> Path:
    """Write ``frames`` (T, H, W, 3) uint8 as a DICOM file of encoding ``kind``.

    Kinds: rgb, rgb_planar, ybr_full, ybr_as_rgb (YCbCr bytes labelled RGB), jpeg (YBR_FULL_422),
    jpeg_as_rgb (YCbCr codestream, no JFIF marker, labelled RGB), jpeg_mono (one-component
    JPEG, MONOCHROME2), rle, mono2, mono1, grey16
    (12 bits stored, no window), grey16_window, palette8, palette16, big_endian (16-bit grey),
    implicit (implicit VR little endian, RGB), h264 (MPEG-4 AVC transfer syntax).
    """
    from pydicom import uid
    from pydicom.encaps import encapsulate

    n, rows, cols = frames.shape[:3]
    ds = base_dataset(n_frames=n, rows=rows, cols=cols, patient=patient, regions=regions, fps=fps, seed=seed)
    grey = frames[..., 0]
    little, implicit = True, False
    if kind in ("rgb", "implicit", "rle"):
        _set_pixels(ds, "RGB", 3, 8, frames.tobytes())
        implicit = kind == "implicit"
        if implicit:
            ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    elif kind == "rgb_planar":
        _set_pixels(ds, "RGB", 3, 8, frames.transpose(0, 3, 1, 2).tobytes())
        ds.PlanarConfiguration = 1
    elif kind == "ybr_full":
        _set_pixels(ds, "YBR_FULL", 3, 8, ycbcr_of(frames).tobytes())
    elif kind == "ybr_as_rgb":
        _set_pixels(ds, "RGB", 3, 8, ycbcr_of(frames).tobytes())
    elif kind in ("jpeg", "jpeg_as_rgb"):
        mislabelled = kind == "jpeg_as_rgb"
        _set_pixels(ds, "RGB" if mislabelled else "YBR_FULL_422", 3, 8, b"")
        ds.PixelData = encapsulate(jpeg_frames(frames, strip=mislabelled))
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    elif kind == "jpeg_mono":
        _set_pixels(ds, "MONOCHROME2", 1, 8, b"")
        ds.PixelData = encapsulate(jpeg_frames(np.ascontiguousarray(grey)))
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    elif kind == "h264":
        _set_pixels(ds, "YBR_PARTIAL_420", 3, 8, b"")
        ds.PixelData = encapsulate([h264_stream(frames)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid.MPEG4HP41
    elif kind in ("mono2", "mono1"):
        stored = grey if kind == "mono2" else 255 - grey
        _set_pixels(ds, "MONOCHROME2" if kind == "mono2" else "MONOCHROME1", 1, 8, stored.tobytes())
    elif kind in ("grey16", "grey16_window", "big_endian"):
        values = grey.astype(np.uint16) * 16  # 12 bits stored
        big = kind == "big_endian"
        _set_pixels(ds, "MONOCHROME2", 1, 12, values.astype(">u2" if big else "<u2").tobytes())
        if kind == "grey16_window":
            ds.WindowCenter, ds.WindowWidth = 2048, 4096
        if big:
            ds.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian
            little = False
    elif kind in ("palette8", "palette16"):
        _set_palette(ds, grey, sixteen=kind == "palette16")
    else:
        raise ValueError(f"unknown DICOM kind {kind!r}")
    if kind == "rle":
        ds.compress(uid.RLELossless, encoding_plugin="pydicom")
    ds.save_as(path, implicit_vr=implicit, little_endian=little, enforce_file_format=preamble)
    return path


def _set_palette(ds: Any, index: np.ndarray, *, sixteen: bool) -> None:
    """Palette colour with a grey LUT (entry i → grey i), 8- or 16-bit entries."""
    _set_pixels(ds, "PALETTE COLOR", 1, 8, index.tobytes())
    entries = np.arange(256, dtype=np.uint16)
    if sixteen:
        entries = entries * 257
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16 if sixteen else 8])
        data = entries.astype("<u2").tobytes() if sixteen else entries.astype(np.uint8).tobytes()
        setattr(ds, f"{colour}PaletteColorLookupTableData", data)


def make_sr(path: Path) -> Path:
    """A tiny structured-report object (no image): a non-image DICOM to skip."""
    ds = base_dataset(n_frames=1, rows=1, cols=1, sop_class=BASIC_SR)
    for keyword in ("Rows", "Columns"):
        delattr(ds, keyword)
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)
    return path


def make_dicomdir(path: Path) -> Path:
    """A minimal file that declares itself a DICOMDIR."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = "TEST"
    ds.save_as(path, enforce_file_format=True)
    return path


def make_without_pixels(path: Path) -> Path:
    """An ultrasound image object whose pixel data is missing."""
    ds = base_dataset(n_frames=1, rows=16, cols=16, sop_class=US_IMAGE)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_unsupported(path: Path) -> Path:
    """A DICOM image in a transfer syntax no installed plugin decodes (JPEG XL)."""
    from pydicom.encaps import encapsulate

    ds = base_dataset(n_frames=1, rows=16, cols=16, sop_class=US_IMAGE)
    _set_pixels(ds, "RGB", 3, 8, b"")
    ds.PixelData = encapsulate([b"\xff\x0a" + bytes(30)])
    ds["PixelData"].VR = "OB"
    # pydicom 3.0 refuses to write a transfer syntax it does not know: write MPEG-2 (same UID
    # length) and patch the UID in the file meta to JPEG XL Lossless.
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.4.100\x00", b"1.2.840.10008.1.2.4.110\x00", 1))
    return path


# --------------------------------------------------------------------------- videos


def make_video(path: Path, frames: np.ndarray, *, fps: int = 30, codec: str | None = None) -> Path:
    """Write an AVI (MJPEG, like the released example) or MP4 (H.264) with PyAV."""
    import av

    codec = codec or ("mjpeg" if path.suffix.lower() == ".avi" else "libx264")
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if codec == "mjpeg":
            stream.options = {"qmin": "1", "qmax": "2"}
        else:
            stream.options = {"crf": "5", "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def make_zero_frame_video(path: Path) -> Path:
    """A valid AVI container with a video stream and no frames."""
    import av

    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuvj420p"
        container.start_encoding()
    return path


def make_broken_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """(good inputs, broken inputs) written into ``folder`` (see the issue's broken corpus)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = echo_frames(6, 48, 64, seed=3)
    good = [
        make_dicom(folder / "good1.dcm", frames, "rgb", seed=31),
        make_video(folder / "good2.avi", frames),
    ]
    whole = make_dicom(folder / "whole.tmpdcm", frames, "rgb", seed=32).read_bytes()
    (folder / "whole.tmpdcm").unlink()
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(whole[: len(whole) // 2])
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "notes.dcm").write_text("this is a text file, not an image\n" * 5)
    garbage = folder / "garbage.avi"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    broken = [
        folder / "empty.dcm",
        truncated,
        folder / "notes.dcm",
        make_without_pixels(folder / "nopixels.dcm"),
        make_zero_frame_video(folder / "zero.avi"),
        garbage,
        make_unsupported(folder / "jpegxl.dcm"),
    ]
    return good, broken
