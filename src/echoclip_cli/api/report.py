"""The HTML report: EF and device scores of every clip from one embedding pass, as static pages.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip")
    >>> studies = echoclip_cli.report(model, ["studies/"], out="report/")
    >>> [s.wide_row(["pacemaker"]) for s in studies]                  # one row per study
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..defaults import DEVICE_TASKS
from ..errors import EchoclipError
from ..options import DEFAULT, RunOptions
from .common import PathLike, Progress
from .zeroshot import Scoring, Thresholds, thresholds_of

if TYPE_CHECKING:
    from ..inference import EchoClip
    from ..report_html import StudyReport
    from ..tasks import FrameSet, PreparedTask


def report(
    model: "EchoClip",
    inputs: Sequence[PathLike] | None = None,
    *,
    out: PathLike,
    store: PathLike | None = None,
    options: RunOptions = DEFAULT,
    devices: Sequence[str] | None = None,
    thresholds: Thresholds = None,
    force: bool = False,
    animations: bool = True,
    progress: Progress | None = None,
) -> "list[StudyReport]":
    """Score every clip for EF and devices in one embedding pass and write a static HTML report
    to ``out`` (``index.html`` + a page per study, :mod:`echoclip_cli.report_html`); returns the
    studies (``wide_row(tasks)`` is the one-row-per-study summary). ``animations`` shows the
    frames the model received (each clip is decoded again)."""
    from .. import report_html as R

    tasks = list(devices or DEVICE_TASKS)
    run = Scoring.start(model, "zero-shot", ["ejection_fraction", *tasks], inputs, store, options, progress,
                        force=force)
    user = thresholds_of(thresholds)
    ef, prepared = run.prepare("ejection_fraction"), [run.prepare(t) for t in tasks]
    cfg = run.options.sampled().apply(model.preprocess) if animations else None
    rows = [_row(fs, model, ef, prepared, user, cfg) for fs in run.frame_sets()]
    studies = R.group(rows)
    R.write_html(studies, Path(out), tasks, {t: user.get(t, run.tasks[t].threshold) for t in tasks})
    return studies


def _row(fs: "FrameSet", model: "EchoClip", ef: "PreparedTask", prepared: list["PreparedTask"],
         thresholds: dict[str, float], cfg: Any) -> Any:
    """One clip's line of the report: its type, EF, device scores and (with ``cfg``) its frames."""
    from .. import report_html as R
    from .. import tasks as T
    from ..records import identity

    ef_record = next(T.ef_records([fs], model, ef))
    row = R.ClipRow(source=fs.source, study=ef_record.study, clip_type=fs.meta.get("clip_type"),
                    clip_reason=fs.meta.get("clip_reason"), skipped=fs.skipped, error=fs.error,
                    ef=ef_record.ef, identity=identity(fs.meta, fs.source))
    for record in T.binary_records([fs], model, prepared, thresholds):
        if record.ok:
            row.devices[record.task] = {"score": record.score, "threshold": record.threshold,
                                        "detected": record.detected}
    if cfg is not None and fs.error is None:
        row.animation = _animation(fs.source, cfg)
    return row


def _animation(source: str, cfg: Any) -> str | None:
    """The frames the model received for ``source`` (decoded again: cheap next to embedding)."""
    from ..media import load_clip
    from ..report_html import animation

    try:
        return animation(load_clip(source, cfg).frames.numpy())
    except (EchoclipError, OSError):
        return None  # gone since (a store's source) or unreadable: the page says what it can
