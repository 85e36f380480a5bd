"""A study's results, gathered from the record stream, and what every output says about who made them.

The zero-shot calls stream one record per clip (and task) as it finishes, then one summary per
study and task (:func:`echoclip_cli.tasks.with_studies`). An output per study (a DICOM SR, a
FHIR bundle) needs them together: :class:`StudyGroups` gathers them as they pass, keeping only
the records (a few hundred bytes each, never frames), and hands each study over in the order
it was first seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from .. import __version__
from ..media.discover import looks_like_dicom
from ..records import Record, StudyRecord, VideoRecord

if TYPE_CHECKING:
    from pydicom import Dataset

# Where an output finds a clip's DICOM header: by its record's ``source``; None when it has none.
Headers = Callable[[str], "Dataset | None"] | Mapping[str, "Dataset"]


@dataclass
class StudyResults:
    """One study's records: every clip's (scored, skipped or failed, per task), then its summaries."""

    study: str
    videos: list[VideoRecord] = field(default_factory=list)
    summaries: list[StudyRecord] = field(default_factory=list)

    def scored(self) -> dict[str, list[VideoRecord]]:
        """The scored clips, one entry per clip (a SOP instance or content counts once), each with
        its records (one per task), in the order they came."""
        clips: dict[str, list[VideoRecord]] = {}
        sources: dict[str, str] = {}
        for record in self.videos:
            if not record.ok:
                continue
            key = record.identity or record.source
            if sources.setdefault(key, record.source) == record.source:
                clips.setdefault(record.source, []).append(record)
        return clips

    def refused(self) -> dict[str, str]:
        """The clips that were read but not scored, or failed: source -> the reason."""
        scored = self.scored()
        return {r.source: str(r.skipped or r.error) for r in self.videos if not r.ok and r.source not in scored}

    def first(self) -> Record:
        return (self.videos or self.summaries)[0]  # type: ignore[operator]


def reportable(record: Any) -> bool:
    """Whether a record holds a number the SR and FHIR outputs report: an EF, or a binary score
    (other zero-shot tasks stay in the records)."""
    return getattr(record, "ef", None) is not None or getattr(record, "score", None) is not None


class StudyGroups:
    """Records gathered by study as they pass (:meth:`gather`); then each study's results."""

    def __init__(self) -> None:
        self._studies: dict[str, StudyResults] = {}

    def add(self, record: Any) -> None:
        if isinstance(record, StudyRecord):
            self._studies.setdefault(record.study, StudyResults(record.study)).summaries.append(record)
        elif isinstance(record, VideoRecord):
            self._studies.setdefault(record.study, StudyResults(record.study)).videos.append(record)

    def gather(self, records: Iterable[Any]) -> Iterator[Any]:
        """Every record, as it comes, gathered on the way."""
        for record in records:
            self.add(record)
            yield record

    def __iter__(self) -> Iterator[StudyResults]:
        return iter(list(self._studies.values()))


def group_by_study(records: Iterable[Any]) -> Iterator[StudyResults]:
    """Each study's records, in the order studies first appear. A study is complete only when
    the stream ends (summaries come last), so the groups follow the last record."""
    groups = StudyGroups()
    for _ in groups.gather(records):
        pass
    yield from groups


@dataclass(frozen=True)
class Provenance:
    """Who made a result: echoclip's version and the weights (name and sha256) with the numerics
    that ran them; the algorithm identification of an SR, the Device of a FHIR bundle."""

    weights: str
    weights_sha256: str
    backend: str = "torch"
    precision: str | None = None
    aggregation: str | None = None
    prompts: str | None = None
    echoclip_version: str = __version__

    @classmethod
    def of(cls, results: StudyResults) -> "Provenance":
        """The provenance the records of one study carry (every record names its weights)."""
        first = results.first()
        scored = [r for r in results.videos if r.ok] or results.videos
        return cls(weights=first.weights, weights_sha256=first.weights_sha256,  # type: ignore[attr-defined]
                   backend=getattr(first, "backend", "torch"), precision=getattr(first, "precision", None),
                   aggregation=next((a for r in scored if (a := getattr(r, "aggregation", None))), None),
                   prompts=next((p for r in scored if (p := getattr(r, "prompts", None))), None))

    def parameters(self) -> dict[str, str]:
        """The settings worth recording beside the name and version, as text."""
        values = {"weights": self.weights, "weights_sha256": self.weights_sha256, "backend": self.backend,
                  "precision": self.precision, "aggregation": self.aggregation, "prompts": self.prompts}
        return {k: str(v) for k, v in values.items() if v is not None}


@dataclass(kw_only=True)
class OutputRecord(Record):
    """One study's output (an SR file, a FHIR bundle): where it went, or why there is none."""

    OPTIONAL = frozenset({"output", "sop_uid", "stored", "skipped", "error"})

    level: str
    study: str
    output: str | None = None  # the file written
    sop_uid: str | None = None  # the SR's own SOP Instance UID
    n_instances: int = 0  # source instances the output references
    stored: str | None = None  # where it was stored (STOW-RS: the study's URL on the server)
    skipped: str | None = None  # no output, and nothing wrong: no clip of the study was scored
    error: str | None = None


def header_lookup(headers: Headers | None) -> Callable[[str], "Dataset | None"]:
    """``headers`` as a function of a record's source; by default the file's own header."""
    if headers is None:
        return read_header
    if isinstance(headers, Mapping):
        return headers.get
    return headers


def read_header(source: str) -> "Dataset | None":
    """The DICOM header of the file ``source`` (no pixels), or None: not a DICOM file, or gone."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    path = Path(source)
    try:
        if not path.is_file() or not looks_like_dicom(path):
            return None
        return dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, ValueError):
        return None
