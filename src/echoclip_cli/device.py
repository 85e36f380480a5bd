"""Device and precision choice: ``--device auto|cpu|cuda[:N]``, ``--precision auto|fp32|bf16|fp16``."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator

import torch

from .errors import DeviceError, UsageError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` → the first CUDA device when one is usable, else the CPU."""
    if isinstance(spec, torch.device):
        return spec
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available", hint="use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA devices exist")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device


@functools.cache
def proc_cpuinfo() -> str:
    """/proc/cpuinfo, read once per process ("" where there is none); several choices ask for it."""
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    if cpuinfo is None:
        cpuinfo = proc_cpuinfo()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_kind() -> str:
    """A short name for this CPU kind: model name and the instruction sets that int8/fp32 kernels
    choose between (what every CPU backend's built files and checks are keyed by)."""
    import platform

    name = next((line.split(":", 1)[1].strip() for line in proc_cpuinfo().splitlines()
                 if line.startswith("model name")), platform.processor() or platform.machine())
    isa = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16"})
    return f"{name} [{' '.join(isa) or 'baseline'}]"


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """True on CPUs with AMX (Sapphire Rapids and later), where bf16 matmuls beat fp32.

    AVX512-BF16 alone is not enough: on such a CPU the ConvNeXt-B tower ran *slower* in bf16
    (4.7-5.1 frames/s) than in fp32 (6.8-7.9), docs/BENCHMARKS.md.
    """
    return "amx_bf16" in (cpu_flags() if flags is None else flags)


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """``auto`` → bf16 on CUDA and on CPUs with AMX, else fp32. Half precision runs under autocast
    (norms stay fp32)."""
    spec = spec.strip().lower()
    if spec == "auto":
        if device.type == "cuda" or cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    if spec not in PRECISIONS:
        raise UsageError(f"unknown precision {spec!r}: use auto, fp32, bf16 or fp16")
    dtype = PRECISIONS[spec]
    if dtype is torch.float16 and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU", hint="use --precision bf16 or fp32")
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("this GPU does not support bf16", hint="use --precision fp16 or fp32")
    return dtype


def strict_fp32(device: torch.device, dtype: torch.dtype) -> None:
    """On CUDA, fp32 means fp32: cuDNN (and, for some builds, cuBLAS) run fp32 convolutions and
    matmuls in TF32 by default, 10-bit mantissas that move embeddings by ~1e-3. Half precisions
    keep the defaults (their autocast decides)."""
    if device.type == "cuda" and dtype is torch.float32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def precision_name(dtype: torch.dtype) -> str:
    return next(name for name, d in PRECISIONS.items() if d is dtype)


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision for bf16/fp16; a no-op for fp32."""
    if dtype is torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels (slower on GPU): same inputs, same bits, run after run."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
