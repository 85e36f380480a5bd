"""Eager torch (the backend word `torch`): the reference backend, on any device and in any torch precision.

On the CPU a batch is cut into one slice per core, run side by side with one thread each
(:func:`split_batch`); ``ECHOCLIP_CPU_SPLIT=0`` turns that off (then torch's threads share each
operation). It never needs building and passes every use case's tolerances by definition.
"""

from __future__ import annotations

import os
from typing import Any, Callable, ClassVar

import torch

from .base import Backend, Note, Reference, TaskNumbers

SPLIT_ENV = "ECHOCLIP_CPU_SPLIT"


def split_wanted() -> bool:
    """Whether CPU batches are split per core (``ECHOCLIP_CPU_SPLIT``, on unless ``0``)."""
    return os.environ.get(SPLIT_ENV, "1") != "0"


def split_batch(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, parts: int) -> torch.Tensor:
    """``encode(images)`` on the CPU as ``parts`` slices of the batch run side by side, one thread
    each, instead of every operation shared by ``parts`` threads. The same numbers within fp32
    rounding (each frame's embedding does not depend on its batch-mates; bit for bit on the
    full-size tower here, ≤ 1e-5 on the tiny test model), and faster: ConvNeXt's operations share
    out poorly across threads (full-size tower, batch 16, 2-core AMD EPYC: 2 threads 1.56x one
    thread; two 1-thread halves 5-24 % faster than that, AVX-512 and AVX2-emulated; 3.5 % end to
    end; docs/BENCHMARKS.md)."""
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    inference = torch.is_inference_mode_enabled()

    def one(chunk: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(1)  # this thread's own operations (OpenMP keeps it per thread)
        with torch.inference_mode(inference):
            return encode(chunk)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(parts, thread_name_prefix="echoclip-cpu") as pool:
            return torch.cat(list(pool.map(one, images.tensor_split(parts))))
    finally:
        torch.set_num_threads(threads)


class TorchTower:
    """The eager tower: ``eager`` runs the network (on its device, in its precision); CPU batches
    from a CPU tensor are split per core when ``split``."""

    name = "torch"

    def __init__(self, eager: Callable[[torch.Tensor], torch.Tensor], precision: str, split: bool = False) -> None:
        self.eager = eager
        self._precision = precision
        self.split = split

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def numerics(self) -> dict[str, str]:
        return {"backend": "torch", "precision": self._precision}

    def refusal(self, task: str) -> str | None:
        return None  # the reference every other backend is measured against

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        parts = min(torch.get_num_threads(), images.shape[0])
        if self.split and parts > 1 and images.device.type == "cpu":
            return split_batch(self.eager, images, parts)
        return self.eager(images)


class TorchBackend(Backend):
    name: ClassVar[str] = "torch"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16", "fp16")
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def ensure(self, bundle: Any, reference: Callable[[], Reference], note: Note,
               task_numbers: Callable[[Reference], TaskNumbers | None]) -> None:
        return None  # nothing to build

    def tower(self, bundle: Any, precision: str, eager: Callable[[torch.Tensor], torch.Tensor] | None = None,
              **options: Any) -> TorchTower:
        assert eager is not None, "the torch tower runs the network it is given"
        return TorchTower(eager, precision, split=bool(options.get("split")))
