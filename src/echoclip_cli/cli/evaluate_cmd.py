"""``echoclip calibrate`` and ``echoclip evaluate``: score predictions against a site's labels."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .common import FormatOpt, OutputFormat, emit_records, info, report_failure, warn

if TYPE_CHECKING:
    from .. import evaluation as E


class Method(str, Enum):
    f1 = "f1"
    youden = "youden"


class Resample(str, Enum):
    video = "video"
    study = "study"


LabelsOpt = Annotated[
    Optional[Path],
    typer.Option("--labels", show_default=False,
                 help="CSV with a source (or study) column and label columns: ef, pacemaker, tavr, mitraclip, impella; "
                      "or the label records of `echoclip labels`."),
]
LabelsFromOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--labels-from", show_default=False,
                 help="Harvest the labels from this folder's SRs and report texts instead (as `echoclip labels`; "
                      "repeatable)."),
]
PredictionsOpt = Annotated[
    str,
    typer.Option("--predictions", help="JSONL/CSV from predict-ef / detect-devices ('-' for stdin).", show_default=False),
]
TasksOpt = Annotated[
    Optional[list[str]],
    typer.Option("--task", "-t", help="Only this task (repeatable; default: every task in both files)."),
]
MethodOpt = Annotated[Method, typer.Option("--method", help="Maximise F1 or Youden's J (sensitivity + specificity − 1).")]
OutOpt = Annotated[
    Optional[Path],
    typer.Option("--out", "-o", help="Thresholds JSON to write or update (other tasks kept); else JSON on stdout."),
]
BootstrapOpt = Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95 % CIs (0: none).", min=0)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Bootstrap random seed.")]
ByOpt = Annotated[Resample, typer.Option("--by", help="Resample videos, or whole studies (a study's videos together).")]
PlotOpt = Annotated[
    Optional[Path],
    typer.Option("--plot", help="Also draw the EF scatter and ROC curves to this image (needs matplotlib: the plot extra)."),
]

EVALUATE_COLUMNS = ["task", "metric", "value", "paper", "ci_low", "ci_high", "n", "positives", "threshold", "level"]
CALIBRATE_COLUMNS = ["task", "threshold", "method", "n", "positives", "auc", "sensitivity", "specificity", "f1"]


def _read_text(path: str | Path, what: str) -> str:
    from ..evaluation import LabelsError

    if str(path) == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path}: cannot read the {what} ({type(exc).__name__})") from None


def label_table(labels: Optional[Path], labels_from: Optional[list[Path]]) -> "E.Labels":
    """The labels: a file, or harvested from folders (conflicts and unreadable files said on stderr)."""
    from .. import evaluation as E
    from ..errors import UsageError

    if (labels is None) == (not labels_from):
        raise UsageError("give --labels FILE or --labels-from DIR (one of them)")
    if labels is not None:
        return E.read_labels(_read_text(labels, "labels"), str(labels))
    from .labels_cmd import harvested

    records = harvested(None, labels_from, tolerance=5.0)
    return E.labels_from_records([r.as_dict() for r in records], ", ".join(map(str, labels_from or [])))


def _joined(labels: Optional[Path], labels_from: Optional[list[Path]], predictions: str, tasks: Optional[list[str]],
            kind: str | None = None) -> "tuple[E.Joined, E.Labels]":
    """Read the labels and the predictions, join them, and say on stderr what did not match."""
    from .. import evaluation as E

    table = label_table(labels, labels_from)
    name = "stdin" if predictions == "-" else predictions
    records = E.read_predictions(_read_text(predictions, "predictions"), name)
    if not records:
        raise E.LabelsError(f"{name}: no usable prediction records (all failed, or not echoclip output)")
    if kind is not None and not tasks:
        both = [t for t in E.prediction_tasks(records, kind) if E.label_column(table, t)]
        if not both:
            raise E.LabelsError(f"no {kind} task is in both {name} and {table.name}",
                                hint=f"label columns: {', '.join(table.columns) or 'none'}")
        tasks = both
    joined = E.join(records, table, tasks)
    _report_join(joined)
    return joined, table


UNMATCHED_SHOWN = 10  # label keys named on stderr; the rest are counted


def _report_join(joined: "E.Joined") -> None:
    if joined.unmatched:
        shown = ", ".join(repr(k) for k in joined.unmatched_keys[:UNMATCHED_SHOWN])
        more = f" and {joined.unmatched - UNMATCHED_SHOWN} more" if joined.unmatched > UNMATCHED_SHOWN else ""
        warn(f"{joined.unmatched} of {joined.label_rows} label rows did not match a prediction "
             f"(by {joined.key}{', then by file name' if joined.key == 'source' else ''}): {shown}{more}")
    if joined.by_name:
        info(f"{joined.by_name} label rows matched by file name only")
    if joined.missing_labels:
        info(f"no labels for: {', '.join(joined.missing_labels)} (skipped)")
    for message in joined.warnings:
        warn(message)


def calibrate(
    predictions: PredictionsOpt,
    labels: LabelsOpt = None,
    labels_from: LabelsFromOpt = None,
    tasks: TasksOpt = None,
    method: MethodOpt = Method.f1,
    out: OutOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
) -> None:
    """Choose device thresholds from labelled data, for `detect-devices --thresholds`.

    Scores from `detect-devices` meet a labels CSV (0/1, true/false or yes/no per device); for
    each binary task the cut with the best F1 (or Youden's J) becomes the threshold, written with
    its n, positives, AUC, sensitivity, specificity and F1. Without --task every binary task in
    both files is calibrated. Calibrate on data you will not report results on.

    Examples:

        echoclip calibrate --labels labels.csv --predictions devices.jsonl --out thresholds.json

        echoclip calibrate --labels labels.csv --predictions devices.csv -t tavr --method youden -o t.json

        echoclip detect-devices --dir cal/ --format jsonl | echoclip calibrate --labels-from cal/ --predictions - > t.json
    """
    from .. import evaluation as E

    joined, _ = _joined(labels, labels_from, predictions, tasks, kind="binary")
    regression = [t for t, p in joined.pairs.items() if p.kind != "binary"]
    if regression:
        raise E.LabelsError(f"{', '.join(regression)} is not a binary task: calibrate sets device thresholds",
                            hint="use `echoclip evaluate` for EF")
    choices, refused = E.calibrate_each(joined.pairs, method.value)
    for task, why in refused.items():
        report_failure(f"{task}: no threshold: {why}")
    if not choices:
        raise typer.Exit(1)
    if out is None:
        sys.stdout.write(json.dumps(E.merge_thresholds({}, choices), indent=2) + "\n")
        if refused:
            raise typer.Exit(1)
        return
    existing = _existing_thresholds(out)
    out.write_text(json.dumps(E.merge_thresholds(existing, choices), indent=2) + "\n")
    info(f"wrote {out} ({', '.join(choices)})")
    emit_records([{"task": t, **c.as_json()} for t, c in choices.items()], fmt, columns=CALIBRATE_COLUMNS)
    if refused:
        raise typer.Exit(1)


def _existing_thresholds(path: Path) -> dict[str, Any]:
    from ..evaluation import LabelsError

    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelsError(f"{path}: cannot update it: not a thresholds JSON ({type(exc).__name__})",
                          hint="choose another --out or remove the file") from None
    if not isinstance(data, dict):
        raise LabelsError(f"{path}: cannot update it: not a JSON object of task thresholds")
    return data


def evaluate(
    predictions: PredictionsOpt,
    labels: LabelsOpt = None,
    labels_from: LabelsFromOpt = None,
    tasks: TasksOpt = None,
    bootstrap: BootstrapOpt = 1000,
    seed: SeedOpt = 0,
    by: ByOpt = Resample.video,
    plot: PlotOpt = None,
    fmt: FormatOpt = OutputFormat.auto,
) -> None:
    """Score EF and device predictions against labels, with bootstrap 95 % CIs and the paper's values.

    EF gets MAE, RMSE and R² (EF points); each device gets its ROC AUC and, where the predictions
    applied a threshold, sensitivity and specificity at it. The paper column is EchoCLIP's
    published result (EF MAE 7.1 on EchoNet-Dynamic; AUC MitraClip 0.97, TAVR 0.92, pacemaker
    0.84, Impella 0.98). When the labels name the machines (`echoclip labels` reads Manufacturer
    and ManufacturerModelName from the headers), every metric follows for each machine too.

    Examples:

        echoclip evaluate --labels labels.csv --predictions ef.jsonl

        echoclip evaluate --labels-from archive/ --predictions ef.jsonl

        echoclip evaluate --labels labels.csv --predictions devices.jsonl --by study --plot roc.png

        echoclip evaluate --labels labels.csv --predictions ef.csv --bootstrap 2000 --format csv > metrics.csv
    """
    from .. import evaluation as E

    joined, table = _joined(labels, labels_from, predictions, tasks)
    if by is Resample.study and not all(any(str(g) for g in p.groups) for p in joined.pairs.values()):
        raise E.LabelsError("--by study needs a study for every row (a study column in the labels or predictions)")
    metrics = E.evaluate(joined.pairs, n_boot=bootstrap, seed=seed, by_study=by is Resample.study)
    metrics += E.evaluate_by_machine(joined.pairs, table, n_boot=bootstrap, seed=seed, by_study=by is Resample.study)
    unit = "studies" if by is Resample.study else "videos"
    title = f"95 % CI: {bootstrap} bootstrap resamples of {unit}" if bootstrap else "no bootstrap CIs (--bootstrap 0)"
    columns = EVALUATE_COLUMNS + (["machine"] if any(m.machine for m in metrics) else [])
    emit_records([m.as_record() for m in metrics], fmt, columns=columns, title=title)
    if plot is not None:  # after the metrics: a missing extra costs the plot, never the numbers
        if _has_matplotlib():
            _plot(joined.pairs, plot)
            info(f"wrote {plot}")
        else:
            warn(f"no plot written: {PLOT_HINT}")
            raise typer.Exit(1)


PLOT_HINT = "--plot needs matplotlib: pip install 'echoclip[plot]'"


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plot(pairs: dict[str, "E.Paired"], path: Path) -> None:
    """EF scatter with the identity line, and one ROC curve per binary task, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import evaluation as E

    regression = [p for p in pairs.values() if p.kind == "regression"]
    binary = [p for p in pairs.values() if p.kind == "binary"]
    panels = len(regression) + (1 if binary else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 5), squeeze=False)
    for ax, pair in zip(axes[0], regression):
        low = float(min(pair.y_true.min(), pair.y_pred.min()))
        high = float(max(pair.y_true.max(), pair.y_pred.max()))
        ax.scatter(pair.y_true, pair.y_pred, s=8, alpha=0.5)
        ax.plot([low, high], [low, high], "k--", linewidth=1, label="identity")
        ax.set(xlabel=f"labelled {pair.task}", ylabel=f"predicted {pair.task}",
               title=f"{pair.task}: MAE {E.mae(pair.y_true, pair.y_pred):.2f} (n={pair.n})")
        ax.legend(loc="upper left")
    if binary:
        ax = axes[0][-1]
        for pair in binary:
            fpr, tpr, _ = E.roc_curve(pair.y_true, pair.y_pred)
            auc = E.roc_auc(pair.y_true, pair.y_pred)
            ax.plot(fpr, tpr, label=f"{pair.task} AUC {auc:.2f}")
        ax.plot([0, 1], [0, 1], "k:", linewidth=1)
        ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise E.LabelsError(f"{path}: cannot write the plot ({type(exc).__name__})") from None
    finally:
        plt.close(fig)
