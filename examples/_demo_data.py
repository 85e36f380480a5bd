"""Write a small demo archive from pydicom's own ultrasound cine (used by the example scripts).

    python examples/_demo_data.py OUTDIR [N_STUDIES]

Each study is a copy of `pydicom.examples.ybr_color` (a real 30-frame JPEG Baseline echo cine)
with its own StudyInstanceUID, SOPInstanceUID, study date and patient; odd studies are flipped
left-right so that the archive holds more than one distinct video.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydicom import dcmread, examples
from pydicom.uid import generate_uid


def main(out: Path, n_studies: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n_studies):
        ds = dcmread(examples.get_path("ybr_color"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDate = f"2024{1 + i % 12:02d}15"
        ds.PatientID = f"DEMO{i // 2:03d}"  # two studies per demo patient
        ds.PatientName = f"Demo^Patient{i // 2}"
        if i % 2:
            frames = ds.pixel_array[:, :, ::-1]  # decoded RGB, mirrored
            ds.PhotometricInterpretation = "RGB"
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
            ds.PixelData = frames.tobytes()
            ds["PixelData"].VR = "OB"
        (out / f"study{i:02d}").mkdir(exist_ok=True)
        ds.save_as(out / f"study{i:02d}" / "a4c.dcm", enforce_file_format=True)
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 4)
