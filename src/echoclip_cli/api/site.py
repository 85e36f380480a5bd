"""A site's own labels and heads: harvest labels from the archive, fit a head on the site's embeddings.

    >>> import echoclip_cli
    >>> labels = echoclip_cli.harvest_labels(["archive/"])           # LabelRecord per value, settled per study
    >>> model = echoclip_cli.load_model(store="archive.store")
    >>> result = echoclip_cli.fit(model, "ef", labels=labels, store="archive.store")
    >>> result.head.save("ef.head"); [m.as_dict() for m in result.metrics]
    >>> echoclip_cli.predict_ef(model, store="archive.store", heads="ef.head")   # head_ef, ef_low, ef_high, abstain

The parts are in :mod:`echoclip_cli.site`; these calls check their arguments (usage errors before
any work) and join them up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import UsageError
from ..options import FitOptions, LabelOptions
from .common import PathLike, Progress, Silent, given_paths, store_header

if TYPE_CHECKING:
    from ..dicomweb import Archive
    from ..evaluation import Labels
    from ..inference import EchoClip
    from ..prompts import Task
    from ..site import EmbeddingTable, FitResult, Head, LabelRecord

TASK_ALIASES = {"ef": "ejection_fraction"}
LabelsArg = Any  # a labels file (CSV, or label records), an evaluation.Labels, or LabelRecords


def harvest_labels(inputs: "Sequence[PathLike] | Archive", *,
                   options: LabelOptions = LabelOptions()) -> "list[LabelRecord]":
    """Label records from measurement SRs and report texts under ``inputs`` (files or folders),
    or from the structured reports of a DICOMweb :class:`~echoclip_cli.dicomweb.Archive`'s
    studies: one per harvested value (EF with its method and unit; devices from report text),
    each on its study; per study and measurement one is ``primary`` (its label) unless the values
    conflict (then each says so). Unreadable files, and SRs or studies the server cannot give,
    are records with ``error`` set."""
    from ..dicomweb import Archive
    from ..site import harvest_paths

    if isinstance(inputs, Archive):
        return _harvest_archive(inputs, options)
    return harvest_paths(given_paths(inputs, "SR files, report texts or folders"), options)


def _harvest_archive(archive: "Archive", options: LabelOptions) -> "list[LabelRecord]":
    """Every structured report of the archive's studies, fetched whole (SRs are small), read as
    :func:`harvest_labels` reads SR files; each named by its instance URL."""
    from ..dicomweb import ServerError
    from ..errors import MediaError
    from ..site import LabelRecord, labels_from_dataset, settle
    from ..site.context import context_of
    from .archive import list_studies

    server = archive.connect()
    try:
        uids = [study.uid for study in list_studies(archive, server)]
    except ServerError as exc:
        raise MediaError(exc.message) from None
    records: list[LabelRecord] = []
    for uid in uids:
        try:
            reports = server.study_instances(uid, sop_classes=SR_CLASS_PREFIX)
        except ServerError as exc:
            records.append(LabelRecord(source=f"{server.url}/studies/{uid}", study=uid, error=exc.message))
            continue
        for series, sop in reports:
            source = server.instance_url(uid, series, sop)
            try:
                ds = server.instance(uid, series, sop)
            except ServerError as exc:
                records.append(LabelRecord(source=source, study=uid, error=exc.message))
                continue
            context = context_of(ds, uid, keep_phi=options.keep_phi, salt=options.salt)
            try:
                records += labels_from_dataset(ds, source, context)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                records.append(LabelRecord(source=source, study=context.study,
                                           error=f"{source}: a damaged SR content tree ({type(exc).__name__})"))
    return settle(records, options.tolerance)


SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # the structured report storage classes


def load_head(path: PathLike) -> "Head":
    """A head file written by ``echoclip fit`` (``Head.predict`` on embeddings; ``heads=`` of the
    zero-shot calls)."""
    from ..site import Head

    return Head.load(path)


def fit_task(task: str, prompts: PathLike | None = None) -> "Task":
    """The prompt-library task a head is fitted for (``ef`` names EF); regression or binary only."""
    from .zeroshot import check_tasks

    name = TASK_ALIASES.get(task, task)
    found = check_tasks([name], prompts)[name]
    if found.mode not in ("regression", "binary"):
        raise UsageError(f"{name!r} is a {found.mode} task: heads are fitted for regression or binary tasks")
    return found


def check_fit(task: str, store: PathLike | None, embeddings: PathLike | None,
              prompts: PathLike | None = None) -> "Task":
    """Everything about a fit that can be checked before a model loads (usage errors)."""
    found = fit_task(task, prompts)
    if (store is None) == (embeddings is None):
        raise UsageError("give --store or --embeddings (one of them)")
    if store is not None:
        store_header(store)
    elif not Path(embeddings).is_file():  # type: ignore[arg-type]
        raise UsageError(f"no such embeddings file: {embeddings}")
    return found


def fit(
    model: "EchoClip | None",
    task: str,
    *,
    labels: LabelsArg,
    store: PathLike | None = None,
    embeddings: PathLike | None = None,
    options: FitOptions = FitOptions(),
    prompts: PathLike | None = None,
    progress: Progress | None = None,
) -> "FitResult":
    """Fit a head for ``task`` (``ef``, a device, any regression or binary task) on the video
    embeddings of ``store`` (or an ``embeddings`` file, :mod:`echoclip_cli.site.embeddings`) and
    ``labels``; returns the head (``.head.save(path)``) and its metrics beside the zero-shot ones.
    ``model`` gives the zero-shot score feature (its weights must have made the embeddings); with
    ``options.zero_shot`` off it may be None."""
    from .. import evaluation as E
    from ..site import fit_head, training_set

    found = check_fit(task, store, embeddings, prompts)
    table = _embeddings(store, embeddings)
    if options.zero_shot:
        if model is None:
            raise UsageError("the zero-shot feature needs the model", hint="pass the model, or FitOptions(zero_shot=False)")
        if model.weights_sha256 != table.weights_sha256:
            raise UsageError(f"{table.source} holds embeddings of weights {table.weights_sha256[:12]}…, not "
                             f"{model.bundle.name!r} ({model.weights_sha256[:12]}…)")
    table_labels = _labels(labels)
    column = E.label_column(table_labels, found.name)
    if column is None:
        raise E.LabelsError(f"{table_labels.name}: no label column for {found.name}",
                            hint=f"label columns: {', '.join(table_labels.columns) or 'none'}")
    data = training_set(table, table_labels, column, found.mode)
    if options.zero_shot:
        data = _with_zero_shot(data, model, found, prompts)
    provenance = {"weights": table.weights, "weights_sha256": table.weights_sha256,
                  "preprocess_digest": table.preprocess_digest, "label_source": table_labels.name,
                  "label_column": column, "embeddings": table.source, "prompts": str(prompts or "default"),
                  "echoclip_version": _version()}
    note = (progress or Silent()).note
    return fit_head(data, found.name, found.mode, options, provenance, note)


def _embeddings(store: PathLike | None, embeddings: PathLike | None) -> "EmbeddingTable":
    from ..media.classify import VIDEO_TYPES
    from ..site import from_store, read_embeddings

    if embeddings is not None:
        return read_embeddings(embeddings)
    from ..store import read_store

    assert store is not None
    return from_store(read_store(store), VIDEO_TYPES)


def _labels(labels: LabelsArg) -> "Labels":
    from .. import evaluation as E

    if isinstance(labels, E.Labels):
        return labels
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise UsageError(f"no such labels file: {path}")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise E.LabelsError(f"{path}: cannot read the labels ({type(exc).__name__})") from None
        return E.read_labels(text, str(path))
    return E.labels_from_records([r.as_dict() if hasattr(r, "as_dict") else r for r in labels], "harvested labels")


def _with_zero_shot(data: Any, model: Any, task: "Task", prompts: PathLike | None) -> Any:
    import dataclasses

    from ..site import zero_shot_feature
    from ..tasks import prepare

    prepared = prepare(model, task, str(prompts) if prompts else "default")
    return dataclasses.replace(data, zero_shot=zero_shot_feature(task.mode, data.vectors, prepared.prompts,
                                                                  prepared.values))


def _version() -> str:
    from .. import __version__

    return __version__
