"""LVEF and implanted devices from a cardiologist's report text: a documented set of patterns.

**EF.** A subject, a few connecting words, a number and a percent sign, within one sentence:

- subject: ``LV EJECTION FRACTION``, ``LEFT VENTRICULAR EJECTION FRACTION``, ``THE LEFT VENTRICULAR
  EJECTION FRACTION``, ``EJECTION FRACTION``, ``LVEF`` or ``EF`` (the prompt library's two EF
  templates, "LV EJECTION FRACTION IS <#>%" and "THE LEFT VENTRICULAR EJECTION FRACTION IS
  ESTIMATED TO BE <#>%", are the model's own wording of it); not after "right ventricular";
- connecting words: up to 60 characters with no digit, period or percent sign (``IS``, ``IS
  ESTIMATED TO BE``, ``WAS VISUALLY ESTIMATED AT``, ``:``, ``=``, ``OF`` …), then optionally
  ``>``, ``<``, ``GREATER THAN``, ``LESS THAN``, ``AT LEAST``, ``ABOUT``, ``APPROXIMATELY`` (a bound
  is read as its value, and the record's note says so);
- value: ``55%``, ``55 %``, ``55 PERCENT``, a range ``55-60%`` / ``55% - 60%`` / ``55 TO 60%``
  (its midpoint, noted) or a 0–1 ratio ``0.55`` (× 100, noted). A number with neither a percent
  sign nor a ratio form is not read.

A sentence that speaks of another study (``PRIOR``, ``PREVIOUS``, ``PREVIOUSLY``, ``COMPARED``)
gives no label. The method is read from the sentence's words: ``BIPLANE`` or ``SIMPSON`` (biplane
Simpson; ``SINGLE PLANE`` single), ``TEICHHOLZ``, ``3D``, ``VISUAL`` / ``ESTIMATED`` / ``EYEBALL``
(visual), else ``report``.

**Devices** (0/1 labels for ``calibrate``; :data:`DEVICE_PATTERNS`, in the prompt library's
words): a sentence naming a device, with no ``NO``, ``NOT``, ``WITHOUT`` or ``ABSENT`` before the
name, is a positive. A report file (not an SR's text item, which is a fragment) that speaks of
the ventricles but names a device nowhere is a negative for it ("not mentioned in the report").
"""

from __future__ import annotations

import re
from typing import Iterator

from .context import StudyContext
from .labels import EF, LabelRecord

_NUMBER = r"[0-9]{1,3}(?:\.[0-9]+)?"
_SUBJECT = (r"(?:(?:THE\s+)?(?:LV|LEFT\s+VENTRICULAR|LEFT\s+VENTRICLE)\s+)?(?:EJECTION\s+FRACTION|EF)|LVEF")
_QUALIFIER = r"(?:>=?|<=?|≥|≤|GREATER\s+THAN|LESS\s+THAN|AT\s+LEAST|ABOUT|APPROXIMATELY)"
EF_PATTERN = re.compile(
    rf"(?<![A-Z0-9])(?P<subject>{_SUBJECT})(?![A-Z])(?P<words>[^.%0-9]{{0,60}}?)"
    rf"(?:(?P<qualifier>{_QUALIFIER})\s*)?(?P<low>{_NUMBER})\s*(?:%\s*)?"
    rf"(?:(?:-|–|TO)\s*(?P<high>{_NUMBER})\s*)?(?P<percent>%|PERCENT\b)?",
    re.IGNORECASE)
_OTHER_STUDY = re.compile(r"\b(?:PRIOR|PREVIOUS|PREVIOUSLY|COMPARED)\b", re.IGNORECASE)
_RIGHT_BEFORE = re.compile(r"(?:RIGHT\s+VENTRICULAR|RIGHT\s+VENTRICLE|\bRV)\s*$", re.IGNORECASE)
_METHODS = ((r"SINGLE[\s-]PLANE", "simpson_single"), (r"BIPLANE|SIMPSON", "simpson_biplane"),
            (r"TEICHHOLZ", "teichholz"), (r"\b3D\b|3-D", "3d"), (r"VISUAL|ESTIMATED|EYEBALL", "visual"))
DEVICE_PATTERNS = {
    "pacemaker": r"PACER|PACEMAKER|PACING\s+(?:WIRE|LEAD)|\bICD\b|DEFIBRILLATOR\s+LEAD",
    "tavr": r"STENT-VALVE|\bTAVR\b|\bTAVI\b|TRANSCATHETER\s+AORTIC",
    "mitraclip": r"MITRA-?CLIPS?",
    "impella": r"IMPELLA",
}
_NEGATION = re.compile(r"\b(?:NO|NOT|WITHOUT|ABSENT)\b", re.IGNORECASE)
_REPORT_WORD = re.compile(r"VENTRIC", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?![0-9])|\n\s*\n")


def _sentence_start(text: str, start: int) -> int:
    before = [m.end() for m in _SENTENCE_END.finditer(text, 0, start)]
    return before[-1] if before else 0


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence around ``text[start:end]`` (periods between digits do not end one)."""
    after = _SENTENCE_END.search(text, end)
    return text[_sentence_start(text, start): after.start() if after else len(text)]


def _method(sentence: str) -> str:
    for pattern, method in _METHODS:
        if re.search(pattern, sentence, re.IGNORECASE):
            return method
    return "report"


def _value(match: re.Match[str]) -> tuple[float | None, list[str]]:
    """EF percent of a match (None: not a percent nor a ratio), and notes on how it was read."""
    low, high = float(match["low"]), float(match["high"]) if match["high"] else None
    notes = []
    value = low if high is None else (low + high) / 2.0
    if high is not None:
        notes.append(f"a range {low:g}–{high:g}: its midpoint")
    if match["percent"] is None and "%" not in match.group(0):
        if value > 1.0:
            return None, notes
        value *= 100.0
        notes.append("a 0–1 ratio, read as percent")
    if match["qualifier"]:
        notes.append(f"a bound ({' '.join(match['qualifier'].upper().split())}), read as its value")
    return round(value, 4), notes


def ef_mentions(text: str) -> Iterator[tuple[re.Match[str], float, list[str], str]]:
    """(match, EF percent, notes, method) of every EF statement of this study in ``text``."""
    for match in EF_PATTERN.finditer(text):
        if _RIGHT_BEFORE.search(text[max(0, match.start() - 24): match.start()]):
            continue
        sentence = _sentence(text, match.start(), match.end())
        if _OTHER_STUDY.search(sentence):
            continue
        value, notes = _value(match)
        if value is None or not 0.0 < value <= 100.0:
            continue
        yield match, value, notes, _method(sentence)


def device_mentions(text: str) -> dict[str, str]:
    """Device -> the first sentence that names it (not negated before the name)."""
    found: dict[str, str] = {}
    for device, pattern in DEVICE_PATTERNS.items():
        for match in re.finditer(pattern, text, re.IGNORECASE):
            sentence = _sentence(text, match.start(), match.end())
            if not _NEGATION.search(text[_sentence_start(text, match.start()): match.start()]):
                found[device] = " ".join(sentence.split())[:200]
                break
    return found


def labels_from_text(text: str, *, source: str, context: StudyContext, source_kind: str = "text",
                     sop_uid: str | None = None) -> list[LabelRecord]:
    """The EF and device labels of one report text (``source_kind``: text, or sr_text for an SR's
    TEXT item, whose silence about a device says nothing)."""
    base = dict(source=source, source_kind=source_kind, sop_uid=sop_uid, **context.fields())
    out = [LabelRecord(**base, measurement=EF, value=value, unit="%", method=method,
                       span=" ".join(match.group(0).split()), raw=match.group(0).strip(),
                       note="; ".join(notes) or None)
           for match, value, notes, method in ef_mentions(text)]
    mentioned = device_mentions(text)
    for device in DEVICE_PATTERNS:
        if device in mentioned:
            out.append(LabelRecord(**base, measurement=device, value=1.0, method="report", span=mentioned[device]))
        elif source_kind == "text" and _REPORT_WORD.search(text):
            out.append(LabelRecord(**base, measurement=device, value=0.0, method="report",
                                   note="not mentioned in the report"))
    return out
