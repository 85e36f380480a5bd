"""Planted measurement SRs (built with highdicom) and report texts with known EFs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tests.media_factory import base_dataset

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


@dataclass(frozen=True)
class Planted:
    """One EF measurement to plant in an SR."""

    concept: tuple[str, str, str]  # (code, scheme, meaning)
    value: float
    unit: tuple[str, str, str] | None = ("%", "UCUM", "percent")  # None: no unit at all
    method: tuple[str, str, str] | None = None  # a Measurement Method modifier
    nested: bool = False  # inside one more container
    site: tuple[str, str, str] | None = None  # a Finding Site modifier on the item


LVEF_US = ("18043-0", "LN", "Left Ventricular Ejection Fraction by US")
LVEF_SCT = ("70822001", "SCT", "Cardiac ejection fraction")
LVEF_TEICHHOLZ_MM = ("18049-7", "LN", "Left ventricular ejection fraction (Teichholz) MM")
BIPLANE = ("125207", "DCM", "Method of Disks, Biplane")
TEICHHOLZ = ("125209", "DCM", "Teichholz")
VISUAL = ("258083009", "SCT", "Visual estimation")
RATIO = ("1", "UCUM", "no units")
RIGHT_VENTRICLE = ("53085002", "SCT", "Right ventricle")


def image_header(seed: int, patient_id: str, *, manufacturer: str = "Synthetic Echo Co",
                 model: str = "Vivid S1") -> Any:
    ds = base_dataset(n_frames=1, rows=8, cols=8, sop_class=US_MULTIFRAME, seed=seed,
                      patient={"PatientID": patient_id, "PatientName": "Doe^Jane", "PatientBirthDate": "19600101"})
    ds.Manufacturer, ds.ManufacturerModelName = manufacturer, model
    ds.PatientSex, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "F", "120000", "1", "A1"
    ds.ReferringPhysicianName = ""
    return ds


def _code(triple: tuple[str, str, str]) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=triple[0], scheme_designator=triple[1], meaning=triple[2])


def _num(p: Planted) -> Any:
    from highdicom.sr import CodeContentItem, ContentSequence, NumContentItem

    item = NumContentItem(name=_code(p.concept), value=p.value, unit=_code(p.unit or _NO_UNIT),
                          relationship_type="CONTAINS")
    children = []
    if p.method:
        children.append(CodeContentItem(name=_code(("370129005", "SCT", "Measurement Method")),
                                        value=_code(p.method), relationship_type="HAS CONCEPT MOD"))
    if p.site:
        children.append(CodeContentItem(name=_code(("363698007", "SCT", "Finding Site")), value=_code(p.site),
                                        relationship_type="HAS CONCEPT MOD"))
    if children:
        item.ContentSequence = ContentSequence(children)
    return item


_NO_UNIT = ("no-unit", "99PLANT", "removed after the SR is built")  # highdicom checks units on build


def _drop_planted_units(items: Any) -> None:
    for item in items or []:
        for measured in item.get("MeasuredValueSequence", []) or []:
            units = measured.get("MeasurementUnitsCodeSequence")
            if units and units[0].CodeValue == _NO_UNIT[0]:
                del measured.MeasurementUnitsCodeSequence
        _drop_planted_units(item.get("ContentSequence"))


def make_echo_sr(path: Path, evidence: Any, measurements: Sequence[Planted], *, text: str | None = None,
                 seed: int = 0) -> Path:
    """An echo measurement SR (TID 5200 shape: report > Left Ventricle section > measurement group)
    about the study of ``evidence`` (an image header), written to ``path``."""
    from highdicom.sr import ComprehensiveSR, ContainerContentItem, ContentSequence, TextContentItem
    from pydicom.uid import generate_uid

    group = ContainerContentItem(name=_code(("125007", "DCM", "Measurement Group")), relationship_type="CONTAINS")
    inner = ContainerContentItem(name=_code(("125007", "DCM", "Measurement Group")), relationship_type="CONTAINS")
    flat = [_num(p) for p in measurements if not p.nested]
    nested = [_num(p) for p in measurements if p.nested]
    if nested:
        inner.ContentSequence = ContentSequence(nested)
        flat.append(inner)
    group.ContentSequence = ContentSequence(flat)
    section = ContainerContentItem(name=_code(("29468-6", "LN", "Left Ventricle")), relationship_type="CONTAINS")
    section.ContentSequence = ContentSequence([group])
    root = ContainerContentItem(name=_code(("125200", "DCM", "Adult Echocardiography Procedure Report")),
                                template_id="5200")
    items = [section]
    if text:
        items.append(TextContentItem(name=_code(("121071", "DCM", "Finding")), value=text,
                                     relationship_type="CONTAINS"))
    root.ContentSequence = ContentSequence(items)
    sr = ComprehensiveSR(evidence=[evidence], content=root, series_instance_uid=generate_uid(
        entropy_srcs=[f"srseries{seed}"]), series_number=99, sop_instance_uid=generate_uid(entropy_srcs=[f"sr{seed}"]),
        instance_number=1, manufacturer=str(evidence.Manufacturer))
    sr.ManufacturerModelName = str(evidence.ManufacturerModelName)
    _drop_planted_units(sr.ContentSequence)
    sr.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- planted embeddings


@dataclass(frozen=True)
class PlantedEmbeddings:
    """Unit-norm video embeddings near a low-dimensional latent space (as CLIP embeddings lie near
    one), labels from a planted linear function of the embedding plus heteroscedastic noise, and
    that true linear model's prediction."""

    X: Any  # (N, E) unit-norm rows
    y: Any  # (N,) labels (EF-like: mean 55, the signal's SD 10)
    signal: Any  # (N,) the true linear model's prediction (the label without noise)


def _raw_embeddings(n: int, dim: int, latent: int, rng: Any, shift: float, noise: float) -> tuple[Any, Any]:
    import numpy as np

    basis_rng = np.random.default_rng(12345)  # one latent space for every call
    basis = basis_rng.standard_normal((latent, dim)) / np.sqrt(dim)
    common = basis_rng.standard_normal(dim)
    away = basis_rng.standard_normal(dim)
    z = rng.standard_normal((n, latent))
    X = common / np.linalg.norm(common) + 0.3 * z @ basis + noise * rng.standard_normal((n, dim))
    X = X + shift * away / np.linalg.norm(away)
    return X / np.linalg.norm(X, axis=1, keepdims=True), z


def planted_embeddings(n: int, *, dim: int = 512, latent: int = 8, seed: int = 0, shift: float = 0.0,
                       noise: float = 0.005) -> PlantedEmbeddings:
    """``n`` rows; ``shift`` moves them off the training distribution along a fixed direction."""
    import numpy as np

    reference, _ = _raw_embeddings(20000, dim, latent, np.random.default_rng(999), 0.0, noise)
    basis = np.random.default_rng(12345).standard_normal((latent, dim)) / np.sqrt(dim)
    w = np.random.default_rng(54321).standard_normal(latent) @ basis  # the true model lies in the latent span
    centre, spread = float((reference @ w).mean()), float((reference @ w).std())
    X, z = _raw_embeddings(n, dim, latent, np.random.default_rng(seed), shift, noise)
    signal = 55.0 + 10.0 * (X @ w - centre) / spread
    sigma = 2.0 + 3.0 * np.abs(z[:, 1])  # heteroscedastic noise
    y = signal + sigma * np.random.default_rng(seed + 7).standard_normal(n)
    return PlantedEmbeddings(X=X.astype(np.float32), y=y, signal=signal)
