"""The HTML report: EF and device scores of every clip from one embedding pass, as static pages.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip")
    >>> studies = echoclip_cli.report(model, ["studies/"], out="report/")
    >>> [s.wide_row(["pacemaker"]) for s in studies]                  # one row per study
    >>> echoclip_cli.report(model, ["studies/"], out="fast/", content=echoclip_cli.ReportContent(maps=False))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..defaults import DEVICE_TASKS
from ..errors import EchoclipError, UsageError
from ..options import DEFAULT, RunOptions
from .common import PathLike, Progress
from .archive import reads_archives
from .zeroshot import Scoring, Thresholds, scored_types, thresholds_of

if TYPE_CHECKING:
    from ..inference import EchoClip
    from ..report_html import StudyReport
    from ..tasks import FrameSet, PreparedTask


@dataclass(frozen=True)
class ReportContent:
    """What the study pages show besides the numbers (one value, like :class:`RunOptions`).

    animations: the frames the model received, as an animation (each clip is decoded again).
    maps: the evidence behind each scored clip's numbers: the PromptCAM overlay
    (:mod:`echoclip_cli.promptcam`) of the frame that scored highest for each device task with a
    threshold, and of the frames whose own EF is nearest to and furthest from the clip's.
    heads: heads for EF or the devices (``echoclip fit``), whose values, intervals (or sets) and
    abstentions the pages show beside the zero-shot numbers.
    sentences: each study's five nearest sentences: ``auto`` (EchoCLIP-R's report sentences when
    its weights (``echo-clip-r``, else another bundle with the template tokenizer) and their
    template vocabulary are installed, embedding the clips with them too, else the prompt library), ``prompts`` (the prompt library, with the report's
    model) or ``none``.
    """

    animations: bool = True
    maps: bool = True
    sentences: str = "auto"
    heads: tuple[Any, ...] = ()  # heads (files from `echoclip fit`, or loaded): their values beside the zero-shot ones

    def __post_init__(self) -> None:
        if self.sentences not in SENTENCE_SOURCES:
            raise UsageError(f"sentences must be one of {', '.join(SENTENCE_SOURCES)}, not {self.sentences!r}")


SENTENCE_SOURCES = ("auto", "prompts", "none")
N_SENTENCES = 5  # nearest sentences listed per study


@reads_archives(scored_types, together=True)
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
    content: ReportContent = ReportContent(),
    progress: Progress | None = None,
) -> "list[StudyReport]":
    """Score every clip for EF and devices in one embedding pass and write a static HTML report
    to ``out`` (``index.html`` + a page per study, :mod:`echoclip_cli.report_html`); returns the
    studies (``wide_row(tasks)`` is the one-row-per-study summary). ``content`` chooses what the
    pages show besides the numbers (:class:`ReportContent`: animations, PromptCAM maps, nearest
    sentences; all by default)."""
    from .. import report_html as R

    check_out(out)
    tasks = list(devices or DEVICE_TASKS)
    run = Scoring.start(model, "zero-shot", ["ejection_fraction", *tasks], inputs, store, options, progress,
                        force=force, heads=list(content.heads))
    user = thresholds_of(thresholds)
    ef, prepared = run.prepare("ejection_fraction"), [run.prepare(t) for t in tasks]
    called = {t: user.get(t, run.tasks[t].threshold) for t in tasks}
    cfg = run.options.sampled().apply(model.preprocess)
    evidence = Evidence(model, ef, [p for p in prepared if called[p.task.name] is not None]) if content.maps else None
    heads = run.heads or {}
    rows = [_row(fs, model, ef, prepared, user, cfg, content.animations, evidence, heads) for fs in run.frame_sets()]
    studies = R.group(rows)
    if content.sentences != "none":
        nearest_sentences(model, studies, run, content.sentences == "auto")
    R.write_html(studies, Path(out), tasks, called, keep_phi=run.options.keep_phi)
    return studies


def check_out(out: PathLike) -> None:
    """The report folder may exist (it is written into) but must not be a file: refused before
    anything is embedded, not after."""
    if Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out {out} is a file, not a folder for the report",
                         hint="name a new or existing folder")


def _row(fs: "FrameSet", model: "EchoClip", ef: "PreparedTask", prepared: list["PreparedTask"],
         thresholds: dict[str, float], cfg: Any, animations: bool, evidence: "Evidence | None",
         heads: dict[str, Any]) -> Any:
    """One clip's line of the report: its type, EF, device scores, (with ``animations``) its
    frames as prepared by ``cfg`` and (with ``evidence``) the maps behind its numbers."""
    import numpy as np

    from .. import report_html as R
    from .. import tasks as T
    from ..records import identity

    ef_record = next(T.ef_records([fs], model, ef, head=heads.get("ejection_fraction")))
    row = R.ClipRow(source=fs.source, study=ef_record.study, clip_type=fs.meta.get("clip_type"),
                    clip_reason=fs.meta.get("clip_reason"), skipped=fs.skipped, error=fs.error,
                    ef=ef_record.ef, identity=identity(fs.meta, fs.source),
                    **{k: fs.meta.get(k) or None for k in ("study_date", "patient_key", "modality", "manufacturer")})
    if ef_record.head is not None:
        row.heads["ejection_fraction"] = {"value": ef_record.head_ef, "low": ef_record.ef_low,
                                          "high": ef_record.ef_high, "abstain": ef_record.abstain,
                                          "reason": ef_record.abstain_reason}
    for record in T.binary_records([fs], model, prepared, thresholds, heads):
        if record.ok:
            row.devices[record.task] = {"score": record.score, "threshold": record.threshold,
                                        "detected": record.detected}
            if record.head is not None:
                row.heads[record.task] = {"value": record.head_probability, "set": record.head_set,
                                          "abstain": record.abstain, "reason": record.abstain_reason}
    scored = fs.error is None and fs.skipped is None and fs.frames is not None
    if scored:
        row.embedding = np.asarray(fs.frames, dtype=np.float32).mean(axis=0)
    wants_maps = evidence is not None and scored and ef_record.ef is not None
    if fs.error is None and (animations or wants_maps):
        frames = _frames(fs.source, cfg)
        if frames is not None and animations:
            row.animation = R.animation(frames.numpy())
        if frames is not None and wants_maps:
            assert evidence is not None and ef_record.ef is not None
            row.evidence = evidence.of(fs, frames, ef_record.ef)
    return row


def _frames(source: str, cfg: Any) -> Any:
    """The frames the model received for ``source`` (decoded again: cheap next to embedding)."""
    from ..media import load_clip

    try:
        return load_clip(source, cfg).frames
    except (EchoclipError, OSError):
        return None  # gone since (a store's source) or unreadable: the page says what it can


class Evidence:
    """The PromptCAM overlays behind a clip's numbers: for each device task with a threshold, the
    frame that scored highest; for EF, the frames whose own estimate is nearest to and furthest
    from the clip's (each map explains that frame's own estimate's prompts)."""

    def __init__(self, model: "EchoClip", ef: "PreparedTask", devices: Sequence["PreparedTask"]) -> None:
        self.model, self.ef, self.devices = model, ef, list(devices)

    def of(self, fs: "FrameSet", frames: Any, clip_ef: float) -> list[dict[str, Any]]:
        """Overlays (``title``, ``caption``, ``frame``, ``image`` as a data URI) of one clip whose
        sampled frames are ``frames`` ((T, 3, S, S) uint8, in ``fs``'s order)."""
        from ..preprocess import to_model_input
        from ..promptcam import overlay
        from ..report_html import png_uri
        from .explain import frame_maps

        assert fs.frames is not None
        if frames.shape[0] != fs.frames.shape[0]:
            return []  # the file changed since its embeddings were made: no map would match them
        picks = self._picks(fs, clip_ef)
        rows = [row for _, _, row, _ in picks]
        images = to_model_input(frames[rows], self.model.preprocess)
        maps = frame_maps(self.model, images, [targets for _, _, _, targets in picks])
        indices = [int(i) for i in fs.meta.get("frame_indices", range(fs.frames.shape[0]))]
        out = []
        for k, (title, caption, row, _) in enumerate(picks):
            image = overlay(frames[row].permute(1, 2, 0).numpy(), maps.cam[k])
            out.append({"title": title, "caption": f"frame {indices[row]}: {caption}", "frame": indices[row],
                        "image": png_uri(image)})
        return out

    def _picks(self, fs: "FrameSet", clip_ef: float) -> list[tuple[str, str, int, Any]]:
        """(title, caption, frame row, target prompt embeddings) of each map to draw."""
        import numpy as np

        from ..zeroshot import regression
        from .explain import value_prompts

        assert fs.frames is not None and self.ef.prompts is not None and self.ef.values is not None
        picks = []
        for p in self.devices:
            assert p.prompts is not None
            scores = (fs.frames.astype(np.float64) @ p.prompts.astype(np.float64).T).mean(axis=1)  # T
            best = int(np.argmax(scores))
            picks.append((p.task.name, f"scored highest ({scores[best]:.3f})", best, p.prompts))
        own = regression(fs.frames, self.ef.prompts, self.ef.values).single_frame_estimates  # T
        gap = np.abs(own - clip_ef)
        nearest, furthest = int(np.argmin(gap)), int(np.argmax(gap))
        for row, which in ((nearest, "nearest to"), (furthest, "furthest from")):
            if row == nearest and which == "furthest from":
                continue  # every frame agrees: one map says it
            _, prompts = value_prompts(self.ef, float(own[row]))
            picks.append(("EF", f"its own EF {own[row]:.0f} % is the {which} the clip's {clip_ef:.0f} %", row, prompts))
        return picks


# --------------------------------------------------------------------------- nearest sentences


def nearest_sentences(model: "EchoClip", studies: Sequence["StudyReport"], run: Scoring, retrieval: bool) -> None:
    """Each study's :data:`N_SENTENCES` nearest sentences (``study.sentences``), by cosine with the
    normalised mean of its scored clips' embeddings: EchoCLIP-R's report sentences when
    ``retrieval`` and they are installed (the clips embedded with EchoCLIP-R too), else the
    prompt library's sentences with ``model``."""
    found = _retrieval_sentences(model, studies, run) if retrieval else None
    if found is None:
        from ..prompts import load_prompts

        texts = list(dict.fromkeys(t for task in load_prompts().values() for t in task.texts()))
        vectors = {id(c): c.embedding for s in studies for c in s.scored if c.embedding is not None}
        found = (model, texts, vectors, "the prompt library")
    sentence_model, texts, vectors, source = found
    from .explain import embed_prompts

    embedded = embed_prompts(sentence_model, texts)  # K,E
    for study in studies:
        study.sentence_source = source
        study.sentences = _top(study, vectors, texts, embedded)


def _top(study: "StudyReport", vectors: dict[int, Any], texts: list[str], embedded: Any) -> list[tuple[str, float]]:
    import numpy as np

    from ..zeroshot import normalise

    members = [vectors[id(c)] for c in study.scored if vectors.get(id(c)) is not None]
    if not members:
        return []
    centre = normalise(normalise(np.stack(members)).mean(axis=0))  # E
    scores = embedded.astype(np.float64) @ centre.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:N_SENTENCES]
    return [(texts[i], round(float(scores[i]), 4)) for i in order]


def _retrieval_sentences(model: "EchoClip", studies: Sequence["StudyReport"],
                         run: Scoring) -> tuple[Any, list[str], dict[int, Any], str] | None:
    """(EchoCLIP-R model, its slot-free report sentences, each scored clip's EchoCLIP-R embedding,
    source name), or None when EchoCLIP-R or its template vocabulary is not installed."""
    from ..errors import EchoclipError as Failed
    from ..tokenizer import tokenizer_for
    from ..tokenizer.template import SLOT
    from .load import load_model

    try:
        if model.bundle.tokenizer_kind == "template":
            retrieval = model
        else:
            bundle = _retrieval_bundle()
            if bundle is None:
                return None
            retrieval = load_model(bundle, device=str(model.device), precision=model.text_precision,
                                   backend="torch", lazy=True)
        phrases = getattr(tokenizer_for(retrieval.bundle), "phrases", ())
    except Failed as exc:
        run.progress.note(f"nearest sentences from the prompt library ({exc.message})")
        return None
    texts = [p for p in phrases if SLOT not in p]
    if not texts:
        return None
    clips = {c.source: c for s in studies for c in s.scored}
    if retrieval is model:
        vectors = {id(c): c.embedding for c in clips.values()}
    else:
        files = [Path(source) for source in clips if Path(source).is_file()]
        again = Scoring(retrieval, {}, files, None, run.options, run.progress)
        vectors = {id(clips[fs.source]): fs.frames.mean(axis=0) for fs in again.frame_sets()
                   if fs.frames is not None and fs.source in clips}
    return retrieval, texts, vectors, f"EchoCLIP-R report sentences ({retrieval.bundle.name})"


def _retrieval_bundle() -> Any:
    """The installed EchoCLIP-R weights: ``echo-clip-r``, else another bundle with the template
    tokenizer (a fine-tuned EchoCLIP-R), else None."""
    from ..defaults import RETRIEVAL_WEIGHTS
    from ..weights import installed_bundles

    found = sorted((b for b in installed_bundles() if b.tokenizer_kind == "template"),
                   key=lambda b: (b.name != RETRIEVAL_WEIGHTS, b.name))
    return found[0] if found else None
