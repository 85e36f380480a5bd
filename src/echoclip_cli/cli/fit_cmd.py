"""``echoclip fit``: train a head on a site's own embeddings and labels, with intervals and abstention."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..defaults import ZERO_SHOT_WEIGHTS
from .common import FormatOpt, OutputFormat, emit_records, info, weights_option
from .evaluate_cmd import LabelsFromOpt, LabelsOpt, label_table
from .inputs import QuietOpt
from .models import open_model
from .progress import progress_bar

if TYPE_CHECKING:
    from ..inference import EchoClip

FIT_COLUMNS = ["task", "model", "split", "metric", "value", "n"]
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="ef, a device (pacemaker, tavr, mitraclip, impella) or any "
                                                            "regression or binary task of the prompt library.")]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="The store whose video embeddings to fit on.")]
EmbeddingsOpt = Annotated[Optional[Path], typer.Option(
    "--embeddings", help="Or embeddings made elsewhere: a .npz with embeddings (N×E), ids (N), optional studies (N), "
                         "weights_sha256 and preprocess_digest.")]
WeightsFit = weights_option(ZERO_SHOT_WEIGHTS)
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="The head file to write (safetensors + JSON provenance).")]


def fit(
    task: TaskOpt = "ef",
    store: StoreOpt = None,
    embeddings: EmbeddingsOpt = None,
    labels: LabelsOpt = None,
    labels_from: LabelsFromOpt = None,
    out: OutOpt = Path("head.safetensors"),
    coverage: Annotated[float, typer.Option("--coverage", min=0.5, max=0.999,
                                            help="Coverage of the conformal intervals (EF: ef_low … ef_high).")] = 0.9,
    calibration: Annotated[float, typer.Option("--calibration", min=0.05, max=0.9,
                                               help="Share of the labelled studies held out to calibrate.")] = 0.25,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds choosing the penalty.")] = 5,
    abstain_quantile: Annotated[float, typer.Option(
        "--abstain-quantile", min=0.5, max=0.9999,
        help="Abstain beyond this quantile of the calibration set's distances to the training data.")] = 0.99,
    zero_shot: Annotated[bool, typer.Option("--zero-shot/--no-zero-shot",
                                            help="Use the zero-shot score as one more feature (loads the text tower).")] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the study splits.")] = 0,
    weights: WeightsFit = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Prompt file (echoclip TOML or upstream JSON).")] = None,
    fmt: FormatOpt = OutputFormat.auto,
    quiet: QuietOpt = False,
) -> None:
    """Fit a head on a site's own labelled studies: ridge for EF, logistic regression for findings.

    The features are each video's embedding (from --store, or --embeddings made elsewhere) and the
    zero-shot score; the penalty is chosen by cross-validation over whole studies. A share of the
    labelled studies (--calibration) is held out: it sets the split-conformal interval (EF:
    ef_low … ef_high at --coverage; findings: a prediction set) and the distance beyond which an
    input abstains. stdout gets the cross-validated and held-out metrics beside the zero-shot
    ones; the head file records the weights, preprocessing and labels it was fitted on. Use it
    with `predict-ef --head`, `detect-devices --head` or `zero-shot --head`.

    Examples:

        echoclip fit --task ef --store archive.store --labels-from archive/ --out ef.head

        echoclip fit --task pacemaker --store archive.store --labels labels.jsonl --out pacer.head

        echoclip fit --task ef --embeddings vectors.npz --labels ef.csv --no-zero-shot --out ef.head
    """
    from .. import api
    from ..options import FitOptions

    options = FitOptions(coverage=coverage, calibration=calibration, folds=folds, abstain_quantile=abstain_quantile,
                         zero_shot=zero_shot, seed=seed)
    api.check_fit(task, store, embeddings, prompts)
    _check_out(out)
    table = label_table(labels, labels_from)
    model = _model(weights, store, embeddings, quiet) if zero_shot else None
    with progress_bar(quiet, "studies") as bar:
        result = api.fit(model, task, labels=table, store=store, embeddings=embeddings, options=options,
                         prompts=prompts, progress=bar)
    result.head.save(out)
    head = result.head
    info(f"wrote {out}: {head.task} head on {head.provenance['n']} videos of {head.provenance['n_studies']} studies "
         f"(penalty {head.provenance['alpha']:.3g}; {head.provenance['n_calibration']} held out: "
         + (f"±{head.quantile:.2f} at {coverage:g} coverage" if head.kind == "regression" else f"sets at {coverage:g}")
         + ")")
    emit_records([m.as_dict() for m in result.metrics], fmt, columns=FIT_COLUMNS,
                 title="head (cross-validated and held out) beside the zero-shot score")


def _check_out(out: Path) -> None:
    from ..errors import UsageError

    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"--out {out}: name a file in an existing folder")


def _model(weights: Optional[str], store: Optional[Path], embeddings: Optional[Path], quiet: bool) -> "EchoClip":
    """The model whose text tower gives the zero-shot feature: --weights, the store's, or the
    installed weights that made the embeddings file."""
    if embeddings is not None and weights is None:
        weights = _weights_of(embeddings)
    return open_model(weights, default=ZERO_SHOT_WEIGHTS, store=store, device="cpu", precision="fp32",
                      quiet=quiet, lazy=True)


def _weights_of(embeddings: Path) -> str:
    from .. import weights as w
    from ..errors import UsageError
    from ..site import read_embeddings

    table = read_embeddings(embeddings)
    bundle = w.installed_by_sha256(table.weights_sha256, prefer=table.weights or None)
    if bundle is None:
        raise UsageError(f"{embeddings}: the weights that made these embeddings ({table.weights_sha256[:12]}…) are "
                         "not installed", hint="install them, or fit without the zero-shot feature: --no-zero-shot")
    return bundle.name
