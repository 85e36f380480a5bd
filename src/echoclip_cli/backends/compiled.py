"""The exact fast CPU path: the image tower compiled ahead of time by torch's AOTInductor.

``torch.compile`` makes ConvNeXt's image tower faster on a CPU (fused LayerNorm/GELU/scale
epilogues around oneDNN matmuls, weights pre-packed), but it compiles again in every process
(~15-35 s here), more than a small run takes. AOTInductor compiles once into a package that a
later process loads in under a second, so the cost is paid once per machine, not per run:

    echoclip weights optimise echo-clip      # once: compile, check, measure (a few minutes)
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

import errno
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

from ..device import cpu_kind
from ..errors import UsageError
from ..files import home
from . import integrity, measure
from .base import MIN_GAIN, PRUNED, Backend, Note, Reference, TaskNumbers, prune_files

if TYPE_CHECKING:
    from ..weights import Bundle

BUILD_VERSION = 1
MIN_COSINE = 0.99999  # fp32 against fp32: anything lower is a compiler bug, not rounding
MAX_BATCH = 4096
# --backend auto builds the compiled tower itself (once per machine) for a run of at least this many
# inputs: ~20 frames each at ~4 frames/s is ~1,000 s of tower time, so a one-minute build that
# gains 20-30 % pays back within the run; smaller runs stay eager until `weights optimise`.
AUTO_BUILD_INPUTS = 200


def folder(bundle: "Bundle") -> Path:
    # the vector ISA torch itself uses (ATEN_CPU_CAPABILITY can lower it) decides the generated code
    isa = torch.backends.cpu.get_cpu_capability()
    digest = hashlib.sha256(f"{cpu_kind()}|{isa}|torch {torch.__version__}|v{BUILD_VERSION}".encode()).hexdigest()[:12]
    return home() / "compiled" / f"{bundle.weights_sha256[:16]}-{digest}"


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


def passed(bundle: "Bundle") -> bool:
    """Built, its check passed on this CPU and torch, and the package is the one that was checked."""
    found = read_check(bundle)
    return bool(found and found["passed"] and package_file(bundle).is_file()
                and integrity.problem(package_file(bundle)) is None)


def _stale(bundle: "Bundle") -> str | None:
    """Why the built package must be built again (None: it is there, checked and unchanged)."""
    if read_check(bundle) is None or not package_file(bundle).is_file():
        return "not built on this CPU"
    return integrity.problem(package_file(bundle))


def usable(bundle: "Bundle") -> bool:
    """Built and checked on this CPU and torch, and measured faster than eager."""
    found = read_check(bundle)
    return passed(bundle) and found is not None and \
        found["frames_per_s"]["compiled"] >= MIN_GAIN * found["frames_per_s"]["eager"]


class CompiledTower:
    """The loaded package: float images (N,3,S,S) → unnormalised embeddings (N,E). Records say
    ``backend: torch``: its embeddings are torch fp32's within rounding."""

    name = "compiled"
    precision = "fp32"

    def __init__(self, path: Path) -> None:
        import warnings

        import torch._inductor

        self.path = path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation notices from the loader
            self.runner = torch._inductor.aoti_load_package(str(path))

    @property
    def numerics(self) -> dict[str, str]:
        return {"backend": "torch", "precision": "fp32"}

    def refusal(self, task: str) -> str | None:
        return None  # fp32 within rounding of eager: checked at ≥ MIN_COSINE when built

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.runner(images.to("cpu", torch.float32).contiguous())


def build(reference: Reference, note: Note = lambda _: None) -> dict[str, Any]:
    """Compile ``reference``'s image tower (torch, fp32, CPU) for this CPU, check and time it;
    returns the check (also saved). Raises UsageError when the build or the check fails."""
    bundle = reference.bundle
    target = folder(bundle)
    target.parent.mkdir(parents=True, exist_ok=True)
    note(f"compiling the image tower of {bundle.name} for this CPU (once; 1–2 minutes at full size on 2 cores)…")
    start = time.perf_counter()
    stage, tower = _compile(reference, target)
    result = _check(reference, tower, time.perf_counter() - start)
    _install(stage, target, result)
    note(summary(result))
    return result


def _compile(reference: Reference, target: Path) -> tuple[Path, CompiledTower]:
    """AOTInductor's package of the tower in a staging folder beside ``target``; a failure is
    remembered (``failed.json``) so ``--backend auto`` does not try again."""
    import torch._inductor

    from ..files import atomic_write_text, staging_dir

    size = int(reference.preprocess.image_size)
    stage = staging_dir(target, ".build")
    try:
        with torch.no_grad():
            batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
            exported = torch.export.export(reference.visual, (torch.zeros(2, 3, size, size),),
                                           dynamic_shapes=({0: batch},))
            torch._inductor.aoti_compile_and_package(exported, package_path=str(stage / "visual.pt2"),
                                                     inductor_configs={"freezing": True})
        return stage, CompiledTower(stage / "visual.pt2")
    except Exception as exc:  # compiler missing, unsupported op: say why, keep running eager
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        if out_of_space(exc):  # the disk, not this CPU: nothing to remember, one line, try again later
            raise OSError(errno.ENOSPC, f"no space left in {target.parent} to build the compiled image tower "
                                        "(nothing was kept; free space and run again)") from None
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target / "failed.json", json.dumps({"cpu": cpu_kind(), "torch": torch.__version__,
                                                               "reason": first}, indent=1))
        raise UsageError(f"cannot compile the image tower here: {first}", hint="use --backend torch") from None


def out_of_space(exc: BaseException) -> bool:
    """Whether a build failed because the disk is full: an ENOSPC OSError, or a compiler's
    exception (C++ backtrace and all) whose text says so."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return "No space left on device" in str(exc) or "ENOSPC" in str(exc)


def _check(reference: Reference, tower: CompiledTower, seconds: float) -> dict[str, Any]:
    """The compiled tower against eager on the check clips: frame cosine and interleaved speed."""
    bundle = reference.bundle
    clips = measure.check_clips(reference.preprocess)
    eager = measure.frame_embeddings(reference.encode_image, clips, reference.preprocess)
    compiled = measure.frame_embeddings(tower, clips, reference.preprocess)
    cosine = measure.min_frame_cosine(compiled, eager)
    speed = measure.interleaved({"eager": reference.encode_image, "compiled": tower},
                                measure.check_batch(clips, reference.preprocess))
    return {"cpu": cpu_kind(), "torch": torch.__version__, "torch_isa": torch.backends.cpu.get_cpu_capability(),
            "weights": bundle.name, "weights_sha256": bundle.weights_sha256, "build_seconds": round(seconds, 1),
            "frame_cosine_min": cosine, "passed": cosine >= MIN_COSINE, "frames_per_s": speed}


def _install(stage: Path, target: Path, result: dict[str, Any]) -> None:
    """Save the check beside the package and move the staging folder into place."""
    from ..files import atomic_write_text

    atomic_write_text(stage / "check.json", json.dumps(result, indent=1))
    try:
        os.replace(stage, target)
    except OSError:  # an older build of the same key: replace it
        import shutil

        aside = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, aside)
        os.replace(stage, target)
        shutil.rmtree(aside, ignore_errors=True)
    integrity.record([target / "visual.pt2"])


def summary(result: dict[str, Any]) -> str:
    speed = result["frames_per_s"]
    verdict = ("check failed: never used" if not result["passed"] else "faster" if
               speed["compiled"] >= MIN_GAIN * speed["eager"] else f"not {MIN_GAIN - 1:.0%} faster")
    return (f"compiled image tower on {result['cpu']}: built in {result['build_seconds']:.0f} s, frame cosine vs "
            f"eager {result['frame_cosine_min']:.7f}, {speed['compiled']:.2f} vs {speed['eager']:.2f} frames/s "
            f"eager: {verdict}")


def _rebuild(bundle: "Bundle", reference: Callable[[], Reference], note: Note) -> None:
    """Build (again, saying why where the package is not the one that was checked)."""
    reason = _stale(bundle)
    if reason not in (None, "not built on this CPU"):
        note(f"compiled image tower: {reason}; building it again")
    build(reference(), note)


class CompiledBackend(Backend):
    name: ClassVar[str] = "compiled"
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def built(self, bundle: "Bundle") -> Path | None:
        return package_file(bundle) if passed(bundle) else None

    def gain(self, bundle: "Bundle") -> float | None:
        found = read_check(bundle)  # timed against eager when it was built
        return found["frames_per_s"]["compiled"] / found["frames_per_s"]["eager"] if found else None

    def ensure(self, bundle: "Bundle", reference: Callable[[], Reference], note: Note,
               task_numbers: Callable[[Reference], TaskNumbers | None]) -> None:
        if _stale(bundle) is not None:
            _rebuild(bundle, reference, note)
        found = read_check(bundle)
        if not found or not found["passed"]:
            raise UsageError(f"the compiled image tower failed its check on this CPU (frame cosine "
                             f"{found['frame_cosine_min'] if found else 'unknown'} < {MIN_COSINE})",
                             hint="use --backend torch")

    def optimise(self, bundle: "Bundle", reference: Callable[[], Reference], note: Note,
                 task_numbers: Callable[[Reference], TaskNumbers | None], force: bool = False) -> None:
        found = read_check(bundle)
        if not force and found is not None and _stale(bundle) is None:
            note(f"already built on this CPU (--force to redo): {summary(found)}")
            return
        if not force and (kept := self.not_kept(bundle)):
            note(kept)
            return
        _rebuild(bundle, reference, note)

    def prune(self, bundle: "Bundle") -> int:
        if not package_file(bundle).is_file():
            return 0
        return prune_files(folder(bundle), [package_file(bundle)], "eager torch ran faster on this CPU")

    def not_kept(self, bundle: "Bundle") -> str | None:
        found = read_check(bundle)
        if found is None or not (folder(bundle) / PRUNED).is_file() or package_file(bundle).is_file():
            return None
        return (f"built and measured on this CPU, not kept (eager torch ran faster; --force builds it again): "
                f"{summary(found)}")

    def tower(self, bundle: "Bundle", precision: str = "fp32", eager: Any = None, **options: Any) -> CompiledTower:
        reason = integrity.problem(package_file(bundle))
        if reason:  # never load a package that is not the one checked: it runs code when loaded
            raise UsageError(f"the compiled image tower cannot be used: {reason}",
                             hint=f"build it again: echoclip weights optimise {bundle.name} --force")
        return CompiledTower(package_file(bundle))
