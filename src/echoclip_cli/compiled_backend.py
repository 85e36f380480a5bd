"""The exact fast CPU path: the image tower compiled ahead of time by torch's AOTInductor.

``torch.compile`` makes ConvNeXt's image tower faster on a CPU (fused LayerNorm/GELU/scale
epilogues around oneDNN matmuls, weights pre-packed), but it compiles again in every process
(~15-35 s here), more than a small run takes. AOTInductor compiles once into a package that a
later process loads in under a second, so the cost is paid once per machine, not per run:

    echoclip weights optimise echo-clip      # once: compile, check, measure (about a minute)
    echoclip predict-ef --dir studies/        # then: --backend auto uses it where it measured faster

A run of :data:`AUTO_BUILD_INPUTS` inputs or more with ``--backend auto`` builds it first by itself
when no build was tried on this CPU and torch (success, failure and "not faster" are remembered).

The package lives in ``$ECHOCLIP_HOME/compiled/<weights sha256>-<CPU and torch digest>/`` (never
in the repository): generated code is specific to the CPU's instruction sets and to the torch
version. On build it is checked against the eager tower on the same frames (pydicom's echo cine
and its mirror image, the bundle's preprocessing): the frame cosine must be ≥ ``MIN_COSINE``
(it is fp32; ~1 - 1e-7 is typical), and eager and compiled frames/s are measured on one batch
in alternating rounds; ``--backend auto`` takes it only where it was at least 5 % faster (on an
AVX2-only CPU it may well not be: under AVX2 emulation here it was 15-20 % slower than eager). Records say ``backend: torch``: the
embeddings are torch fp32's within rounding, so stores and caches share them with eager runs.
Building needs a C++ compiler; without one the build fails with the compiler's reason and runs
stay eager.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from .errors import UsageError

if TYPE_CHECKING:
    from .inference import EchoClip
    from .weights import Bundle

BUILD_VERSION = 1
MIN_COSINE = 0.99999  # fp32 against fp32: anything lower is a compiler bug, not rounding
MAX_BATCH = 4096
MIN_GAIN = 1.05  # auto takes the compiled tower only when it measured at least this much faster than eager
# --backend auto builds the compiled tower itself (once per machine) for a run of at least this many
# inputs: ~20 frames each at ~4 frames/s is ~1,000 s of tower time, so a one-minute build that
# gains 20-30 % pays back within the run; smaller runs stay eager until `weights optimise`.
AUTO_BUILD_INPUTS = 200


def folder(bundle: "Bundle") -> Path:
    from .onnx_backend import cpu_kind
    from .weights import weights_home

    # the vector ISA torch itself uses (ATEN_CPU_CAPABILITY can lower it) decides the generated code
    isa = torch.backends.cpu.get_cpu_capability()
    digest = hashlib.sha256(f"{cpu_kind()}|{isa}|torch {torch.__version__}|v{BUILD_VERSION}".encode()).hexdigest()[:12]
    return weights_home() / "compiled" / f"{bundle.weights_sha256[:16]}-{digest}"


def package_file(bundle: "Bundle") -> Path:
    return folder(bundle) / "visual.pt2"


def read_check(bundle: "Bundle") -> dict[str, Any] | None:
    try:
        return json.loads((folder(bundle) / "check.json").read_text())
    except (OSError, ValueError):
        return None


def attempted(bundle: "Bundle") -> bool:
    """A build was tried on this CPU and torch (it passed, failed its check, or failed to build)."""
    return (folder(bundle) / "check.json").is_file() or (folder(bundle) / "failed.json").is_file()


def compiler_found() -> bool:
    import shutil

    return any(shutil.which(c) for c in (os.environ.get("CXX") or "c++", "g++", "clang++"))


def usable(bundle: "Bundle") -> bool:
    """Built and checked on this CPU and torch, and measured faster than eager."""
    found = read_check(bundle)
    return bool(found and found["passed"] and package_file(bundle).is_file()
                and found["frames_per_s"]["compiled"] >= MIN_GAIN * found["frames_per_s"]["eager"])


class CompiledTower:
    """The loaded package: float images (N,3,S,S) → unnormalised embeddings (N,E)."""

    def __init__(self, path: Path) -> None:
        import warnings

        import torch._inductor

        self.path = path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation notices from the loader
            self.runner = torch._inductor.aoti_load_package(str(path))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.runner(images.to("cpu", torch.float32).contiguous())


def build(reference: "EchoClip", note: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Compile ``reference``'s image tower (torch, fp32, CPU) for this CPU, check and time it;
    returns the check (also saved). Raises UsageError when the build or the check fails."""
    import torch._inductor

    from .files import atomic_write_text, staging_dir
    from .onnx_backend import _frame_embeddings, check_clips, cpu_kind
    from .preprocess import to_model_input

    bundle = reference.bundle
    target = folder(bundle)
    target.parent.mkdir(parents=True, exist_ok=True)
    note(f"compiling the image tower of {bundle.name} for this CPU (once; about a minute)…")
    size = int(reference.preprocess.image_size)
    visual = reference.model.visual
    stage = staging_dir(target, ".build")
    start = time.perf_counter()
    try:
        with torch.no_grad():
            batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
            exported = torch.export.export(visual, (torch.zeros(2, 3, size, size),),
                                           dynamic_shapes=({0: batch},))
            torch._inductor.aoti_compile_and_package(exported, package_path=str(stage / "visual.pt2"),
                                                     inductor_configs={"freezing": True})
        tower = CompiledTower(stage / "visual.pt2")
    except Exception as exc:  # compiler missing, unsupported op: say why, keep running eager
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        target.mkdir(parents=True, exist_ok=True)  # remembered, so --backend auto does not try again
        atomic_write_text(target / "failed.json", json.dumps({"cpu": cpu_kind(), "torch": torch.__version__,
                                                               "reason": first}, indent=1))
        raise UsageError(f"cannot compile the image tower here: {first}", hint="use --backend torch") from None
    seconds = time.perf_counter() - start
    clips = check_clips(reference)
    eager = _frame_embeddings(reference.encode_image, clips, reference)
    compiled = _frame_embeddings(tower, clips, reference)
    cosine = min(float((a * b).sum(axis=1).min()) for a, b in zip(compiled, eager, strict=True))
    images = to_model_input(torch.cat(clips)[:16], reference.preprocess, device=torch.device("cpu"))
    speed = _interleaved({"eager": reference.encode_image, "compiled": tower}, images)
    result = {"cpu": cpu_kind(), "torch": torch.__version__, "torch_isa": torch.backends.cpu.get_cpu_capability(), "weights": bundle.name,
              "weights_sha256": bundle.weights_sha256, "build_seconds": round(seconds, 1),
              "frame_cosine_min": cosine, "passed": cosine >= MIN_COSINE, "frames_per_s": speed}
    atomic_write_text(stage / "check.json", json.dumps(result, indent=1))
    try:
        os.replace(stage, target)
    except OSError:  # an older build of the same key: replace it
        import shutil

        aside = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, aside)
        os.replace(stage, target)
        shutil.rmtree(aside, ignore_errors=True)
    note(summary(result))
    return result


def _interleaved(paths: dict[str, Callable[[torch.Tensor], torch.Tensor]], images: torch.Tensor,
                 rounds: int = 3) -> dict[str, float]:
    """Best frames/s of each path over ``rounds`` alternating rounds (drift hits both alike)."""
    best = {name: 0.0 for name in paths}
    with torch.inference_mode():
        for encode in paths.values():
            encode(images)  # warm-up
        for _ in range(rounds):
            for name, encode in paths.items():
                start = time.perf_counter()
                encode(images)
                best[name] = max(best[name], len(images) / (time.perf_counter() - start))
    return {name: round(rate, 3) for name, rate in best.items()}


def summary(result: dict[str, Any]) -> str:
    speed = result["frames_per_s"]
    verdict = ("check failed: never used" if not result["passed"] else "faster" if
               speed["compiled"] >= MIN_GAIN * speed["eager"] else f"not {MIN_GAIN - 1:.0%} faster")
    return (f"compiled image tower on {result['cpu']}: built in {result['build_seconds']:.0f} s, frame cosine vs "
            f"eager {result['frame_cosine_min']:.7f}, {speed['compiled']:.2f} vs {speed['eager']:.2f} frames/s "
            f"eager: {verdict}")
