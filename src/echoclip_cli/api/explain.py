"""Why the model said it: PromptCAM maps of a video's frames for a prompt or a task.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip", precision="fp32")
    >>> for m in echoclip_cli.explain(model, "a4c.avi", task="pacemaker", frames=[0, 10, 24]):
    ...     print(m.frame, m.score, m.map_max, m.map_max_xy)   # m.raw (7×7), m.cam (224²), m.overlay()

One record (:class:`FrameMap`) per frame: the 7×7 map at the target block (``raw``), the map
upsampled to the model's input size (``cam``), where its maximum is, and the frame's score for the
prompt(s). The algorithm and the display are the released ones (:mod:`echoclip_cli.promptcam`);
the maps run on the torch network of ``model`` (never a built ONNX or compiled tower: they have no
gradients), one frame at a time, in the model's precision (fp32 unless it was loaded otherwise).

What a task's map explains: a binary task's score (the mean of its prompts' normalised embeddings
is the target: the gradient of the mean cosine); for a regression task (EF), the prompts of the
value the frame alone estimates; for a categorical task, the prompts of the class the frame alone
scores highest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Sequence

from ..errors import EchoclipError, UsageError
from ..options import DEFAULT, RunOptions
from ..records import Record
from .common import PathLike, Progress, Silent

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..inference import EchoClip
    from ..prompts import Task
    from ..tasks import PreparedTask

MAPS_FILE = "explain.jsonl"  # the records, next to the overlays, in the output folder


@dataclass(kw_only=True)
class FrameMap(Record):
    """One frame's PromptCAM. ``map_max`` is the 224² map's maximum and ``map_max_xy`` where it
    is ([x, y] pixels of the model's input, x to the right, y down); ``score`` is the cosine of
    the frame's embedding with the prompt (the mean over a task's prompts). ``raw``, ``cam`` and
    ``image`` (the frame as the model received it, (S, S, 3) uint8 RGB) are not record fields."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"task", "value", "label"})

    level: str = "frame"
    source: str
    frame: int | None
    task: str | None = None
    prompts: list[str] = field(default_factory=list)
    value: float | None = None  # regression task: the value this frame alone estimates
    label: str | None = None  # categorical task: the class this frame alone scores highest
    score: float | None = None
    map_max: float | None = None
    map_max_xy: list[int] | None = None
    raw_max: float | None = None
    weights: str
    weights_sha256: str
    precision: str | None = None
    error: str | None = None
    raw: Any = field(default=None, repr=False, metadata={"internal": True})
    cam: Any = field(default=None, repr=False, metadata={"internal": True})
    image: Any = field(default=None, repr=False, metadata={"internal": True})

    @property
    def ok(self) -> bool:
        return self.error is None

    def overlay(self) -> "np.ndarray":
        """The released display: the frame under the blurred, normalised, jet-coloured map."""
        from ..promptcam import overlay

        if self.cam is None or self.image is None:
            raise UsageError(f"frame {self.frame} of {self.source} has no map ({self.error})")
        return overlay(self.image, self.cam)


@dataclass(frozen=True)
class _Request:
    source: Path
    prompt: str | None
    task: "Task | None"
    frames: tuple[int, ...] | None


def check_explain(source: PathLike, *, prompt: str | None = None, task: str | None = None,
                  frames: Sequence[int] | None = None, prompts: PathLike | None = None) -> _Request:
    """Everything :func:`explain` refuses, checked before anything loads: one input file; a
    prompt or a task (not both); frame indices that are integers ≥ 0, each once."""
    from .zeroshot import check_tasks

    path = Path(source)
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if not path.is_file():
        raise UsageError(f"{path} is not a file: explain reads one video or DICOM file")
    if (prompt is None) == (task is None):
        raise UsageError("give a prompt or a task (one of the two)")
    if prompt is not None and not prompt.strip():
        raise UsageError("the prompt is empty")
    found = check_tasks([task], prompts)[task] if task is not None else None
    if frames is not None:
        frames = tuple(frames)
        if not frames:
            raise UsageError("no frame indices given")
        bad = [f for f in frames if isinstance(f, bool) or not isinstance(f, int) or f < 0]
        if bad:
            raise UsageError(f"frame indices must be integers ≥ 0, not {bad[0]!r}")
        twice = sorted({f for f in frames if frames.count(f) > 1})
        if twice:
            raise UsageError(f"frame {twice[0]} is given twice")
    return _Request(path, prompt, found, frames)


def explain(
    model: "EchoClip",
    source: PathLike,
    *,
    prompt: str | None = None,
    task: str | None = None,
    frames: Sequence[int] | None = None,
    options: RunOptions = DEFAULT,
    prompts: PathLike | None = None,
    out: PathLike | None = None,
    save_maps: PathLike | None = None,
    progress: Progress | None = None,
) -> Iterator[FrameMap]:
    """PromptCAM of frames of one video for ``prompt`` (any text) or ``task`` (a task of the
    prompt library, or of ``prompts``): one :class:`FrameMap` per frame. ``frames`` are indices
    of the decoded video (before sampling; default: the frames the model samples); a frame past
    the end is a record with ``error``. With ``out``, each frame's overlay is written to
    ``out/frame_F.png`` and the records to ``out/explain.jsonl``; with ``save_maps``, the raw
    maps to an ``.npz`` (``raw_fF`` h×w and ``cam_fF`` S×S float32, ``frames``, ``prompts``)."""
    request = check_explain(source, prompt=prompt, task=task, frames=frames, prompts=prompts)
    records = _explain(model, request, options, progress or Silent())
    if out is None and save_maps is None:
        return records
    return _written(records, Path(out) if out is not None else None, Path(save_maps) if save_maps else None)


def _explain(model: "EchoClip", request: _Request, options: RunOptions, progress: Progress) -> Iterator[FrameMap]:
    from ..media import load_frames
    from ..preprocess import to_model_input

    cfg = options.sampled().apply(model.preprocess)
    wanted = list(request.frames) if request.frames is not None else cfg.frame_indices
    try:
        clip = load_frames(request.source, cfg, wanted, keep_phi=options.keep_phi)
    except EchoclipError as exc:
        yield _record(model, request, None, error=exc.message)
        return
    found = [int(i) for i in clip.meta["frame_indices"]]
    progress.start(1, len(found))  # one video; its maps are the frames the bar counts
    images = to_model_input(clip.frames, cfg)
    targets = _Targets(model, request)
    for row, index in enumerate(found):
        yield _frame_map(model, request, index, images[row : row + 1], clip.frames[row], targets)
        progress.frames(1)
    progress.item(len(found))
    if request.frames is not None:
        for index in (i for i in request.frames if i not in found):
            yield _record(model, request, index, error=_missing(request.source, index, clip.meta))


def _missing(source: Path, index: int, meta: dict[str, Any]) -> str:
    total = meta.get("n_frames_total") or meta.get("n_frames")
    if meta.get("source_kind") is None and "preprocess_digest" in meta and total is None:
        return f"{source}: frame {index} is not among the preprocessed file's frames {meta.get('frame_indices')}"
    return f"{source}: no frame {index}" + (f" (the video has {total} frames)" if total else " (past the end)")


def _record(model: "EchoClip", request: _Request, frame: int | None, **values: Any) -> FrameMap:
    from ..device import precision_name

    return FrameMap(source=str(request.source), frame=frame, task=request.task.name if request.task else None,
                    weights=model.bundle.name, weights_sha256=model.weights_sha256,
                    precision=precision_name(model.dtype), **values)


class _Targets:
    """The prompt embeddings a frame's map explains (normalised, (K, E)), with their texts."""

    def __init__(self, model: "EchoClip", request: _Request) -> None:
        self.model, self.request = model, request
        self.prepared: "PreparedTask | None" = None
        if request.task is not None:
            from ..tasks import prepare

            self.prepared = prepare(model, request.task)
        else:
            self.fixed = embed_prompts(model, [str(request.prompt)])

    def for_frame(self, image: "torch.Tensor") -> tuple[list[str], "np.ndarray", dict[str, Any]]:
        """(texts, their normalised embeddings (K, E), what the frame alone says) for one frame."""
        import numpy as np

        if self.prepared is None:
            return [str(self.request.prompt)], self.fixed, {}
        task, p = self.prepared.task, self.prepared
        if task.mode == "binary":
            assert p.prompts is not None
            return task.texts(), p.prompts, {}
        frame = _normalised(self.model.encode_image(image).cpu().numpy())  # 1,E: what the frame alone says
        if task.mode == "regression":
            from ..zeroshot import regression

            assert p.prompts is not None and p.values is not None
            value = float(regression(frame, p.prompts, p.values).single_frame_estimates[0])
            texts, embedded = value_prompts(p, value)
            return texts, embedded, {"value": value}
        from ..zeroshot import categorical_scores

        scores = categorical_scores(frame, dict(p.classes or {}))
        label = max(scores, key=scores.__getitem__)
        return list(task.classes[label]), np.asarray((p.classes or {})[label]), {"label": label}


def value_prompts(prepared: "PreparedTask", value: float) -> tuple[list[str], "np.ndarray"]:
    """A regression task's prompts for ``value`` (each template filled with it) and their
    normalised embeddings."""
    assert prepared.prompts is not None and prepared.values is not None
    rows = [i for i, v in enumerate(prepared.values) if v == value]
    texts = prepared.task.texts()
    return [texts[i] for i in rows], prepared.prompts[rows]


def embed_prompts(model: "EchoClip", texts: Sequence[str]) -> "np.ndarray":
    """Normalised embeddings (K, E) of ``texts`` (through the text cache)."""
    from ..text_embed import embed_texts

    return _normalised(embed_texts(model, list(texts)).numpy())


def _normalised(vectors: "np.ndarray") -> "np.ndarray":
    from ..zeroshot import normalise

    return normalise(vectors.astype("float32"))


def frame_maps(model: "EchoClip", images: "torch.Tensor", targets: Sequence["np.ndarray"]) -> Any:
    """PromptCAM of normalised ``images`` (N, 3, S, S), each for the mean of its ``targets`` row
    ((K, E) normalised prompt embeddings): :class:`~echoclip_cli.promptcam.CamMaps`. The torch
    network of ``model``, in its precision, one frame at a time."""
    import numpy as np
    import torch

    from ..promptcam import prompt_cam

    target = torch.from_numpy(np.stack([np.asarray(t, dtype=np.float32).mean(axis=0) for t in targets]))
    return prompt_cam(model.visual, images, target, dtype=model.dtype)


def _frame_map(model: "EchoClip", request: _Request, index: int, image: "torch.Tensor", frame: "torch.Tensor",
               targets: _Targets) -> FrameMap:
    import numpy as np

    texts, embedded, said = targets.for_frame(image)
    maps = frame_maps(model, image, [embedded])
    cam = maps.cam[0]
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    score = float((_normalised(maps.embeddings)[0].astype(np.float64) @ embedded.astype(np.float64).T).mean())
    return _record(model, request, index, prompts=texts, score=round(score, 5), map_max=float(cam.max()),
                   map_max_xy=[int(x), int(y)], raw_max=float(maps.raw[0].max()), raw=maps.raw[0], cam=cam,
                   image=frame.permute(1, 2, 0).numpy(), **said)


# --------------------------------------------------------------------------- files


def _written(records: Iterator[FrameMap], out: Path | None, npz: Path | None) -> Iterator[FrameMap]:
    """The records as they come, each frame's overlay and record written to ``out`` meanwhile,
    and the maps to ``npz`` at the end."""
    from ..promptcam import png_bytes

    kept: list[FrameMap] = []
    lines = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        lines = (out / MAPS_FILE).open("w", encoding="utf-8")
    try:
        for record in records:
            if record.ok and out is not None:
                (out / f"frame_{record.frame}.png").write_bytes(png_bytes(record.overlay()))
            if lines is not None:
                lines.write(json.dumps(record.as_dict(), ensure_ascii=False) + "\n")
                lines.flush()
            if record.ok:
                kept.append(record)
            yield record
    finally:
        if lines is not None:
            lines.close()
    if npz is not None:
        write_maps(kept, npz)


def write_maps(records: Sequence[FrameMap], path: PathLike) -> Path:
    """The maps of ``records`` as one ``.npz``: ``raw_fF`` (h×w) and ``cam_fF`` (S×S) float32 per
    frame F, ``frames`` (int64) and ``prompts`` (each frame's prompts, joined by newlines)."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    for r in records:
        arrays[f"raw_f{r.frame}"] = np.asarray(r.raw, dtype=np.float32)
        arrays[f"cam_f{r.frame}"] = np.asarray(r.cam, dtype=np.float32)
    arrays["frames"] = np.asarray([r.frame for r in records], dtype=np.int64)
    arrays["prompts"] = np.asarray(["\n".join(r.prompts) for r in records], dtype=str)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path
