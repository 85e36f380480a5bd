"""The upstream per-video loop on AVI files, as a whole process (run in the OpenCLIP venv):
OpenCV decode of every frame, centre crop + 10 % zoom + INTER_CUBIC resize, frames 0-38 step 2,
one OpenCLIP ``encode_image`` call per video. The baseline for echoclip's CPU speed on AVI.
DICOM files (``.dcm``) are read the naive way upstream would have to: pydicom's ``pixel_array``
(every frame decoded, RGB → BGR), then the same crop, resize and sampling.

    /path/to/openclip-venv/bin/python bench/upstream_avi_loop.py OPENCLIP_FOLDER VIDEO...

``OPENCLIP_FOLDER`` holds ``open_clip_config.json`` and ``open_clip_pytorch_model.bin`` (e.g. from
``scripts/parity_fullsize.py make``). Time it with ``time`` next to ``echoclip embed`` on the
same files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import open_clip
import torch

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def _decoded(path: str):
    if path.lower().endswith(".dcm"):
        import pydicom

        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array  # YBR JPEG comes back as RGB
        if int(getattr(ds, "NumberOfFrames", 1) or 1) == 1:
            pixels = pixels[None]
        if pixels.ndim == 3:  # greyscale
            pixels = np.repeat(pixels[..., None], 3, axis=-1)
        yield from (frame[:, :, ::-1] for frame in pixels)  # OpenCV order, as the AVI path reads
        return
    capture = cv2.VideoCapture(path)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        yield frame


def frames_of(path: str) -> np.ndarray:
    out = []
    for frame in _decoded(path):
        h, w = frame.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        frame = frame[top: top + side, left: left + side]
        cut = int(round(side * 0.1))
        frame = frame[cut: side - cut, cut: side - cut]
        out.append(cv2.resize(frame, (224, 224), interpolation=cv2.INTER_CUBIC))
    return np.stack(out)[0:40:2]


def main(folder: Path, videos: list[str]) -> None:
    config = json.loads((folder / "open_clip_config.json").read_text())
    model = open_clip.CLIP(**config["model_cfg"]).eval()
    model.load_state_dict(torch.load(folder / "open_clip_pytorch_model.bin", weights_only=True))
    with torch.no_grad():
        for video in videos:
            frames = frames_of(video).astype(np.float32) / 255.0
            images = torch.from_numpy(((frames - MEAN) / STD).transpose(0, 3, 1, 2).copy())
            model.encode_image(images)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
