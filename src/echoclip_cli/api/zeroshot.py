"""Zero-shot use cases: EF, implanted devices, any task of the prompt library.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip")
    >>> for r in echoclip_cli.predict_ef(model, ["study/"]):        # EFVideo…, then EFStudy
    ...     print(r.level, r.study, r.ef)
    >>> echoclip_cli.detect_devices(model, store="archive.store")    # frames kept by `embed --keep-frames`

Every call streams typed records (:mod:`echoclip_cli.tasks`): one per video (and task) as it
finishes, then one per study. They share one engine (:class:`Scoring`): the arguments checked
before anything runs, prompts embedded through the text cache, and frame embeddings from a store
that kept them, from the frame cache, or embedded now (and cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from ..defaults import DEVICE_TASKS
from ..errors import UsageError
from ..media.classify import VIDEO_TYPES, parse_clip_types
from ..options import DEFAULT, RunOptions
from ..prompts import load_thresholds, select_tasks
from .common import PathLike, Progress, Silent, check_model, damage_notes, inputs_or_store

if TYPE_CHECKING:
    from ..inference import EchoClip
    from ..records import Record, VideoEmbedding
    from ..tasks import FrameSet, PreparedTask

Thresholds = PathLike | Mapping[str, float] | None


def check_tasks(task_names: Sequence[str], prompts: PathLike | None = None) -> dict[str, Any]:
    """The named tasks of the prompt library (or of ``prompts``); a usage error for an unknown
    name or a missing prompts file."""
    if prompts is not None and not Path(prompts).is_file():
        raise UsageError(f"no such prompts file: {prompts}")
    return select_tasks(task_names, prompts)


def thresholds_of(thresholds: Thresholds) -> dict[str, float]:
    """Device thresholds given as a mapping or a JSON file (``echoclip calibrate``); none: {}."""
    return dict(thresholds) if isinstance(thresholds, Mapping) else load_thresholds(thresholds)


@dataclass
class Scoring:
    """One zero-shot run: its tasks, its inputs (files, or a store's kept frames) and its model."""

    model: "EchoClip"
    tasks: dict[str, Any]
    files: list[Path] | None
    store: PathLike | None
    options: RunOptions
    progress: Progress
    prompts: PathLike | None = None

    @classmethod
    def start(cls, model: "EchoClip", use_case: str, task_names: Sequence[str], inputs: Sequence[PathLike] | None,
              store: PathLike | None, options: RunOptions, progress: Progress | None,
              prompts: PathLike | None = None, force: bool = False) -> "Scoring":
        """Everything checked: the tasks, the inputs or store, the model for this use case (its
        weights the store's, its numerics allowed, and not EchoCLIP-R unless ``force``)."""
        from ..tasks import check_zero_shot_model

        tasks = check_tasks(task_names, prompts)
        files = inputs_or_store(inputs, store)
        check_model(model, use_case, store)
        check_zero_shot_model(model, force)
        types = parse_clip_types(",".join(options.types(VIDEO_TYPES)), VIDEO_TYPES)  # never not_ultrasound
        return cls(model, tasks, files, store, options.replace(clip_types=types), progress or Silent(), prompts)

    @property
    def n_inputs(self) -> int | None:
        return len(self.files) if self.files is not None else None

    def prepare(self, name: str) -> "PreparedTask":
        """Task ``name`` with its prompts embedded (through the text cache)."""
        from ..tasks import prepare

        return prepare(self.model, self.tasks[name], str(self.prompts) if self.prompts else "default")

    def frame_sets(self) -> Iterator["FrameSet"]:
        """Per-video frame embeddings from a store that kept them, or from the embedding cache
        (:mod:`echoclip_cli.frame_cache`), or by embedding the files now (and caching them)."""
        from .. import tasks as T

        if self.store is not None:
            from ..store import read_store

            loaded = read_store(self.store, frames=True)
            for message in damage_notes(loaded):
                self.progress.warn(message)
            yield from T.frame_sets_from_store(loaded, self.model, self.options.clip_types)
            return
        yield from T.frame_sets_from_results(self._through_cache())

    def _through_cache(self) -> Iterator["VideoEmbedding"]:
        from .embed import embedded

        yield from embedded(self.model, self.files or [], self.options, self.progress)


def predict_ef(
    model: "EchoClip",
    inputs: Sequence[PathLike] | None = None,
    *,
    store: PathLike | None = None,
    options: RunOptions = DEFAULT,
    aggregation: str = "released",
    prompts: PathLike | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Zero-shot EF: an :class:`~echoclip_cli.tasks.EFVideo` per video, then an
    :class:`~echoclip_cli.tasks.EFStudy` per study (the mean of its videos). ``aggregation``:
    released (as the released code) or paper (the paper's variant)."""
    from .. import tasks as T

    if aggregation not in ("released", "paper"):
        raise UsageError(f"aggregation must be released or paper, not {aggregation!r}")
    run = Scoring.start(model, "predict-ef", ["ejection_fraction"], inputs, store, options, progress, prompts, force)
    prepared = run.prepare("ejection_fraction")
    yield from T.with_studies(T.ef_records(run.frame_sets(), model, prepared, aggregation))


def detect_devices(
    model: "EchoClip",
    inputs: Sequence[PathLike] | None = None,
    *,
    store: PathLike | None = None,
    options: RunOptions = DEFAULT,
    devices: Sequence[str] | None = None,
    thresholds: Thresholds = None,
    prompts: PathLike | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Implanted devices: a :class:`~echoclip_cli.tasks.BinaryVideo` per video and device, then a
    :class:`~echoclip_cli.tasks.BinaryStudy` per study and device. Calls (``detected``) only where a
    threshold exists: the published pacemaker one, or ``thresholds`` (a file or a mapping)."""
    from .. import tasks as T

    names = list(devices or DEVICE_TASKS)
    run = Scoring.start(model, "detect-devices", names, inputs, store, options, progress, prompts, force)
    user = thresholds_of(thresholds)
    prepared = [run.prepare(name) for name in run.tasks]
    yield from T.with_studies(T.binary_records(run.frame_sets(), model, prepared, user))


def zero_shot(
    model: "EchoClip",
    task: str,
    inputs: Sequence[PathLike] | None = None,
    *,
    store: PathLike | None = None,
    options: RunOptions = DEFAULT,
    prompts: PathLike | None = None,
    thresholds: Thresholds = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Any task of the prompt library (``echoclip_cli.load_prompts()``) or of ``prompts``:
    regression, binary or categorical records per video, then per study."""
    from .. import tasks as T

    run = Scoring.start(model, "zero-shot", [task], inputs, store, options, progress, prompts, force)
    user = thresholds_of(thresholds)
    prepared = run.prepare(task)
    mode = run.tasks[task].mode
    if mode == "regression":
        records: Iterator[Any] = T.regression_records(run.frame_sets(), model, prepared)
    elif mode == "binary":
        records = T.binary_records(run.frame_sets(), model, [prepared], user)
    else:
        records = T.categorical_records(run.frame_sets(), model, prepared)
    yield from T.with_studies(records)
