"""The inference core: a loaded model on its device, in its precision, with its preprocessing.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip", device="auto", precision="auto")
    >>> model.encode_image(images)   # images: N×3×224×224 float, already normalised → N×512
    >>> model.encode_text(ids)       # ids: N×77 long → N×512

Every command builds on this object; it never holds random weights (loading is strict).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import weights as weights_mod
from .device import autocast, precision_name, resolve_device, resolve_precision, set_deterministic, strict_fp32
from .model import EchoClipModel, build_skeleton
from .preprocess_config import PreprocessConfig
from .weights import Bundle


@dataclass
class EchoClip:
    """A model ready to embed: weights checked and loaded, device and precision chosen.

    Loaded lazily (``load_model(..., lazy=True)``) the network is built on first use: a command
    whose frames and prompts all come from caches never spends seconds reading 600 MB.
    """

    _module: EchoClipModel | None
    bundle: Bundle
    device: torch.device
    dtype: torch.dtype
    _tokenizer: Any = field(default=None, repr=False)
    _build: Callable[[], EchoClipModel] | None = field(default=None, repr=False)
    backend: str = "torch"  # "torch" (eager, or compiled: compiled_backend), or "onnx" (onnx_backend)
    onnx_precision: str | None = None  # fp32 or int8 with the onnx backend
    _tower: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    compiled: bool = False  # the torch image tower as an AOTInductor package (same numerics as eager)
    jit: bool = False  # the torch image tower wrapped in torch.compile (--compile)
    # On the CPU, a batch is cut into one slice per core, run side by side with one thread each
    # (split_batch); ECHOCLIP_CPU_SPLIT=0 turns it off (then torch's threads share each operation).
    cpu_split: bool = field(default_factory=lambda: os.environ.get("ECHOCLIP_CPU_SPLIT", "1") != "0")
    _jit_batch: int | None = field(default=None, repr=False)  # the batch size it was compiled for

    @property
    def model(self) -> EchoClipModel:
        if self._module is None:
            assert self._build is not None
            self._module, self._build = self._build(), None
        return self._module

    @property
    def loaded(self) -> bool:
        return self._module is not None

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.bundle.preprocess

    @property
    def weights_sha256(self) -> str:
        return self.bundle.weights_sha256

    @property
    def precision(self) -> str:
        """The image tower's precision: fp32, bf16, fp16, or int8 (ONNX MatMuls)."""
        return self.onnx_precision or precision_name(self.dtype)

    @property
    def text_precision(self) -> str:
        """The text tower's precision (always torch)."""
        return precision_name(self.dtype)

    @property
    def numerics(self) -> dict[str, str]:
        """What produced this model's image embeddings (records and stores carry it)."""
        return {"backend": self.backend, "precision": self.precision}

    @property
    def embed_dim(self) -> int:
        return int(self.bundle.model_cfg["embed_dim"])

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings (N,E) in fp32 for normalised images (N,3,H,W)."""
        parts = min(torch.get_num_threads(), images.shape[0])
        if (self.cpu_split and parts > 1 and self.device.type == "cpu" and not self.jit
                and self._tower is None and images.device.type == "cpu"):  # not compiled or ONNX towers
            return split_batch(self._encode_image, images, parts)
        return self._encode_image(images)

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if self._tower is not None:
            return self._tower(images).float()
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        count = images.shape[0]
        if self.jit:  # torch.compile(dynamic=False) would compile again for a shorter last batch: pad it
            self._jit_batch = self._jit_batch or count
            if count < self._jit_batch:
                images = torch.cat([images, images.new_zeros(self._jit_batch - count, *images.shape[1:])])
            elif not images.is_inference():  # one kind of tensor always, or dynamo guards fail and recompile
                images = images.clone()
        with autocast(self.device, self.dtype):
            return self.model.encode_image(images)[:count].float()

    @torch.inference_mode()
    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Unnormalised text embeddings (N,E) in fp32 for token ids (N,L)."""
        with autocast(self.device, self.dtype):
            return self.model.encode_text(ids.to(self.device)).float()


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


def load_model(
    weights: str | os.PathLike[str] | Bundle | None = None,
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    deterministic: bool = False,
    compile: bool = False,
    lazy: bool = False,
    backend: str = "auto",
    note: Callable[[str], None] | None = None,
    inputs: int | None = None,
) -> EchoClip:
    """Load a bundle (name, path or :class:`Bundle`) strictly onto ``device`` in ``precision``.

    ``compile=True`` wraps the image tower in ``torch.compile`` (same results; a one-off warm-up
    of tens of seconds, then faster batches on GPU). ``lazy=True`` checks the weights' hash now and
    builds the network on first use.

    ``backend``: ``torch`` (eager); ``compiled`` (CPU, fp32: the tower compiled ahead of time for
    this CPU, built and checked on first use, :mod:`echoclip_cli.compiled_backend`); ``onnx``
    (CPU, the optional ``cpu-fast`` extra; ``precision`` fp32 or int8), exported and checked on
    first use (:mod:`echoclip_cli.onnx_backend`); or ``auto`` (also ``ECHOCLIP_BACKEND``): on the
    CPU in fp32, whichever of compiled and onnx fp32 is already built here and measured fastest
    against eager on this CPU, else eager torch; for a run of ``inputs`` ≥
    :data:`~echoclip_cli.compiled_backend.AUTO_BUILD_INPUTS` on a CPU where no build was tried,
    ``auto`` first builds the compiled tower (once; a failed build or one measured no faster
    leaves the run eager). ``note`` hears what first use does.
    """
    bundle = weights if isinstance(weights, Bundle) else weights_mod.resolve(weights)
    torch_device = resolve_device(device)
    if compile and (backend or "auto").strip().lower() == "auto" and not os.environ.get("ECHOCLIP_BACKEND"):
        backend = "torch"  # --compile is torch.compile of the eager tower
    backend, onnx_precision = resolve_backend(backend, precision, torch_device, bundle, inputs)
    if compile and backend != "torch":
        from .errors import UsageError

        raise UsageError(f"--compile is for the torch backend, not {backend}")
    dtype = torch.float32 if backend in ("onnx", "compiled") else resolve_precision(precision, torch_device)
    strict_fp32(torch_device, dtype)
    set_deterministic(deterministic)
    weights_mod.ensure_verified(bundle)
    build = functools.partial(_build, bundle, torch_device, compile)
    if backend == "onnx":
        return _onnx_model(bundle, build, onnx_precision or "fp32", note or (lambda _: None))
    if backend == "compiled":
        return _compiled_model(bundle, build, note or (lambda _: None))
    if backend == "build-compiled":  # auto, a large run: try once, stay eager if it does not pay
        from . import compiled_backend
        from .errors import UsageError

        say = note or (lambda _: None)
        say(f"{inputs} inputs: building the compiled image tower for this CPU first "
            f"(once; --backend torch skips this)")
        try:
            compiled = _compiled_model(bundle, build, say)
        except UsageError as exc:
            say(f"{exc.message}; running eager")
        else:
            if compiled_backend.usable(bundle):
                return compiled
    if lazy:
        return EchoClip(None, bundle=bundle, device=torch_device, dtype=dtype, _build=build, jit=compile)
    return EchoClip(build(), bundle=bundle, device=torch_device, dtype=dtype, jit=compile)


BACKENDS = ("auto", "torch", "compiled", "onnx")


def resolve_backend(spec: str, precision: str, device: torch.device, bundle: Bundle,
                    inputs: int | None = None) -> tuple[str, str | None]:
    """(backend, ONNX precision or None) for ``--backend`` and ``--precision`` on ``device``;
    ``build-compiled`` when ``auto`` should build the compiled tower for a large run first."""
    from . import onnx_backend
    from .errors import UsageError

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = (os.environ.get("ECHOCLIP_BACKEND") or "auto").strip().lower()
    precision = precision.strip().lower()
    if spec not in BACKENDS:
        raise UsageError(f"unknown backend {spec!r}: use {', '.join(BACKENDS)}")
    if spec == "compiled":
        if device.type != "cpu" or precision not in ("auto", "fp32"):
            raise UsageError("the compiled backend runs on the CPU in fp32", hint="use --device cpu --precision fp32")
        return "compiled", None
    if precision == "int8" and spec == "auto":
        spec = "onnx"
    if spec == "onnx":
        if device.type != "cpu":
            raise UsageError(f"the onnx backend runs on the CPU, not {device}", hint="use --device cpu")
        if precision not in ("auto", *onnx_backend.ONNX_PRECISIONS):
            raise UsageError(f"the onnx backend runs fp32 or int8, not {precision}")
        reason = onnx_backend.missing()
        if reason:
            raise UsageError(reason)
        return "onnx", "fp32" if precision == "auto" else precision
    if precision == "int8":
        raise UsageError("int8 runs on the onnx backend only", hint="use --backend onnx (pip install 'echoclip[cpu-fast]')")
    if spec == "auto" and device.type == "cpu" and resolve_precision(precision, device) is torch.float32:
        from . import compiled_backend
        from .cpu_paths import fastest_built

        choice = fastest_built(bundle)
        if (choice == ("torch", None) and (inputs or 0) >= compiled_backend.AUTO_BUILD_INPUTS
                and not compiled_backend.attempted(bundle) and compiled_backend.compiler_found()):
            return "build-compiled", None
        return choice
    return "torch", None


def _compiled_model(bundle: Bundle, build: Callable[[], EchoClipModel], note: Callable[[str], None]) -> EchoClip:
    """The compiled tower (built and checked here on first use), the text tower built lazily."""
    from . import compiled_backend
    from .errors import UsageError

    cpu = torch.device("cpu")
    if compiled_backend.read_check(bundle) is None or not compiled_backend.package_file(bundle).is_file():
        compiled_backend.build(EchoClip(build(), bundle=bundle, device=cpu, dtype=torch.float32), note)
    found = compiled_backend.read_check(bundle)
    if not found or not found["passed"]:
        raise UsageError(f"the compiled image tower failed its check on this CPU (frame cosine "
                         f"{found['frame_cosine_min'] if found else 'unknown'} < {compiled_backend.MIN_COSINE})",
                         hint="use --backend torch")
    tower = compiled_backend.CompiledTower(compiled_backend.package_file(bundle))
    return EchoClip(None, bundle=bundle, device=cpu, dtype=torch.float32, _build=build, _tower=tower, compiled=True)


def _onnx_model(bundle: Bundle, build: Callable[[], EchoClipModel], precision: str,
                note: Callable[[str], None]) -> EchoClip:
    """The onnx backend: export and check on first use (these need the torch tower), then a
    model whose image tower is the ONNX Runtime session and whose text tower is built lazily."""
    from . import onnx_backend

    cpu = torch.device("cpu")
    if not onnx_backend.exported(bundle) or onnx_backend.read_check(bundle) is None:
        reference = EchoClip(build(), bundle=bundle, device=cpu, dtype=torch.float32)
        onnx_backend.export(bundle, reference.model.visual, note)
        onnx_backend.check(reference, note)
    tower = onnx_backend.OnnxTower(onnx_backend.model_file(bundle, precision))
    return EchoClip(None, bundle=bundle, device=cpu, dtype=torch.float32, _build=build, backend="onnx",
                    onnx_precision=precision, _tower=tower)


def _build(bundle: Bundle, torch_device: torch.device, compile: bool) -> EchoClipModel:
    """The network with the bundle's checked weights, on ``torch_device``."""
    state = bundle.state_dict()
    model = build_skeleton(bundle.model_cfg)  # no memory until the checked tensors are assigned
    weights_mod.check_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, state)
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(torch_device).eval()
    if torch_device.type == "cuda":
        model.visual.to(memory_format=torch.channels_last)
    if compile:
        model.visual = torch.compile(model.visual, dynamic=False)  # type: ignore[assignment]
    return model
