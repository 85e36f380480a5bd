"""Check the carried wheels where they were installed: each imports, and its compiled part runs.

    PYTHONPATH=/tmp/site python3 bench/wheels_smoke.py      (bench/gpu_check.sh, step "wheels")

One line per package: its version and where it was imported from (the carried folder, or the
image's own site-packages if a copy there shadows it), then a round trip through its code: a JPEG
Baseline frame decoded by libjpeg, JPEG 2000 and RLE encoded and decoded through pydicom's
pylibjpeg plugins, a few frames written and read back by PyAV, text fixed by ftfy, a Typer command
run. Exits 1 naming what failed; needs numpy and Pillow (both in the image), not torch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

PACKAGES = {  # distribution → module
    "pydicom": "pydicom", "pylibjpeg": "pylibjpeg", "pylibjpeg-libjpeg": "libjpeg",
    "pylibjpeg-openjpeg": "openjpeg", "pylibjpeg-rle": "rle", "av": "av", "ftfy": "ftfy", "wcwidth": "wcwidth",
    "typer": "typer", "annotated-doc": "annotated_doc", "shellingham": "shellingham",
}


def gradient(h: int = 32, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 5 + y * 3) % 256).astype(np.uint8)


def libjpeg_baseline() -> None:
    import libjpeg
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(gradient()).save(buf, format="JPEG", quality=95)
    decoded = libjpeg.decode(buf.getvalue())
    assert decoded.shape == (32, 48) and np.abs(decoded.astype(int) - gradient()).max() <= 8


def pydicom_round_trip(syntax_name: str) -> None:
    import pydicom.uid
    from pydicom.dataset import Dataset, FileMetaDataset

    pixels = gradient()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.compress(getattr(pydicom.uid, syntax_name), encoding_plugin="pylibjpeg")
    back = ds.pixel_array
    assert np.array_equal(back, pixels), f"{syntax_name} round trip changed the pixels"


def pyav_round_trip() -> None:
    import av

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.avi"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mjpeg", rate=25)
            stream.width, stream.height, stream.pix_fmt = 48, 32, "yuvj420p"
            for _ in range(3):
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.repeat(gradient()[..., None], 3, 2), "rgb24")))
            out.mux(stream.encode())
        with av.open(str(path)) as clip:
            frames = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (32, 48, 3)


def text_and_cli() -> None:
    import ftfy
    import typer
    import wcwidth
    from typer.testing import CliRunner

    assert ftfy.fix_text("Ã©chocardiographie") == "échocardiographie"
    assert wcwidth.wcswidth("écho") == 4
    app = typer.Typer()

    @app.command()
    def hello(name: str) -> None:
        print(f"hello {name}")

    result = CliRunner().invoke(app, ["echo"])
    assert result.exit_code == 0 and result.output.strip() == "hello echo", result.output


CHECKS = {
    "libjpeg decodes JPEG Baseline": libjpeg_baseline,
    "JPEG 2000 through pydicom + openjpeg": lambda: pydicom_round_trip("JPEG2000Lossless"),
    "RLE through pydicom + pylibjpeg-rle": lambda: pydicom_round_trip("RLELossless"),
    "PyAV writes and reads MJPEG": pyav_round_trip,
    "ftfy, wcwidth, a Typer command": text_and_cli,
}


def main() -> int:
    failed = []
    for dist, module in PACKAGES.items():
        try:
            where = Path(importlib.import_module(module).__file__).parent.parent
            print(f"{dist:<20} {importlib.metadata.version(dist):<10} {where}")
        except Exception as exc:  # noqa: BLE001 - report every package, not only the first broken one
            print(f"{dist:<20} FAILED: {type(exc).__name__}: {exc}")
            failed.append(dist)
    for label, check in CHECKS.items():
        try:
            check()
            print(f"ok      {label}")
        except Exception as exc:  # noqa: BLE001 - as above
            print(f"FAILED  {label}: {type(exc).__name__}: {exc}")
            failed.append(label)
    if failed:
        print(f"{len(failed)} failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
