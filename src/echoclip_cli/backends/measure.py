"""What every backend's check measures, in one place: the check clips, per-frame embeddings,
speed (alone and interleaved), and how retrieval neighbours move.

The check clips are a real echo cine shipped with pydicom and its mirror image, through the
bundle's own preprocessing, so a check needs no data of the user's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

if TYPE_CHECKING:
    from ..preprocess_config import PreprocessConfig

Encode = Callable[[torch.Tensor], torch.Tensor]
CHECK_BATCH = 16  # frames in the batch that speeds are measured on
NEAR_TIE = 1e-3  # a query whose 5th and 6th neighbours are closer than this has no stable top 5 at all


def check_clips(preprocess: "PreprocessConfig") -> list[torch.Tensor]:
    """Model-ready uint8 frames (T,3,S,S) of the check clips: pydicom's echo cine and its mirror image."""
    from pydicom import examples

    from ..media import load_clip

    clip = load_clip(examples.get_path("ybr_color"), preprocess)
    return [clip.frames, clip.frames.flip(-1)]


def check_batch(clips: list[torch.Tensor], preprocess: "PreprocessConfig") -> torch.Tensor:
    """The batch speeds are measured on: the first :data:`CHECK_BATCH` frames of the clips."""
    from ..preprocess import to_model_input

    return to_model_input(torch.cat(clips)[:CHECK_BATCH], preprocess, device=torch.device("cpu"))


def frame_embeddings(encode: Encode, videos: list[torch.Tensor], preprocess: "PreprocessConfig") -> list[np.ndarray]:
    """Each video's normalised frame embeddings (T,E) in float64, as ``encode`` makes them."""
    from ..preprocess import to_model_input

    out = []
    for frames in videos:
        images = to_model_input(frames, preprocess, device=torch.device("cpu"))
        out.append(torch.nn.functional.normalize(encode(images).float(), dim=-1).numpy().astype(np.float64))
    return out


def min_frame_cosine(frames: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The lowest cosine between a frame and the same frame of ``reference`` (both normalised)."""
    return min(float(np.min(np.sum(a * b, axis=1))) for a, b in zip(frames, reference, strict=True))


def min_video_cosine(frames: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The lowest cosine between a video's mean frame embedding and the reference's."""
    out = []
    for a, b in zip(frames, reference, strict=True):
        va, vb = a.mean(axis=0), b.mean(axis=0)
        out.append(float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))))
    return min(out)


def rate(encode: Encode, images: torch.Tensor, rounds: int = 2) -> float:
    """Best frames/s of ``encode`` on ``images`` over ``rounds`` after a warm-up."""
    encode(images)  # warm-up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        encode(images)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def interleaved(paths: dict[str, Encode], images: torch.Tensor, rounds: int = 3) -> dict[str, float]:
    """Best frames/s of each path over ``rounds`` alternating rounds (drift hits each alike)."""
    best = {name: 0.0 for name in paths}
    with torch.inference_mode():
        for encode in paths.values():
            encode(images)  # warm-up
        for _ in range(rounds):
            for name, encode in paths.items():
                start = time.perf_counter()
                encode(images)
                best[name] = max(best[name], len(images) / (time.perf_counter() - start))
    return {name: round(value, 3) for name, value in best.items()}


def neighbours(frames: np.ndarray, k: int = 5) -> list[tuple[frozenset[int], float]]:
    """Each frame's k nearest other frames, with the cosine gap between the k-th and the next."""
    similarity = frames @ frames.T
    np.fill_diagonal(similarity, -np.inf)
    out = []
    for row in similarity:
        order = np.argsort(-row, kind="stable")
        out.append((frozenset(order[:k].tolist()), float(row[order[k - 1]] - row[order[k]])))
    return out


def neighbour_changes(frames: np.ndarray, reference: list[tuple[frozenset[int], float]]) -> tuple[float, int]:
    """(share of queries whose top 5 changed, number of queries compared), over the queries whose
    reference top 5 is not a near-tie: frames of one cine are near-duplicates, and swapping two
    neighbours 1e-4 apart is no retrieval change."""
    stable = [(mine[0], ref[0]) for mine, ref in zip(neighbours(frames), reference, strict=True) if ref[1] >= NEAR_TIE]
    return (sum(a != b for a, b in stable) / len(stable) if stable else 0.0), len(stable)


def task_deltas(numbers: dict[str, list[float]], reference: dict[str, list[float]]) -> dict[str, Any]:
    """The largest per-video difference of each task's numbers: EF apart, the device scores' maximum."""
    deltas = {name: max(abs(x - y) for x, y in zip(numbers[name], reference[name], strict=True)) for name in numbers}
    return {"ef_delta": deltas.pop("ejection_fraction", None),
            "score_delta_max": max(deltas.values()) if deltas else None, "score_deltas": deltas}
