"""Parity of the ONNX backend (fp32, int8) against torch fp32 on given videos, with given weights.

    ECHOCLIP_HOME=/work/parity/home python scripts/parity_backends.py fullsize example_video.avi [more files]

The same measures as the backend's own check (echoclip_cli.backends.onnx.check), on your inputs:
per-video embedding cosine, EF (released protocol) and device-score differences, and how many
frames change their five nearest neighbours (near-ties in fp32 not counted). The expected side is
torch fp32 on the same frames; the frames are echoclip's preprocessing of each file.
"""

from __future__ import annotations

import sys

import numpy as np


def main(weights: str, files: list[str]) -> None:
    from echoclip_cli import load_model
    from echoclip_cli.backends import measure as M
    from echoclip_cli.backends import onnx as O
    from echoclip_cli.device import cpu_kind
    from echoclip_cli.media import load_clip
    from echoclip_cli.tasks import task_numbers

    reference_model = load_model(weights, device="cpu", precision="fp32", backend="torch")
    videos = [load_clip(f, reference_model.preprocess).frames for f in files]
    reference = M.frame_embeddings(reference_model.encode_image, videos, reference_model.preprocess)
    numbers = task_numbers(reference_model)  # the text tower is torch on every backend
    assert numbers is not None, "zero-shot weights are needed for EF and device scores"
    ref_tasks = numbers(reference)
    ref_neighbours = M.neighbours(np.concatenate(reference))
    print(f"weights {weights}, {len(files)} videos, {sum(len(v) for v in videos)} frames; CPU {cpu_kind()}")
    print("| precision | video cosine (min) | frame cosine (min) | EF Δ (max) | device score Δ (max) "
          "| top-5 neighbours changed |")
    print("|---|---|---|---|---|---|")
    for precision in O.ONNX_PRECISIONS:
        model = load_model(weights, device="cpu", precision=precision, backend="onnx")
        frames = M.frame_embeddings(model.encode_image, videos, model.preprocess)
        video_cos = [float(a.mean(0) @ b.mean(0) / np.linalg.norm(a.mean(0)) / np.linalg.norm(b.mean(0)))
                     for a, b in zip(frames, reference, strict=True)]
        frame_cos = min(float(np.min(np.sum(a * b, axis=1))) for a, b in zip(frames, reference, strict=True))
        tasks = numbers(frames)
        ef = max(abs(x - y) for x, y in zip(tasks["ejection_fraction"], ref_tasks["ejection_fraction"], strict=True))
        scores = max(abs(x - y) for name in tasks if name != "ejection_fraction"
                     for x, y in zip(tasks[name], ref_tasks[name], strict=True))
        changed, compared = M.neighbour_changes(np.concatenate(frames), ref_neighbours)
        print(f"| {precision} | {min(video_cos):.6f} | {frame_cos:.6f} | {ef:.2f} | {scores:.5f} "
              f"| {100 * changed:.0f} % of {compared} |")
        for f, a, b in zip(files, tasks["ejection_fraction"], ref_tasks["ejection_fraction"], strict=True):
            print(f"  {f}: EF {a:.2f} (torch fp32 {b:.2f})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
