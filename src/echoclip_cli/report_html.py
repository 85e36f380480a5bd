"""A static, self-contained HTML report of an archive: what the model saw, and what it said.

One folder: ``index.html`` (archive plots and a table of studies) and one page per study with,
for every object, an animation of the frames the model actually received (after crop, mask and
resize), its clip type and why it was or was not scored, its EF and device scores (a call only
where a threshold exists), the evidence behind those numbers (PromptCAM overlays of the frames
that decided them), the study summary and the five sentences nearest to the study's embedding. Images are inline (data URIs) and plots are
inline SVG: no network, no CDN, no JavaScript; the folder opens from a USB stick.

Study pages are named by a hash of the study key, never by a path or an identifier; a study
known only by its folder is shown by that hash too (folder names can hold patient names), unless
``keep_phi``. The pages show no patient data: a study is placed on a patient by its salted
``patient_key`` and on a date by its study date (the index lists studies by date).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import re

import numpy as np

THUMB = 224  # pixels of the animation's side on the page: the model's input side (frames kept as received)
MAP_SIDE = 224  # pixels of a PromptCAM overlay's side: the model's input, shown as it is
GIF_MS = 100  # frame duration of the animation


@dataclass
class ClipRow:
    """One object of a study, as the report shows it."""

    source: str
    study: str
    clip_type: str | None
    clip_reason: str | None
    skipped: str | None = None
    error: str | None = None
    ef: float | None = None
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> score, threshold, detected
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> a head's value, low/high or set, abstain
    animation: str | None = None  # data URI of a GIF of the frames the model received
    identity: str = ""  # SOP instance or content hash: copies count once in the study summary
    study_date: str | None = None  # DICOM StudyDate, where the input carries one
    patient_key: str | None = None  # salted (never the ID)
    modality: str | None = None
    manufacturer: str | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)  # PromptCAM overlays: title, caption, frame, image
    embedding: np.ndarray | None = field(default=None, repr=False)  # (E,) mean of normalised frame embeddings


@dataclass
class StudyReport:
    study: str
    clips: list[ClipRow]
    sentences: list[tuple[str, float]] = field(default_factory=list)  # nearest sentences, (text, cosine)
    sentence_source: str | None = None  # where the sentences come from

    @property
    def scored(self) -> list[ClipRow]:
        """The clips whose numbers make the study's (one per SOP instance or content)."""
        seen: set[str] = set()
        out = []
        for c in self.clips:
            if c.error is None and c.skipped is None and (c.identity or c.source) not in seen:
                seen.add(c.identity or c.source)
                out.append(c)
        return out

    def copy_of(self, clip: ClipRow) -> ClipRow | None:
        """The clip that ``clip`` is a copy of (same SOP instance or content, counted once), if any."""
        for c in self.scored:
            if c is clip:
                return None
            if (c.identity or c.source) == (clip.identity or clip.source):
                return c
        return None

    def known(self, name: str) -> str | None:
        """A header value of the study's clips (``study_date``, ``patient_key``, ``modality``,
        ``manufacturer``): the one they share, several joined, None where none carries it."""
        values = sorted({str(getattr(c, name)) for c in self.clips if getattr(c, name)})
        return ", ".join(values) if values else None

    def label(self, keep_phi: bool = False) -> str:
        """How pages name the study: its StudyInstanceUID, or for a study known by its folder a
        hash of it (as the page's name), the folder itself only with ``keep_phi``."""
        if keep_phi or _UID.fullmatch(self.study):
            return self.study
        return f"folder {page_name(self.study)[6:14]}"

    @property
    def ef(self) -> float | None:
        values = [c.ef for c in self.scored if c.ef is not None]
        return round(float(np.mean(values)), 2) if values else None

    def device(self, task: str) -> dict[str, Any]:
        scores = [c.devices[task]["score"] for c in self.scored if task in c.devices]
        threshold = next((c.devices[task]["threshold"] for c in self.scored if task in c.devices), None)
        if not scores:
            return {"score": None, "threshold": threshold, "detected": None}
        score = round(float(np.mean(scores)), 5)
        return {"score": score, "threshold": threshold,
                "detected": bool(score >= threshold) if threshold is not None else None}

    def wide_row(self, tasks: Sequence[str]) -> dict[str, Any]:
        """One spreadsheet row: EF, device scores and calls, clip counts, flags."""
        row: dict[str, Any] = {"level": "study", "study": self.study, "study_date": self.known("study_date"),
                               "patient_key": self.known("patient_key"), "modality": self.known("modality"),
                               "manufacturer": self.known("manufacturer"), "ef": self.ef,
                               "n_clips": len(self.clips), "n_scored": len(self.scored),
                               "n_skipped": sum(c.skipped is not None for c in self.clips),
                               "n_failed": sum(c.error is not None for c in self.clips)}
        for task in tasks:
            found = self.device(task)
            row[f"{task}_score"] = found["score"]
            row[f"{task}_detected"] = found["detected"]
        row["flags"] = ";".join(self.flags())
        return row

    def flags(self) -> list[str]:
        out = []
        if not self.scored:
            out.append("no_scored_clip")
        if any(c.error for c in self.clips):
            out.append("unreadable_objects")
        return out


_UID = re.compile(r"[0-9]+(\.[0-9]+)+")


def page_name(study: str) -> str:
    return f"study-{hashlib.sha256(study.encode()).hexdigest()[:16]}.html"


def animation(frames: np.ndarray) -> str:
    """A data URI of an animated GIF of prepared frames ((T, 3, S, S) uint8 RGB), each as the
    model received it (the page shows it at :data:`THUMB` pixels)."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f.transpose(1, 2, 0))) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=GIF_MS, loop=0,
                   optimize=True)
    return "data:image/gif;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_uri(rgb: np.ndarray) -> str:
    """A data URI of a PNG of an (H, W, 3) uint8 RGB image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def group(rows: Iterable[ClipRow]) -> list[StudyReport]:
    by_study: dict[str, list[ClipRow]] = defaultdict(list)
    for row in rows:
        by_study[row.study].append(row)
    return [StudyReport(study, clips) for study, clips in by_study.items()]


# --------------------------------------------------------------------------- HTML

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.skipped{color:#777}.error{color:#b00}.yes{color:#b00;font-weight:600}
.clip{display:flex;gap:1em;align-items:flex-start;border-bottom:1px solid #eee;padding:.6em 0}
img{image-rendering:pixelated;border:1px solid #ccc}.plots{display:flex;gap:2em;flex-wrap:wrap}
.evidence{display:flex;gap:1em;flex-wrap:wrap}figure{margin:0;max-width:230px}figcaption{font-size:12px;color:#444}
.evidence img{image-rendering:auto}ol.sentences li{margin:.2em 0}.cos{color:#777;font-size:12px}
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>\n")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return html.escape(str(value))


def histogram_svg(values: Sequence[float], title: str, low: float, high: float, bins: int = 20,
                  mark: float | None = None, mark_label: str = "threshold") -> str:
    """A bar chart of ``values`` in ``bins`` equal bins over [low, high], as inline SVG: values on
    the x axis at five ticks, the highest count on the y axis, ``mark`` as a labelled dashed line."""
    width, height, pad = 380, 200, 34
    counts, edges = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high)) if len(values) else (
        np.zeros(bins, int), np.linspace(low, high, bins + 1))
    top = max(1, int(counts.max()))
    bar = (width - 2 * pad) / bins
    base = height - pad

    def x_of(value: float) -> float:
        return pad + (value - low) / (high - low) * (width - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>',
             f'<text x="{pad}" y="14" font-size="12">{html.escape(title)} (n={len(values)})</text>']
    for i, count in enumerate(counts):
        h = (base - pad) * count / top
        parts.append(f'<rect x="{pad + i * bar:.1f}" y="{base - h:.1f}" width="{bar - 1:.1f}" '
                     f'height="{h:.1f}" fill="#4a78b0"><title>{edges[i]:.3g}–{edges[i + 1]:.3g}: {count}</title></rect>')
    parts.append(f'<line x1="{pad}" y1="{base}" x2="{width - pad}" y2="{base}" stroke="#333"/>')
    parts.append(f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{base}" stroke="#333"/>')
    parts.append(f'<text x="{pad - 4}" y="{pad + 4}" font-size="11" text-anchor="end">{top}</text>'
                 f'<text x="{pad - 4}" y="{base}" font-size="11" text-anchor="end">0</text>')
    for tick in np.linspace(low, high, 5):
        parts.append(f'<line x1="{x_of(tick):.1f}" y1="{base}" x2="{x_of(tick):.1f}" y2="{base + 4}" stroke="#333"/>'
                     f'<text x="{x_of(tick):.1f}" y="{base + 16}" font-size="11" text-anchor="middle">{tick:g}</text>')
    if mark is not None and low <= mark <= high:
        x = x_of(mark)
        parts.append(f'<line x1="{x:.1f}" y1="{pad}" x2="{x:.1f}" y2="{base}" stroke="#b00" '
                     f'stroke-dasharray="4 2"><title>{html.escape(mark_label)} {mark:g}</title></line>'
                     f'<text x="{x + 3:.1f}" y="{pad + 10}" font-size="11" fill="#b00">'
                     f'{html.escape(mark_label)} {mark:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{_fmt(value)} %"


def _clip_html(clip: ClipRow, tasks: Sequence[str], copy_of: ClipRow | None = None) -> str:
    image = (f'<img src="{clip.animation}" width="{THUMB}" height="{THUMB}" alt="frames the model received">'
             if clip.animation else f'<div style="width:{THUMB}px;height:{THUMB}px;background:#eee"></div>')
    status = ""
    if clip.error:
        status = f'<p class="error">not read: {html.escape(clip.error)}</p>'
    elif clip.skipped:
        status = f'<p class="skipped">not scored: {html.escape(clip.skipped)}</p>'
    elif copy_of is not None:
        status = (f'<p class="skipped">a copy of {html.escape(Path(copy_of.source).name)} (the same SOP instance '
                  "or content): counted once in the study</p>")
    scores = ""
    if clip.error is None and clip.skipped is None:
        cells = [f"<td>EF</td><td>{_percent(clip.ef)}</td><td>zero-shot</td>"]
        if "ejection_fraction" in clip.heads:
            cells.append(_head_cells("EF", clip.heads["ejection_fraction"], "%"))
        for task in tasks:
            d = clip.devices.get(task, {})
            call = _fmt(d.get("detected")) if d.get("threshold") is not None else "no threshold"
            cells.append(f"<td>{html.escape(task)}</td><td>{_fmt(d.get('score'))}</td>"
                         f"<td class=\"{'yes' if d.get('detected') else ''}\">{call}</td>")
            if task in clip.heads:
                cells.append(_head_cells(task, clip.heads[task]))
        scores = "<table>" + "".join(f"<tr>{c}</tr>" for c in cells) + "</table>"
    return (f'<div class="clip">{image}<div><b>{html.escape(Path(clip.source).name)}</b> — '
            f'{_fmt(clip.clip_type)} <span class="skipped">({_fmt(clip.clip_reason)})</span>{status}{scores}'
            f'{_evidence_html(clip.evidence)}</div></div>')


def _head_cells(label: str, head: Mapping[str, Any], unit: str = "") -> str:
    """A table row of a head's output: its value and interval (or set), or why it abstained."""
    if head.get("abstain"):
        return (f"<td>{html.escape(label)} (site head)</td><td>–</td>"
                f'<td class="skipped">abstains: {html.escape(str(head.get("reason") or ""))}</td>')
    if "set" in head:
        detail = f"probability; set {{{', '.join(head.get('set') or [])}}}"
    else:
        detail = f"interval {_fmt(head.get('low'))}–{_fmt(head.get('high'))}{html.escape(unit)}"
    return (f"<td>{html.escape(label)} (site head)</td><td>{_fmt(head.get('value'))}{html.escape(unit)}</td>"
            f"<td>{html.escape(detail)}</td>")


def _evidence_html(evidence: Sequence[Mapping[str, Any]]) -> str:
    """The PromptCAM overlays behind a clip's numbers, each with what it shows."""
    if not evidence:
        return ""
    figures = []
    for item in evidence:
        title, caption = html.escape(str(item["title"])), html.escape(str(item["caption"]))
        figures.append(f'<figure><img src="{html.escape(str(item["image"]), quote=True)}" width="{MAP_SIDE}" '
                       f'height="{MAP_SIDE}" alt="PromptCAM overlay, {title}, {caption}">'
                       f"<figcaption><b>{title}</b> — {caption}</figcaption></figure>")
    return ('<p class="skipped">Why (PromptCAM: where in the frame the model found the prompts\' words; '
            'red most, blue least)</p><div class="evidence">' + "".join(figures) + "</div>")


def _sentences_html(study: StudyReport) -> str:
    """The study's nearest sentences, with their cosine and where they come from."""
    if not study.sentences:
        return ""
    items = "".join(f'<li>{html.escape(text)} <span class="cos">cosine {score:.3f}</span></li>'
                    for text, score in study.sentences)
    return (f"<h2>Nearest sentences</h2><p class=\"skipped\">{len(study.sentences)} sentences of "
            f"{html.escape(study.sentence_source or '')} nearest to the study's embedding</p>"
            f'<ol class="sentences">{items}</ol>')


_KNOWN = (("study_date", "date"), ("patient_key", "patient key"), ("modality", "modality"),
          ("manufacturer", "manufacturer"))


def _known_html(study: StudyReport) -> str:
    """Where the study sits: its date, patient key, modality and manufacturer, as far as known."""
    known = [f"{label} {html.escape(value)}" for name, label in _KNOWN if (value := study.known(name))]
    return f"<p>{'; '.join(known)}</p>" if known else ""


def _by_date(studies: Sequence[StudyReport]) -> list[StudyReport]:
    """Studies in date order (undated ones last, in the order given)."""
    return sorted(studies, key=lambda s: (s.known("study_date") is None, s.known("study_date") or ""))


def _study_page(study: StudyReport, tasks: Sequence[str], calls: str, label: str) -> str:
    summary = study.wide_row(tasks)
    ef = (f"EF {_fmt(study.ef)} % (mean of {len(study.scored)} scored clips)" if study.ef is not None
          else "EF: no scored clip")
    return (f'<p><a href="index.html">← all studies</a></p><h1>Study {html.escape(label)}</h1>'
            + _known_html(study)
            + f"<p>{ef}; device calls: {html.escape(calls)}; {summary['n_skipped']} clips not scored, "
            f"{summary['n_failed']} not read.</p>"
            + _sentences_html(study) + "".join(_clip_html(c, tasks, study.copy_of(c)) for c in study.clips))


def write_html(studies: Sequence[StudyReport], out: Path, tasks: Sequence[str],
               thresholds: Mapping[str, float | None], *, keep_phi: bool = False) -> Path:
    """Write ``out/index.html`` (studies by date) and one page per study; returns the index path.
    Each page is written atomically: a symbolic link planted under a page's (predictable) name
    is replaced, never written through. Studies known by a folder are named by a hash of it
    unless ``keep_phi``."""
    from .files import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for study in _by_date(studies):
        page, label = page_name(study.study), study.label(keep_phi)
        summary = study.wide_row(tasks)
        calls = ", ".join(t for t in tasks if summary[f"{t}_detected"]) or "none"
        atomic_write_text(out / page, _page(f"Study {label}", _study_page(study, tasks, calls, label)))
        known = "".join(f"<td>{_fmt(study.known(name))}</td>" for name, _ in _KNOWN[:3])
        rows.append(f"<tr>{known}<td><a href=\"{page}\">{html.escape(label)}</a></td><td>{_fmt(study.ef)}</td>"
                    f"<td>{len(study.scored)} / {len(study.clips)}</td><td>{html.escape(calls)}</td>"
                    f"<td>{html.escape(summary['flags'])}</td></tr>")
    efs = [s.ef for s in studies if s.ef is not None]
    plots = [histogram_svg(efs, "Study EF (%)", 0, 100)]
    for task in tasks:
        scores = [c.devices[task]["score"] for s in studies for c in s.scored if task in c.devices]
        plots.append(histogram_svg(scores, f"{task} score (per clip)", -0.5, 0.5, mark=thresholds.get(task)))
    body = ("<h1>echoclip report</h1>"
            f"<p>{len(studies)} studies, {sum(len(s.clips) for s in studies)} objects, listed by study date. Scores "
            "are EchoCLIP zero-shot outputs; calls are made only where a threshold exists.</p>"
            f'<div class="plots">{"".join(plots)}</div>'
            "<table><tr><th>date</th><th>patient key</th><th>modality</th><th>study</th><th>EF %</th>"
            "<th>scored clips</th><th>device calls</th><th>flags</th></tr>" + "".join(rows) + "</table>")
    index = out / "index.html"
    atomic_write_text(index, _page("echoclip report", body))
    return index
