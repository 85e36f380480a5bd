"""Label records: one per harvested value, and which of a study's values is its label.

A study may carry one measurement several times: an SR's biplane Simpson EF, its Teichholz EF,
the cardiologist's sentence in the report. Each is one :class:`LabelRecord`. :func:`settle` then
reads each study's values of one measurement together:

- when they disagree by more than ``tolerance`` (EF points; 0/1 findings: any disagreement), the
  study is a **conflict**: every record says so (``conflict``) and none is the study's label.
  Values are never averaged;
- else the study's label (``primary``) is the value measured by the most trusted method
  (:data:`METHOD_PRIORITY`: biplane Simpson first, the report's own sentence last), the first
  read among equals.

``evaluate`` and ``calibrate`` read the primary records (``evaluation.labels_from_records``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import ClassVar, Iterable, Sequence

from ..records import Record

EF = "ef"  # the measurement name of LVEF: the evaluate label column of the EF task

# Most trusted first (ASE/EACVI: biplane method of disks is the recommended 2-D method).
METHOD_PRIORITY = ("simpson_biplane", "3d", "simpson_single", "area_length", "ellipse", "teichholz", "cube",
                   "visual", "report", None)


@dataclass(kw_only=True)
class LabelRecord(Record):
    """One harvested value. ``value`` is in ``unit`` (EF: percent, a 0–1 ratio converted);
    ``raw`` is what the source said; ``span`` the text or SR concept it was read from;
    ``primary`` whether it is the study's label; ``conflict`` why the study has none."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {"sop_uid", "span", "note", "conflict", "manufacturer", "manufacturer_model", "patient_key", "study_date",
         "error", "phi"})

    level: str = "label"
    study: str = ""
    measurement: str | None = None
    value: float | None = None
    unit: str | None = None
    method: str | None = None
    source: str
    source_kind: str | None = None  # sr, sr_text (a TEXT item of an SR) or text (a report file)
    sop_uid: str | None = None
    span: str | None = None
    raw: str | None = None
    note: str | None = None
    primary: bool = False
    conflict: str | None = None
    manufacturer: str | None = None
    manufacturer_model: str | None = None
    patient_key: str | None = None
    study_date: str | None = None
    phi: dict[str, str | None] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None


def _rank(method: str | None) -> int:
    return METHOD_PRIORITY.index(method) if method in METHOD_PRIORITY else len(METHOD_PRIORITY)


def settle(records: Iterable[LabelRecord], tolerance: float) -> list[LabelRecord]:
    """``records`` with ``primary`` and ``conflict`` set per (study, measurement), in order."""
    out = list(records)
    groups: dict[tuple[str, str], list[LabelRecord]] = defaultdict(list)
    for record in out:
        if record.ok and record.measurement:
            groups[(record.study, record.measurement)].append(record)
    for (_, measurement), members in groups.items():
        allowed = tolerance if measurement == EF else 0.0
        low, high = min(m.value for m in members), max(m.value for m in members)  # type: ignore[type-var]
        if high - low > allowed:
            why = _conflict(members, measurement)
            for m in members:
                m.conflict, m.primary = why, False
            continue
        best = min(range(len(members)), key=lambda i: (_rank(members[i].method), i))
        for i, m in enumerate(members):
            m.primary, m.conflict = i == best, None
    return out


def _conflict(members: Sequence[LabelRecord], measurement: str) -> str:
    values = ", ".join(f"{_show(m.value)} ({m.method or 'no method'}, {m.source_kind})" for m in members[:6])
    more = f" and {len(members) - 6} more" if len(members) > 6 else ""
    return f"{len(members)} {measurement} values disagree: {values}{more}"


def _show(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
