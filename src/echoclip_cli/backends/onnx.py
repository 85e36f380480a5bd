"""An optional CPU backend: the image tower run by ONNX Runtime (``pip install 'echoclip[cpu-fast]'``).

The tower is exported once per bundle to ``$ECHOCLIP_HOME/onnx/<weights sha256>-v<N>/`` (never
into the repository), in fp32 and with int8 MatMuls (ONNX Runtime's dynamic quantisation: weights
int8, activations quantised per frame (:class:`OnnxTower`); ConvNeXt's pointwise MLPs, most of its FLOPs,
are MatMuls, so that is where int8 pays; weights are quantised per output channel). Then, once per CPU kind, the backend is *checked* on
that bundle's own weights against the torch fp32 tower (:func:`check`): a real echo cine shipped
with pydicom and its mirror image go through the bundle's preprocessing, and the check records

- per-frame and per-video embedding cosine against torch fp32,
- EF (released protocol) and the four device scores, where the weights are zero-shot weights,
- how many frames' five nearest neighbours change (retrieval),
- frames/s of torch fp32 and of each ONNX precision on one batch.

A task runs on the backend only where the check passed that task's tolerances
(:data:`TOLERANCES`, README "CPU backends"); otherwise it is refused with the numbers. Nothing is
assumed from another machine: the check file is named after the CPU, its instruction sets and the
ONNX Runtime version, because int8 kernels differ between AVX2, AVX-512 VNNI and AMX.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import numpy as np
import torch

from ..device import cpu_flags, cpu_kind
from ..errors import UsageError
from ..files import home
from . import integrity, measure
from .base import PRUNED, Backend, Note, Reference, TaskNumbers, prune_files

if TYPE_CHECKING:
    from ..weights import Bundle

EXPORT_VERSION = 2  # 2: per-channel int8 weights (EF Δ 2.20 → 0.27 on the parity checkpoint)
# How OnnxTower runs a batch; part of the check's and the race's keys, since they measured that.
# Before it, the whole batch went in one run (int8 frames then depended on their batch-mates).
RUN_SCHEME = "frame-runs"
OPSET = 17
ONNX_PRECISIONS = ("fp32", "int8")
INSTALL_HINT = "pip install 'echoclip[cpu-fast]'"

# What each use case needs of a backend's embeddings, as measured by `check` against torch fp32.
# min_cosine: the lowest per-video cosine; max_ef_delta: EF points; max_score_delta: device/binary
# scores (cosine units; published thresholds sit ~0.01 apart from typical scores); max_neighbour_changes:
# share of frames whose five nearest neighbours (as a set) change.
def _tolerances(min_cosine: float, max_neighbour_changes: float) -> dict[str, dict[str, float]]:
    cosine = {"min_cosine": min_cosine}
    ef, scores = {"max_ef_delta": 0.5}, {"max_score_delta": 0.002}
    retrieval = {"max_neighbour_changes": max_neighbour_changes}
    return {"embed": cosine, "predict-ef": {**cosine, **ef}, "detect-devices": {**cosine, **scores},
            "zero-shot": {**cosine, **ef, **scores}, "search": {**cosine, **retrieval},
            "match-patients": {**cosine, **retrieval}}


TOLERANCES: dict[str, dict[str, dict[str, float]]] = {"fp32": _tolerances(0.999, 0.1), "int8": _tolerances(0.995, 0.25)}
_MEASURED = {"min_cosine": "video_cosine_min", "max_ef_delta": "ef_delta", "max_score_delta": "score_delta_max",
             "max_neighbour_changes": "neighbour_changes"}


def missing() -> str | None:
    """Why the backend cannot run here (None when it can)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"the ONNX backend needs onnxruntime and onnx ({INSTALL_HINT}): {exc}"
    return None


def runtime_found() -> bool:
    """ONNX Runtime is installed, so an exported tower can run: found, not imported (importing
    onnx and onnxruntime just to ask cost every CPU run 0.13-0.19 s here, wasted when the
    compiled tower is what it runs)."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None


def folder(bundle: "Bundle") -> Path:
    return home() / "onnx" / f"{bundle.weights_sha256[:16]}-v{EXPORT_VERSION}"


# The int8 tower exists twice: 8-bit weights, and 7-bit weights for x86 CPUs without VNNI. Those
# multiply uint8 activations by int8 weights with VPMADDUBSW, which adds pairs of products into
# int16 and saturates (255 * 127 * 2 > 32767); with 7-bit weights a pair stays below 2^15.
# Measured under valgrind (which gives ONNX Runtime a CPU with AVX2 and no AVX-512 or VNNI), full-size
# parity checkpoint, frame cosine vs torch fp32 on the check's echo frames: 8-bit weights 0.9994
# there against 0.99993 on a VNNI CPU, 7-bit weights 0.99985 on both; on a noise frame 8-bit 0.982
# without VNNI (bench/int8_without_vnni.py, docs/BENCHMARKS.md). VNNI CPUs keep the finer 8-bit.
INT8_FILES = {8: "visual.int8.onnx", 7: "visual.int8-w7.onnx"}
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def int8_weight_bits(flags: set[str] | None = None, machine: str | None = None) -> int:
    """7 on an x86 CPU whose int8 dot products saturate (no AVX-512 VNNI, AVX-VNNI or AMX), else 8."""
    if (machine or platform.machine()).lower() not in _X86:
        return 8  # ARM's int8 kernels (SDOT/UMMLA, or widening multiplies) do not saturate
    flags = cpu_flags() if flags is None else flags
    return 8 if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else 7


def model_file(bundle: "Bundle", precision: str, bits: int | None = None) -> Path:
    """The ONNX tower a precision runs on this CPU (int8: the weight width it needs, or ``bits``)."""
    if precision == "int8":
        return folder(bundle) / INT8_FILES[bits or int8_weight_bits()]
    return folder(bundle) / f"visual.{precision}.onnx"


def exported(bundle: "Bundle") -> bool:
    """Every ONNX file of ``bundle`` is there (fp32 and both int8 weight widths)."""
    return model_file(bundle, "fp32").is_file() and all(model_file(bundle, "int8", b).is_file() for b in INT8_FILES)


def runtime_version() -> str:
    """The ONNX Runtime version, read from its metadata (importing it costs a few hundred ms)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"onnxruntime {version('onnxruntime')}"
    except PackageNotFoundError:
        return "no onnxruntime"


def _check_file(bundle: "Bundle") -> Path:
    # the int8 file this CPU runs is part of what was checked
    key = f"{cpu_kind()} {runtime_version()} {RUN_SCHEME} {model_file(bundle, 'int8').name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return folder(bundle) / f"check-{digest}.json"


def read_check(bundle: "Bundle") -> dict[str, Any] | None:
    """The check made on this CPU kind, if any."""
    try:
        return json.loads(_check_file(bundle).read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- export


def export(bundle: "Bundle", visual: torch.nn.Module, note: Callable[[str], None] = lambda _: None) -> Path:
    """Write the fp32 and int8 ONNX image towers for ``bundle`` (once; atomic; a concurrent
    exporter's finished folder wins)."""
    target = folder(bundle)
    if exported(bundle):
        return target
    reason = missing()
    if reason:
        raise UsageError(reason)
    import shutil
    import warnings

    from ..files import staging_dir, umask

    if model_file(bundle, "fp32").is_file() and model_file(bundle, "int8", 8).is_file():
        # exported before the 7-bit tower existed: add it from the fp32 file, nothing else
        note(f"adding the 7-bit int8 tower of {bundle.name} (for CPUs without VNNI; once)…")
        stage = staging_dir(target, ".w7")
        try:
            _quantise(model_file(bundle, "fp32"), stage / INT8_FILES[7], bits=7)
            os.replace(stage / INT8_FILES[7], model_file(bundle, "int8", 7))
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        integrity.record([model_file(bundle, "int8", 7)])
        return target

    note(f"exporting the image tower of {bundle.name} to ONNX (once per weights)…")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(target, ".export")
    try:
        size = int(bundle.model_cfg["vision_cfg"].get("image_size", 224))
        example = torch.zeros(2, 3, size, size)
        visual = visual.to("cpu", torch.float32).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(visual, (example,), str(stage / "visual.fp32.onnx"), dynamo=False,
                              input_names=["images"], output_names=["embeddings"], opset_version=OPSET,
                              dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}})
        for bits, name in INT8_FILES.items():
            _quantise(stage / "visual.fp32.onnx", stage / name, bits=bits)
        (stage / "export.json").write_text(json.dumps({
            "weights": bundle.name, "weights_sha256": bundle.weights_sha256, "export_version": EXPORT_VERSION,
            "opset": OPSET, "torch": torch.__version__,
            "quantisation": "dynamic, MatMul only, int8 weights per output channel: 8-bit, and 7-bit for x86 without VNNI",
        }, indent=1))
        os.chmod(stage, 0o777 & ~umask())
        try:
            os.replace(stage, target)
        except OSError:  # the folder exists: a concurrent exporter finished first, or it is incomplete
            if not exported(bundle):
                aside = target.with_name(f"{target.name}.old-{os.getpid()}")
                os.replace(target, aside)
                os.replace(stage, target)
                shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    integrity.record(_model_files(bundle))
    return target


def _model_files(bundle: "Bundle") -> list[Path]:
    return [model_file(bundle, "fp32"), *(model_file(bundle, "int8", bits) for bits in INT8_FILES)]


def stale(bundle: "Bundle") -> str | None:
    """Why the export must be made again: a file missing, or not the one that was exported (a
    swapped tower gives other numbers while records cite the bundle's sha256). None: it is sound."""
    if not exported(bundle):
        return "not exported"
    for path in _model_files(bundle):
        reason = integrity.problem(path)
        if reason:
            return reason
    return None


def _export_again(bundle: "Bundle", reason: str, note: Note) -> None:
    """Set a damaged or foreign export aside (deleted) so that :func:`export` writes it anew."""
    import shutil

    note(f"ONNX export of {bundle.name}: {reason}; exporting it again")
    shutil.rmtree(folder(bundle), ignore_errors=True)


def _quantise(fp32: Path, out: Path, bits: int) -> None:
    """ONNX Runtime's dynamic quantisation of the MatMuls, int8 weights per output channel;
    ``bits`` 7 keeps the weights in [-64, 64] (``reduce_range``): 2 * 255 * 64 < 2^15, so no int16
    pair sum saturates."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # quantize_dynamic's advice goes to the root logger
    try:
        quantize_dynamic(str(fp32), str(out), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                         per_channel=True, reduce_range=bits == 7)
    finally:
        root.setLevel(level)  # a library call leaves the caller's logging as it found it


# --------------------------------------------------------------------------- running


class OnnxTower:
    """The exported image tower in one ONNX Runtime session on the CPU: float images (N,3,S,S)
    in, unnormalised embeddings (N,E) out, as torch tensors.

    Each frame is its own run of the session, ``threads`` runs side by side with one thread each
    (the session is thread-safe; ONNX Runtime releases the GIL). That makes a frame's embedding
    depend on that frame alone: int8's activations are quantised per run (dynamic, one scale per
    tensor), so a whole batch in one run gave each frame a scale set by its batch-mates, and the
    same video other numbers in another run, batch size or company (frame cosine ~0.9999 apart).
    It is also faster than one run of the batch on two threads (full-size tower, 2-core AMD EPYC
    with AVX-512: int8 15.7 vs 14.5 frames/s, fp32 5.6 vs 5.2; docs/BENCHMARKS.md), as for torch:
    ConvNeXt's operations share out poorly across threads."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None, *, precision: str = "fp32",
                 bundle: "Bundle | None" = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.path = path
        self.threads = max(1, threads or torch.get_num_threads())
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._pool: Any = None
        self.precision = precision
        self.bundle = bundle

    @property
    def numerics(self) -> dict[str, str]:
        return {"backend": "onnx", "precision": self.precision}

    def refusal(self, task: str) -> str | None:
        """Why ``task`` may not run on this tower: its check on this CPU failed that task's tolerances."""
        result = read_check(self.bundle) if self.bundle is not None else None
        if result is None:
            return "no check of the ONNX backend on this CPU"
        return refusal(result, self.precision, task)

    def _one(self, frame: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"images": frame})[0]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        frames = [x[i:i + 1] for i in range(x.shape[0])]
        if self.threads == 1 or len(frames) == 1:
            out = [self._one(f) for f in frames]
        else:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="echoclip-onnx")
            out = list(self._pool.map(self._one, frames))
        return torch.from_numpy(np.concatenate(out)) if out else torch.zeros(0, self.embed_dim)

    @property
    def embed_dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])


# --------------------------------------------------------------------------- the check


def check(reference: Reference, note: Note = lambda _: None, task_numbers: TaskNumbers | None = None) -> dict[str, Any]:
    """Measure both ONNX precisions against ``reference``'s torch fp32 tower on this CPU; saved
    beside the exported files and returned. ``task_numbers`` (from the zero-shot code, for
    zero-shot weights) gives EF and device scores of frame embeddings, so their changes are measured."""
    from ..files import atomic_write_text

    bundle, preprocess = reference.bundle, reference.preprocess
    note(f"checking the ONNX backend of {bundle.name} against torch fp32 on this CPU (once)…")
    clips = measure.check_clips(preprocess)
    frames_ref = measure.frame_embeddings(reference.encode_image, clips, preprocess)
    tasks_ref = task_numbers(frames_ref) if task_numbers else {}
    neighbours_ref = measure.neighbours(np.concatenate(frames_ref))
    batch = measure.check_batch(clips, preprocess)
    result: dict[str, Any] = {"cpu": cpu_kind(), "runtime": runtime_version(), "weights": bundle.name,
                              "weights_sha256": bundle.weights_sha256,
                              "clips": "pydicom examples ybr_color and its mirror, frames as the bundle samples",
                              "int8_weight_bits": int8_weight_bits(),
                              "frames_per_s": {"torch-fp32": round(measure.rate(reference.encode_image, batch), 3)},
                              "precisions": {}}
    for precision in ONNX_PRECISIONS:
        tower = OnnxTower(model_file(bundle, precision))
        frames = measure.frame_embeddings(tower, clips, preprocess)
        changed, compared = measure.neighbour_changes(np.concatenate(frames), neighbours_ref)
        numbers: dict[str, Any] = {"frame_cosine_min": measure.min_frame_cosine(frames, frames_ref),
                                   "video_cosine_min": measure.min_video_cosine(frames, frames_ref),
                                   "neighbour_changes": changed, "neighbour_queries": compared}
        if task_numbers:
            numbers.update(measure.task_deltas(task_numbers(frames), tasks_ref))
        result["frames_per_s"][f"onnx-{precision}"] = round(measure.rate(tower, batch), 3)
        result["precisions"][precision] = numbers
    atomic_write_text(_check_file(bundle), json.dumps(result, indent=1))
    for line in summary(result).splitlines():
        note(line)
    return result


def summary(result: Mapping[str, Any]) -> str:
    """One line per precision: the measured parity and speed."""
    speed = result["frames_per_s"]
    lines = [f"ONNX backend check on {result['cpu']}, {result.get('runtime', '')} (torch fp32 "
             f"{speed['torch-fp32']:.2f} frames/s):"]
    for precision, n in result["precisions"].items():
        parts = [f"video cosine {n['video_cosine_min']:.5f}", f"frame cosine {n['frame_cosine_min']:.5f}"]
        if n.get("ef_delta") is not None:
            parts.append(f"EF Δ {n['ef_delta']:.2f}")
        if n.get("score_delta_max") is not None:
            parts.append(f"device score Δ {n['score_delta_max']:.4f}")
        parts.append(f"top-5 neighbours changed {100 * n['neighbour_changes']:.0f} % of {n['neighbour_queries']}")
        parts.append(f"{speed[f'onnx-{precision}']:.2f} frames/s")
        label = precision
        if precision == "int8" and "int8_weight_bits" in result:
            label = f"int8 ({result['int8_weight_bits']}-bit weights)"
        lines.append(f"  {label}: " + ", ".join(parts))
    return "\n".join(lines)


def refusal(result: Mapping[str, Any], precision: str, task: str) -> str | None:
    """Why ``task`` may not use ``precision`` on this CPU (None: it may)."""
    limits = TOLERANCES[precision].get(task, TOLERANCES[precision]["embed"])
    numbers = result["precisions"][precision]
    for limit, bound in limits.items():
        value = numbers.get(_MEASURED[limit])
        if value is None:
            if limit in ("max_ef_delta", "max_score_delta"):
                continue  # retrieval weights: no zero-shot numbers, and zero-shot tasks refuse them anyway
            return f"the check has no {_MEASURED[limit]}"
        ok = value >= bound if limit.startswith("min") else value <= bound
        if not ok:
            return (f"ONNX {precision} failed the {task} tolerance on this CPU: {_MEASURED[limit]} = {value:.4g} "
                    f"({'≥' if limit.startswith('min') else '≤'} {bound} needed)")
    return None


def _make(bundle: "Bundle", reference: Callable[[], Reference], note: Note,
          task_numbers: Callable[[Reference], TaskNumbers | None]) -> None:
    """Export (again, where the files are not the ones exported) and check on this CPU."""
    reason = stale(bundle)
    if reason not in (None, "not exported"):
        _export_again(bundle, reason, note)
    model = reference()
    export(bundle, model.visual, note)
    check(model, note, task_numbers(model))


class OnnxBackend(Backend):
    name: ClassVar[str] = "onnx"
    label: ClassVar[str] = "ONNX backend"
    precisions: ClassVar[tuple[str, ...]] = ONNX_PRECISIONS

    def missing(self) -> str | None:
        return missing()

    def built(self, bundle: "Bundle") -> Path | None:
        fp32 = model_file(bundle, "fp32")
        sound = fp32.is_file() and integrity.problem(fp32) is None
        return fp32 if read_check(bundle) is not None and sound and runtime_found() else None

    def gain(self, bundle: "Bundle") -> float | None:
        found = read_check(bundle)  # timed against eager when it was checked
        return found["frames_per_s"].get("onnx-fp32", 0) / found["frames_per_s"]["torch-fp32"] if found else None

    def ensure(self, bundle: "Bundle", reference: Callable[[], Reference], note: Note,
               task_numbers: Callable[[Reference], TaskNumbers | None]) -> None:
        if stale(bundle) is None and read_check(bundle) is not None:
            return
        _make(bundle, reference, note, task_numbers)

    def optimise(self, bundle: "Bundle", reference: Callable[[], Reference], note: Note,
                 task_numbers: Callable[[Reference], TaskNumbers | None], force: bool = False) -> None:
        checked = None if force else read_check(bundle)
        if checked is not None and stale(bundle) is None:
            note("already checked on this CPU (--force to redo):")
            for line in summary(checked).splitlines():  # one message per line
                note(line)
            return
        if not force and (kept := self.not_kept(bundle)):
            for line in kept.splitlines():
                note(line)
            return
        _make(bundle, reference, note, task_numbers)

    def prune(self, bundle: "Bundle") -> int:
        files = [path for path in folder(bundle).glob("*") if path.is_file() and path.suffix != ".json"]
        return prune_files(folder(bundle), files, "eager torch ran faster on this CPU") if files else 0

    def not_kept(self, bundle: "Bundle") -> str | None:
        found = read_check(bundle)
        if found is None or not (folder(bundle) / PRUNED).is_file() or exported(bundle):
            return None
        return "checked on this CPU, not kept (eager torch ran faster; --force exports it again):\n" + summary(found)

    def tower(self, bundle: "Bundle", precision: str = "fp32", eager: Any = None, **options: Any) -> OnnxTower:
        reason = integrity.problem(model_file(bundle, precision))
        if reason:  # a swapped export would give other numbers under the bundle's name
            raise UsageError(f"the ONNX {precision} tower cannot be used: {reason}",
                             hint=f"export it again: echoclip weights optimise {bundle.name} --force")
        return OnnxTower(model_file(bundle, precision), precision=precision, bundle=bundle)
