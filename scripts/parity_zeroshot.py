"""Zero-shot parity: the released EchoCLIP pipeline, re-implemented from its description, vs echoclip.

Run in the OpenCLIP venv (open_clip_torch, timm, opencv-python-headless), after
`scripts/parity_fullsize.py make OUTDIR`:

    python scripts/parity_zeroshot.py OUTDIR ../shared/reference/example_video.avi

It reproduces the published protocol with the reference components: OpenCV decode (BGR frames
handed on as if RGB), centre crop to square, 10 % zoom, cv2.INTER_CUBIC resize to 224, ToTensor +
CLIP normalisation, OpenCLIP's model and tokenizer, frames 0-38 step 2, and the EF regression
(rank per frame with torch.argsort, average the ranked values, torch.median of the first 20 % —
the lower middle value of 40) and pacemaker binary score. Nothing here comes from echoclip: the
expected side is written from the released semantics in ECHO.md with torch's own operations, so
it cannot share an assumption of ``zeroshot.py``. ``ef_mean_of_middles`` is what numpy's median
would give (the definition echoclip used before), printed to show how much the choice matters.
It prints a JSON object; compare it with

    echoclip predict-ef VIDEO --weights OUTDIR/bin --precision fp32 --format jsonl
    echoclip detect-devices VIDEO --weights OUTDIR/bin --precision fp32 -d pacemaker --format jsonl
    echoclip embed VIDEO --weights OUTDIR/bin --precision fp32 --format jsonl   (cosine with "embedding")
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import open_clip
import torch

EF_TEMPLATES = ["THE LEFT VENTRICULAR EJECTION FRACTION IS ESTIMATED TO BE <#>% ", "LV EJECTION FRACTION IS <#>%. "]
PACEMAKER = [
    "ECHO DENSITY IN RIGHT VENTRICLE SUGGESTIVE OF CATHETER, PACER LEAD, OR ICD LEAD. ",
    "ECHO DENSITY IN RIGHT ATRIUM SUGGESTIVE OF CATHETER, PACER LEAD, OR ICD LEAD. ",
]
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def crop_zoom_resize(frame: np.ndarray, size: int = 224, zoom: float = 0.1) -> np.ndarray:
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    frame = frame[top : top + side, left : left + side]
    cut = int(round(side * zoom))
    frame = frame[cut : side - cut, cut : side - cut]
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_CUBIC)


def video_frames(path: str) -> np.ndarray:
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(crop_zoom_resize(frame))
    return np.stack(frames)[0:40:2]  # frames 0, 2, ..., 38


def main(outdir: Path, video: str) -> None:
    config = json.loads((outdir / "bin" / "open_clip_config.json").read_text())
    model = open_clip.CLIP(**config["model_cfg"]).eval()
    model.load_state_dict(torch.load(outdir / "bin" / "open_clip_pytorch_model.bin", weights_only=True))
    tokenizer = open_clip.get_tokenizer("convnext_base")
    frames = video_frames(video).astype(np.float32) / 255.0  # BGR, treated as RGB
    images = torch.from_numpy(((frames - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        frame_emb = torch.nn.functional.normalize(model.encode_image(images), dim=-1).numpy()
        texts = [t.replace("<#>", str(v)) for t in EF_TEMPLATES for v in range(101)]
        ef_emb = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1).numpy()
        pm_emb = torch.nn.functional.normalize(model.encode_text(tokenizer(PACEMAKER)), dim=-1).numpy()
    values = torch.tensor([v for _ in EF_TEMPLATES for v in range(101)])
    similarity = torch.from_numpy(frame_emb) @ torch.from_numpy(ef_emb).T  # T,202 (float32, as released)
    ranked = values[torch.argsort(similarity, dim=-1, descending=True)]
    top = ranked.float().mean(dim=0)[: int(len(values) * 0.2)]
    ef = float(top.median())  # torch.median: the lower of the two middle values of 40
    pacemaker = float((frame_emb @ pm_emb.T).mean())
    video = frame_emb.mean(axis=0)  # the released video embedding: mean of normalised frames
    print(json.dumps({"ef": ef, "ef_mean_of_middles": float(np.median(top.numpy())),
                      "pacemaker_score": pacemaker, "n_frames": len(frame_emb),
                      "embedding": [float(v) for v in video]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
