"""What a run reads from a DICOMweb server: :class:`Archive`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..errors import UsageError

_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9]*|[0-9A-Fa-f]{8})(\.[A-Za-z][A-Za-z0-9]*|\.[0-9A-Fa-f]{8})*$")


@dataclass(frozen=True)
class Archive:
    """Studies on a DICOMweb server: ``studies`` (Study Instance UIDs) and/or the studies a QIDO-RS
    search with ``query`` finds (DICOM keywords or tags → values, e.g. ``{"ModalitiesInStudy":
    "US", "StudyDate": "20240101-20240131"}``). Credentials are never part of it (see
    :mod:`echoclip_cli.dicomweb.server`). ``timeout`` (seconds) bounds each request; ``retries``
    transient failures are retried with backoff."""

    url: str
    studies: tuple[str, ...] = ()
    query: tuple[tuple[str, str], ...] = field(default=())
    timeout: float = 30.0
    retries: int = 3
    # filled as a run goes: each instance's identifying header by its URL (an SR written back
    # into its study copies the patient and study from it); not part of what the archive is
    headers: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        from .server import check_url, is_uid

        object.__setattr__(self, "url", check_url(self.url))
        object.__setattr__(self, "studies", tuple(dict.fromkeys(str(s).strip() for s in self.studies)))
        object.__setattr__(self, "query", _pairs(self.query))
        bad = [uid for uid in self.studies if not is_uid(uid)]
        if bad:
            raise UsageError(f"--study: not a Study Instance UID: {bad[0][:80]!r}")
        if not self.studies and not self.query:
            raise UsageError("--dicomweb needs --study UID (repeatable) or --query KEY=VALUE (a QIDO-RS search)")
        if not (self.timeout > 0) or self.retries < 0:
            raise UsageError("the DICOMweb timeout must be positive and retries not negative")

    def connect(self) -> Any:
        """A :class:`~echoclip_cli.dicomweb.server.Server` for this archive (credentials from the
        environment or a netrc file)."""
        from .server import Server

        return Server(self.url, timeout=self.timeout, retries=self.retries)


def parse_query(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` strings (the command line's ``--query``) as pairs; a usage error otherwise."""
    pairs = []
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise UsageError(f"--query: give KEY=VALUE (e.g. ModalitiesInStudy=US), not {item!r}")
        pairs.append((key.strip(), value.strip()))
    return _pairs(pairs)


def _pairs(query: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    items = list(query.items()) if isinstance(query, Mapping) else [tuple(p) for p in query]
    for key, value in items:
        if not _KEY.match(str(key)):
            raise UsageError(f"--query: {str(key)[:40]!r} is not a DICOM keyword or tag")
        if any(ch in str(value) for ch in "\r\n\x00"):
            raise UsageError(f"--query: the value of {key} holds a control character")
    return tuple((str(k), str(v)) for k, v in items)
