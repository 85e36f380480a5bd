"""What the zero-shot commands write per study besides their records: a DICOM SR file (``--sr``),
or FHIR bundles in their place (``--format fhir``). The library does the work
(:mod:`echoclip_cli.exchange`); this module parses the options and picks the sink."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Iterable, Optional

import typer

from .common import json_line, write_stdout


class ResultFormat(str, Enum):
    """--format of the commands whose results a hospital keeps: the record formats, or FHIR."""

    auto = "auto"
    table = "table"
    jsonl = "jsonl"
    csv = "csv"
    fhir = "fhir"


ResultFormatOpt = Annotated[ResultFormat, typer.Option(
    "--format", "-f", help="Output on stdout: table when a terminal, else JSONL; or force table/jsonl/csv; or fhir "
                           "(one FHIR R4 Bundle per study, one per line, instead of the records).")]
SrOpt = Annotated[Optional[Path], typer.Option(
    "--sr", help="Also write one DICOM Structured Report per study into this folder (<StudyInstanceUID>.dcm; "
                 "DICOM inputs only; pip install 'echoclip[pacs]').")]


StowOpt = Annotated[bool, typer.Option(
    "--stow", help="With --dicomweb and --sr: store each SR into the study it describes on the same server (STOW-RS).")]


@dataclass(frozen=True)
class StudyOutputs:
    """What a run writes per study besides its records: SR files (stored back into their studies
    with ``stow``), FHIR bundles instead of records."""

    sr: Path | None = None
    fhir: bool = False
    keep_phi: bool = False
    stow: bool = False
    archive: Any = None  # the DICOMweb archive the inputs come from (its headers; where --stow stores)

    def over(self, files: Any) -> "StudyOutputs":
        """These outputs for the run's inputs: SRs of archive studies copy their patient and study
        from the archive's headers; ``--stow`` needs the archive (a usage error otherwise)."""
        from ..dicomweb import Archive

        archive = files if isinstance(files, Archive) else None
        if self.stow and archive is None:
            raise typer.BadParameter("--stow stores the SRs back on the DICOMweb server the studies come from: "
                                     "give --dicomweb URL", param_hint="--stow")
        if self.stow and self.sr is None:
            raise typer.BadParameter("--stow stores the SRs --sr DIR writes: give --sr too", param_hint="--stow")
        return replace(self, archive=archive)

    def check(self) -> "StudyOutputs":
        """Usage errors now, before any model loads: no highdicom, an SR folder that cannot be made."""
        if self.sr is not None:
            from ..exchange.sr import highdicom

            highdicom()
            try:
                self.sr.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise typer.BadParameter(f"cannot make the folder {self.sr}: {exc.strerror}", param_hint="--sr") from None
        return self

    def around(self, records: Iterable[Any]) -> Iterable[Any]:
        from .. import exchange

        headers = self.archive.headers if self.archive is not None else None
        if self.sr is not None:
            records = exchange.with_sr(records, self.sr, headers=headers)
        if self.stow:
            from ..api.archive import with_stow

            records = with_stow(records, self.archive)
        if self.fhir:
            records = exchange.with_fhir(records, keep_phi=self.keep_phi, headers=headers)
        return records


class BundleSink:
    """--format fhir: each study's bundle as one JSON line; the records themselves are not written."""

    def write(self, record: dict[str, Any]) -> None:
        if record.get("bundle"):
            write_stdout(json_line(record["bundle"]))

    def __enter__(self) -> "BundleSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None
