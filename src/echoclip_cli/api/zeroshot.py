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
from .archive import reads_archives
from .common import PathLike, Progress, Silent, check_model, damage_notes, inputs_or_store

if TYPE_CHECKING:
    from ..inference import EchoClip
    from ..records import Record, VideoEmbedding
    from ..site import Head
    from ..tasks import FrameSet, PreparedTask

Thresholds = PathLike | Mapping[str, float] | None
Heads = "Head | PathLike | Sequence[Head | PathLike] | None"


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
    heads: dict[str, "Head"] | None = None  # task -> the head whose values records carry beside the zero-shot's

    @classmethod
    def start(cls, model: "EchoClip", use_case: str, task_names: Sequence[str], inputs: Sequence[PathLike] | None,
              store: PathLike | None, options: RunOptions, progress: Progress | None,
              prompts: PathLike | None = None, force: bool = False, heads: Any = None) -> "Scoring":
        """Everything checked: the tasks, the inputs or store, the model for this use case (its
        weights the store's, its numerics allowed, and not EchoCLIP-R unless ``force``), and each
        head (one of these tasks, fitted on this model's weights and preprocessing)."""
        from ..tasks import check_zero_shot_model

        tasks = check_tasks(task_names, prompts)
        files = inputs_or_store(inputs, store)
        check_model(model, use_case, store)
        check_zero_shot_model(model, force)
        bound = bind_heads(heads, tasks, model, _digest(model, store, options))
        return cls(model, tasks, files, store, options.replace(clip_types=scored_types(options)), progress or Silent(),
                   prompts, bound)

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


def _digest(model: "EchoClip", store: PathLike | None, options: RunOptions) -> str:
    """The preprocessing digest of the embeddings a run scores: the store's, else the model's with
    the run's sampling."""
    if store is not None:
        from .common import store_header

        return str(store_header(store)["preprocess"]["digest"])
    return options.sampled().apply(model.preprocess).digest()


def bind_heads(heads: Any, tasks: Mapping[str, Any], model: "EchoClip", digest: str) -> dict[str, "Head"]:
    """{task: head} of ``heads`` (head files or loaded heads), each checked: a task of this run, of
    the task's mode, fitted on ``model``'s weights and preprocessing ``digest`` (a usage error)."""
    from ..site import Head

    if heads is None:
        return {}
    given = [heads] if isinstance(heads, (str, Path)) or not isinstance(heads, Sequence) else list(heads)
    bound: dict[str, "Head"] = {}
    for item in given:
        head = item if not isinstance(item, (str, Path)) else Head.load(item)
        if head.task not in tasks:
            raise UsageError(f"head {head.name!r} is for {head.task!r}, not {', '.join(tasks)}")
        if tasks[head.task].mode != head.kind:
            raise UsageError(f"head {head.name!r} is a {head.kind} head; {head.task!r} is {tasks[head.task].mode}")
        if head.task in bound:
            raise UsageError(f"two heads for {head.task!r}: give one")
        head.check(model.weights_sha256, digest, f"weights {model.bundle.name!r}")
        bound[head.task] = head
    return bound


def scored_types(options: RunOptions) -> tuple[str, ...]:
    """The clip types a zero-shot call scores (``options.clip_types``, 2D by default; never a
    non-ultrasound clip)."""
    return parse_clip_types(",".join(options.types(VIDEO_TYPES)), VIDEO_TYPES)


@reads_archives(scored_types)
def predict_ef(
    model: "EchoClip",
    inputs: Sequence[PathLike] | None = None,
    *,
    store: PathLike | None = None,
    options: RunOptions = DEFAULT,
    aggregation: str = "released",
    prompts: PathLike | None = None,
    force: bool = False,
    heads: Heads = None,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Zero-shot EF: an :class:`~echoclip_cli.tasks.EFVideo` per video, then an
    :class:`~echoclip_cli.tasks.EFStudy` per study (the mean of its videos). ``aggregation``:
    released (as the released code) or paper (the paper's variant). ``heads``: an EF head (a file
    from ``echoclip fit`` or a loaded one) whose value, interval and abstention every record carries
    beside the zero-shot EF."""
    from .. import tasks as T

    if aggregation not in ("released", "paper"):
        raise UsageError(f"aggregation must be released or paper, not {aggregation!r}")
    run = Scoring.start(model, "predict-ef", ["ejection_fraction"], inputs, store, options, progress, prompts, force,
                        heads)
    prepared = run.prepare("ejection_fraction")
    head = (run.heads or {}).get("ejection_fraction")
    yield from T.with_studies(T.ef_records(run.frame_sets(), model, prepared, aggregation, head))


@reads_archives(scored_types)
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
    heads: Heads = None,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Implanted devices: a :class:`~echoclip_cli.tasks.BinaryVideo` per video and device, then a
    :class:`~echoclip_cli.tasks.BinaryStudy` per study and device. Calls (``detected``) only where a
    threshold exists: the published pacemaker one, or ``thresholds`` (a file or a mapping).
    ``heads``: device heads (one per device at most) whose probability and prediction set records
    carry beside the score."""
    from .. import tasks as T

    names = list(devices or DEVICE_TASKS)
    run = Scoring.start(model, "detect-devices", names, inputs, store, options, progress, prompts, force, heads)
    user = thresholds_of(thresholds)
    prepared = [run.prepare(name) for name in run.tasks]
    yield from T.with_studies(T.binary_records(run.frame_sets(), model, prepared, user, run.heads))


@reads_archives(scored_types)
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
    heads: Heads = None,
    progress: Progress | None = None,
) -> Iterator["Record"]:
    """Any task of the prompt library (``echoclip_cli.load_prompts()``) or of ``prompts``:
    regression, binary or categorical records per video, then per study. ``heads``: the task's
    head (regression or binary tasks), its values beside the zero-shot ones."""
    from .. import tasks as T

    run = Scoring.start(model, "zero-shot", [task], inputs, store, options, progress, prompts, force, heads)
    user = thresholds_of(thresholds)
    prepared = run.prepare(task)
    mode = run.tasks[task].mode
    if mode == "regression":
        records: Iterator[Any] = T.regression_records(run.frame_sets(), model, prepared, head=(run.heads or {}).get(task))
    elif mode == "binary":
        records = T.binary_records(run.frame_sets(), model, [prepared], user, run.heads)
    else:
        records = T.categorical_records(run.frame_sets(), model, prepared)
    yield from T.with_studies(records)
