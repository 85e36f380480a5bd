"""Time ``echoclip preprocess`` on a 120-frame JPEG Baseline echo cine (480×640).

Uses ``color3d_jpeg_baseline.dcm`` from pydicom-data when installed, else writes a synthetic
cine of the same shape. Copies it ``--copies`` times, preprocesses the copies with 1 and 2
worker processes (default sampling: 20 frames per video, mask auto), and prints markdown table
rows; also times decoding the 20 sampled frames alone, through our Pillow path and through
pydicom's pixel pipeline.

    python bench/bench_preprocess.py [--copies 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from echoclip_cli.media import preprocess_files, read_frames
from echoclip_cli.preprocess_config import PreprocessConfig


def synthetic_cine(path: Path, n_frames: int = 120, rows: int = 480, cols: int = 640) -> Path:
    """A JPEG Baseline (YBR_FULL_422) multi-frame ultrasound DICOM of moving grey noise."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    rng = np.random.default_rng(0)
    codestreams = []
    for _ in range(n_frames):
        grey = rng.integers(0, 200, (rows, cols), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(buffer, format="JPEG", quality=90)
        codestreams.append(buffer.getvalue())
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "US", rows, cols, n_frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate(codestreams)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def source_file(folder: Path) -> tuple[Path, str]:
    from pydicom.data import get_testdata_file

    found = get_testdata_file("color3d_jpeg_baseline.dcm")
    if found:
        return Path(found), "color3d_jpeg_baseline.dcm"
    return synthetic_cine(folder / "synthetic.dcm"), "synthetic 120×480×640 JPEG cine"


def time_preprocess(files: list[Path], out: Path, cfg: PreprocessConfig, workers: int, repeats: int) -> float:
    """Best wall time of ``repeats`` runs (0 workers: inline; process start-up included otherwise)."""
    best = float("inf")
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        records = list(preprocess_files(files, out, cfg, workers=workers))
        best = min(best, time.perf_counter() - start)
        assert all(r.status == "ok" for r in records), records
    return best


def time_decode(path: Path, indices: list[int], repeats: int) -> tuple[float, float]:
    """(ours, pydicom) seconds to decode ``indices`` to RGB, best of ``repeats``."""
    from pydicom.pixels import iter_pixels

    ours = pydicom = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        read_frames(path, indices)
        ours = min(ours, time.perf_counter() - start)
        start = time.perf_counter()
        list(iter_pixels(path, indices=indices))
        pydicom = min(pydicom, time.perf_counter() - start)
    return ours, pydicom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = PreprocessConfig()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, label = source_file(folder)
        files = [shutil.copy(source, folder / f"copy{i}.dcm") for i in range(args.copies)]
        files = [Path(f) for f in files]
        n_frames = len(cfg.frame_indices) * len(files)
        print("| input | machine | workers | videos | frames | seconds | frames/s |")
        print("|---|---|---|---|---|---|---|")
        for workers in (0, 1, 2):
            seconds = time_preprocess(files, folder / "out", cfg, workers, args.repeats)
            print(f"| {label} | {machine} | {workers} | {len(files)} | {n_frames} | {seconds:.2f} | "
                  f"{n_frames / seconds:.1f} |")
        ours, pydicom = time_decode(files[0], cfg.frame_indices, args.repeats)
        per = len(cfg.frame_indices)
        print()
        print("| decode 20 sampled frames to RGB | frames/s |")
        print("|---|---|")
        print(f"| Pillow from encapsulated fragments (ours) | {per / ours:.0f} |")
        print(f"| pydicom iter_pixels | {per / pydicom:.0f} |")


if __name__ == "__main__":
    main()
