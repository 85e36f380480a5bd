"""LVEF from a DICOM measurement SR: walk the content tree, find the EF, its method and its unit.

Works on any pydicom ``Dataset`` (a file's or one fetched from a server): :func:`labels_from_dataset`.

**Which items are an LVEF.** A NUM content item whose concept name is one of
:data:`EF_CONCEPTS` (the echo procedure report's codes, TID 5200 and its sub-templates: LOINC
18043-0 "Left Ventricular Ejection Fraction by US", 10230-1 "Left ventricular Ejection fraction",
the method-specific 79991-6 biplane MOD, 79992-4 / 79993-2 single plane, 77891-0 / 18049-7
Teichholz, 79990-8 3-D; SNOMED 70822001 "Cardiac ejection fraction"), or, for vendor codes,
whose meaning says "ejection fraction" and nothing else (not right ventricular, atrial,
angiographic, regional). An item whose finding site (its own or a container's) is the right
ventricle is not an LVEF.

**Method.** A "Measurement Method" modifier (SNOMED 370129005, SRT G-C036) on the item or on a
container above it, by its code (:data:`METHOD_CODES`: DCM 125207 biplane method of disks,
125208 single plane, 125209 Teichholz, 125204/125205 area-length, 125211/125226 ellipse,
SNOMED 258083009 visual estimation) or its meaning; else the method a method-specific concept
name implies; else none.

**Unit.** UCUM ``%`` is percent; ``1``, ``{ratio}`` or ``ratio`` is a 0–1 ratio (× 100); a
missing unit is read as a ratio when the value is at most 1, else as percent, and the record's
``note`` says so. Values outside 0–100 % are an error of that item.

TEXT items are read as report text (:mod:`.report_text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Iterator

from ..defaults import RESULT_MANUFACTURER
from .context import StudyContext
from .labels import EF, LabelRecord
from .report_text import labels_from_text

# (scheme, code) -> the method the concept itself implies (None: any)
EF_CONCEPTS: dict[tuple[str, str], str | None] = {
    ("LN", "18043-0"): None, ("LN", "10230-1"): None, ("SCT", "70822001"): None, ("SRT", "F-32120"): None,
    ("LN", "79991-6"): "simpson_biplane", ("LN", "79992-4"): "simpson_single", ("LN", "79993-2"): "simpson_single",
    ("LN", "77891-0"): "teichholz", ("LN", "18049-7"): "teichholz", ("LN", "79990-8"): "3d",
}
METHOD_CODES: dict[tuple[str, str], str] = {
    ("DCM", "125207"): "simpson_biplane", ("DCM", "125208"): "simpson_single", ("DCM", "125209"): "teichholz",
    ("DCM", "125204"): "area_length", ("DCM", "125205"): "area_length", ("DCM", "125211"): "ellipse",
    ("DCM", "125226"): "ellipse", ("SCT", "258083009"): "visual", ("SRT", "P0-0246E"): "visual",
}
_METHOD_WORDS = (("BIPLANE", "DIS", "simpson_biplane"), ("SIMPSON", "BIPLANE", "simpson_biplane"),
                 ("DIS", "SINGLE", "simpson_single"), ("SIMPSON", "", "simpson_single"), ("TEICHHOLZ", "", "teichholz"),
                 ("AREA", "LENGTH", "area_length"), ("ELLIPSE", "", "ellipse"), ("CUBE", "", "cube"),
                 ("VISUAL", "", "visual"), ("ESTIMAT", "", "visual"), ("3D", "", "3d"))
MEASUREMENT_METHOD = {("SCT", "370129005"), ("SRT", "G-C036")}
FINDING_SITE = {("SCT", "363698007"), ("SRT", "G-C0E3")}
_NOT_LV = re.compile(r"RIGHT|\bRV\b|ATRI|ANGIO|REGIONAL|SLICE|DIFFERENCE|\bBY (CT|MR)\b")
PERCENT_UNITS, RATIO_UNITS = {"%"}, {"1", "{ratio}", "ratio"}


def _scheme(item: Any) -> str:
    scheme = str(item.get("CodingSchemeDesignator", "")).strip().upper()
    return {"LOINC": "LN", "SNM3": "SRT", "SNOMED": "SCT"}.get(scheme, scheme)


def _code(sequence: Any) -> tuple[str, str, str] | None:
    """(scheme, code, meaning) of a code sequence's first item."""
    if not sequence:
        return None
    item = sequence[0]
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or ""
    return _scheme(item), str(value).strip(), str(item.get("CodeMeaning", "")).strip()


def _method_of(code: tuple[str, str, str] | None) -> str | None:
    if code is None:
        return None
    if code[:2] in METHOD_CODES:
        return METHOD_CODES[code[:2]]
    meaning = code[2].upper()
    for first, second, method in _METHOD_WORDS:
        if first in meaning and second in meaning:
            return method
    return None


@dataclass(frozen=True)
class _Scope:
    """What containers above an item say about it."""

    method: str | None = None
    right_ventricle: bool = False


def _modifiers(item: Any, scope: _Scope) -> _Scope:
    """``scope`` updated by the item's own HAS CONCEPT MOD children (method, finding site)."""
    for child in item.get("ContentSequence", []) or []:
        if str(child.get("RelationshipType", "")) != "HAS CONCEPT MOD":
            continue
        name = _code(child.get("ConceptNameCodeSequence"))
        value = _code(child.get("ConceptCodeSequence"))
        if name is None or value is None:
            continue
        if name[:2] in MEASUREMENT_METHOD or "MEASUREMENT METHOD" in name[2].upper():
            scope = replace(scope, method=_method_of(value) or scope.method)
        elif name[:2] in FINDING_SITE or "FINDING SITE" in name[2].upper():
            scope = replace(scope, right_ventricle="RIGHT" in value[2].upper() or value[:2] == ("SCT", "53085002"))
    return scope


def _walk(items: Any, scope: _Scope) -> Iterator[tuple[Any, _Scope]]:
    for item in items or []:
        own = _modifiers(item, scope)
        yield item, own
        if str(item.get("ValueType", "")) == "CONTAINER" or item.get("ContentSequence"):
            yield from _walk(item.get("ContentSequence"), own if str(item.get("ValueType", "")) == "CONTAINER"
                             else scope)


def _is_ef(name: tuple[str, str, str] | None) -> tuple[bool, str | None]:
    """(an LVEF concept?, the method its name implies)."""
    if name is None:
        return False, None
    if name[:2] in EF_CONCEPTS:
        return True, EF_CONCEPTS[name[:2]]
    if "EJECTION FRACTION" in name[2].upper() and not _NOT_LV.search(name[2].upper()):
        return True, _method_of(name)
    return False, None


def labels_from_dataset(ds: Any, source: str, context: StudyContext) -> list[LabelRecord]:
    """Every LVEF (and every EF sentence of its TEXT items) in an SR dataset, as label records.
    None from an SR echoclip wrote itself (``--sr``, stored back into the study): its EF is the
    model's, and a label must come from the people who measured."""
    if str(ds.get("Manufacturer", "") or "").strip() == RESULT_MANUFACTURER:
        return []
    sop_uid = str(ds.get("SOPInstanceUID", "") or "") or None
    out: list[LabelRecord] = []
    for item, scope in _walk(ds.get("ContentSequence"), _modifiers(ds, _Scope())):
        kind = str(item.get("ValueType", ""))
        if kind == "TEXT" and item.get("TextValue"):
            out += labels_from_text(str(item.TextValue), source=source, context=context, source_kind="sr_text",
                                    sop_uid=sop_uid)
        elif kind == "NUM":
            record = _num_label(item, scope, source, sop_uid, context)
            if record is not None:
                out.append(record)
    return out


def _num_label(item: Any, scope: _Scope, source: str, sop_uid: str | None,
               context: StudyContext) -> LabelRecord | None:
    name = _code(item.get("ConceptNameCodeSequence"))
    is_ef, implied = _is_ef(name)
    if not is_ef or scope.right_ventricle:
        return None
    assert name is not None
    base = dict(source=source, source_kind="sr", sop_uid=sop_uid, measurement=EF,
                method=scope.method or implied, span=f"{name[0]} {name[1]} {name[2]}", **context.fields())
    measured = (item.get("MeasuredValueSequence") or [None])[0]
    if measured is None or measured.get("NumericValue") in (None, ""):
        return LabelRecord(**base, error=f"{source}: an EF item ({name[1]}) holds no value")
    raw_value = float(measured.NumericValue)
    unit = _code(measured.get("MeasurementUnitsCodeSequence"))
    value, note, error = _percent(raw_value, unit[1] if unit else None)
    raw = f"{raw_value:g} {unit[1]}" if unit else f"{raw_value:g} (no unit)"
    if error:
        return LabelRecord(**base, raw=raw, error=f"{source}: EF item {name[1]}: {error}")
    return LabelRecord(**base, value=value, unit="%", raw=raw, note=note)


def _percent(value: float, unit: str | None) -> tuple[float | None, str | None, str | None]:
    """(EF in percent, a note, an error) of a value and its UCUM unit code."""
    note = None
    if unit in PERCENT_UNITS:
        percent = value
    elif unit in RATIO_UNITS:
        percent, note = value * 100.0, "a 0–1 ratio, read as percent"
    elif unit is None:
        ratio = value <= 1.0
        percent = value * 100.0 if ratio else value
        note = "no unit: read as a 0–1 ratio (≤ 1)" if ratio else "no unit: read as percent (> 1)"
    else:
        return None, None, f"unit {unit!r} is neither percent nor a ratio"
    if not 0.0 < percent <= 100.0:
        return None, None, f"EF {percent:g} % lies outside 0–100 %"
    return round(percent, 4), note, None
