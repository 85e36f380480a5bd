"""Where a harvested label belongs: its study, and what may be said of the study's patient and machine.

One :class:`StudyContext` per source, read from a DICOM header (an SR, or the images beside a
report text): the StudyInstanceUID (else the folder: the same key zero-shot records use), the
salted patient key (never the ID unless ``keep_phi``), the study date, and the machine
(``Manufacturer``, ``ManufacturerModelName``) for results broken down by it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..media.phi import patient_key, phi_values, resolve_salt


@dataclass(frozen=True)
class StudyContext:
    study: str
    patient_key: str | None = None
    study_date: str | None = None
    manufacturer: str | None = None
    manufacturer_model: str | None = None
    phi: dict[str, str | None] | None = None

    def fields(self) -> dict[str, Any]:
        """The record fields this context fills."""
        return asdict(self)


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def context_of(ds: Any, fallback_study: str, *, keep_phi: bool = False, salt: str | None = None) -> StudyContext:
    """The context a DICOM header gives (any pydicom Dataset: a file's, or one a server sent)."""
    pid = _text(ds, "PatientID")
    return StudyContext(study=_text(ds, "StudyInstanceUID") or fallback_study,
                        patient_key=patient_key(pid, resolve_salt(salt)) if pid else None,
                        study_date=_text(ds, "StudyDate"), manufacturer=_text(ds, "Manufacturer"),
                        manufacturer_model=_text(ds, "ManufacturerModelName"),
                        phi=phi_values(ds) if keep_phi else None)
