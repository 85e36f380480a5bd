"""One DICOMweb server: QIDO-RS search, WADO-RS metadata, frames and instances, STOW-RS store.

Built on ``dicomweb-client`` (QIDO, metadata, whole instances, STOW) over one ``requests``
session that carries what a hospital's server needs:

- **Credentials** never on the command line: a URL with ``user:password@`` is refused. They come
  from the environment (``ECHOCLIP_DICOMWEB_TOKEN`` for a bearer token, or
  ``ECHOCLIP_DICOMWEB_USER`` + ``ECHOCLIP_DICOMWEB_PASSWORD``), else from a netrc-style file
  (``ECHOCLIP_NETRC``, else ``NETRC``, else ``~/.netrc``) entry for the server's host. They are
  never put in records, messages or logs: every message names the server by its URL without
  credentials (:func:`public_url`).
- **TLS verification** on (``ECHOCLIP_DICOMWEB_CA`` names a CA bundle for a hospital's own CA).
- **Retries with backoff** on connection errors and 429/500/502/503/504 (``retries`` tries,
  0.5 s, 1 s, 2 s …), and a **timeout** on every request.
- **Frames**: WADO-RS ``…/frames/1,3,5`` asked with ``transfer-syntax=*``, so JPEG frames arrive
  as stored (compressed) and the response says their transfer syntax (``dicomweb-client``'s frame
  call does not expose it, so frames are read here from the multipart response).
- **Bytes**: every response's body size is counted by kind (``metadata``, ``frames``,
  ``instance``, ``query``), for the run's summary and the tests.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import EchoclipError, UsageError

TRANSIENT = (429, 500, 502, 503, 504)
PAGE = 1000  # QIDO results asked for at a time
GIVE_UP = 3  # requests in a row that cannot reach the server before it is taken as gone


class ServerError(EchoclipError):
    """The server could not be reached or answered with an error (one input's error record)."""

    def __init__(self, message: str, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


def public_url(url: str) -> str:
    """``url`` without credentials, query or fragment: what records and messages may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def check_url(url: str) -> str:
    """The server's base URL, checked (a usage error otherwise): http(s), a host, no credentials."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise UsageError(f"--dicomweb: not a URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--dicomweb: give the server's http(s) URL (e.g. https://pacs.example.org/dicom-web), "
                         f"not {public_url(url) or '(empty)'!r}")
    if parts.username or parts.password:
        raise UsageError("--dicomweb: credentials do not belong in the URL (they would show in process lists and "
                         "shell history)", hint="set ECHOCLIP_DICOMWEB_USER and ECHOCLIP_DICOMWEB_PASSWORD, "
                         "ECHOCLIP_DICOMWEB_TOKEN, or a netrc entry for the host")
    return public_url(url)


def credentials(url: str, environ: dict[str, str] | None = None) -> Any:
    """What authenticates requests to ``url``: a bearer token or (user, password) from the
    environment, else the netrc entry for its host, else None (see the module doc)."""
    env = os.environ if environ is None else environ
    token = env.get("ECHOCLIP_DICOMWEB_TOKEN")
    if token:
        return _Bearer(token)
    user, password = env.get("ECHOCLIP_DICOMWEB_USER"), env.get("ECHOCLIP_DICOMWEB_PASSWORD")
    if user and password is not None:
        return (user, password)
    path = env.get("ECHOCLIP_NETRC") or env.get("NETRC") or str(Path.home() / ".netrc")
    if not Path(path).is_file():
        return None
    try:
        entry = netrc.netrc(path).authenticators(urlsplit(url).hostname or "")
    except (netrc.NetrcParseError, OSError) as exc:
        raise UsageError(f"cannot read the credentials file {path}: {type(exc).__name__}") from None
    if entry is None:
        return None
    login, _, password = entry
    return (login or "", password or "")


class _Bearer:
    """``Authorization: Bearer …`` (the token is never part of a repr)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(<hidden>)"


@dataclass
class Frames:
    """Frames of one instance as the server sent them: their bytes in the order asked and their
    transfer syntax UID (None when the server did not say)."""

    data: list[bytes]
    transfer_syntax: str | None


def _session(auth: Any, timeout: float, retries: int) -> Any:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class Session(requests.Session):
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            kwargs.setdefault("timeout", timeout)
            return super().request(method, url, *args, **kwargs)

    session = Session()
    session.auth = auth
    session.trust_env = False  # credentials and proxies are this module's choice, not ~/.netrc's behind its back
    ca = os.environ.get("ECHOCLIP_DICOMWEB_CA")
    session.verify = ca if ca else True
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.5,
                  status_forcelist=TRANSIENT, allowed_methods=None, raise_on_status=False,
                  respect_retry_after_header=True)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Server:
    """A DICOMweb server at ``url`` (its base, e.g. ``http://host:8042/dicom-web``)."""

    def __init__(self, url: str, *, timeout: float = 30.0, retries: int = 3, auth: Any = "environment") -> None:
        try:
            from dicomweb_client.api import DICOMwebClient
        except ImportError:
            raise UsageError("reading a DICOMweb server needs dicomweb-client",
                             hint="pip install 'echoclip[pacs]'") from None
        self.url = check_url(url)
        self.timeout, self.retries = timeout, retries
        self.session = _session(credentials(self.url) if auth == "environment" else auth, timeout, retries)
        self.client = DICOMwebClient(self.url, session=self.session, timeout=timeout)
        self.client.set_http_retry_params(retry=False)  # the session retries (with backoff); not twice
        for name in ("dicomweb_client", "retrying"):  # their warnings carry tracebacks: never on a user's terminal
            logging.getLogger(name).addHandler(logging.NullHandler())
        self._lock = threading.Lock()
        self.received: dict[str, int] = {}
        self.down: str | None = None  # why the server is taken as gone (no more requests are sent)
        self._unreachable = 0  # requests in a row that could not reach the server (after their retries)

    # ------------------------------------------------------------------ bookkeeping

    def _count(self, kind: str, size: int) -> None:
        with self._lock:
            self.received[kind] = self.received.get(kind, 0) + size

    def instance_url(self, study: str, series: str, sop: str) -> str:
        return f"{self.url}/studies/{study}/series/{series}/instances/{sop}"

    def _send(self, what: str, action: Any) -> Any:
        """Run ``action`` (one request, retried by the session), its failures as one
        :class:`ServerError`. After :data:`GIVE_UP` requests in a row could not reach the server
        at all, it is taken as gone: later requests fail at once with the same reason (a server
        that died mid-run costs one quick error record per remaining input, not minutes each)."""
        import requests

        if self.down is not None:
            raise ServerError(f"{what}: {self.down}")
        try:
            result = action()
        except requests.HTTPError as exc:
            self._unreachable = 0
            status = exc.response.status_code if exc.response is not None else None
            raise ServerError(f"{what}: {answered(status)}", status) from None
        except requests.RequestException as exc:
            reason = _reason(exc)
            if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)):
                self._unreachable += 1
                if self._unreachable >= GIVE_UP:
                    self.down = f"{reason}; the server is taken as gone after {GIVE_UP} failed requests in a row"
            raise ServerError(f"{what}: {reason}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerError(f"{what}: the server's answer could not be read ({type(exc).__name__})") from None
        self._unreachable = 0
        return result

    def _call(self, what: str, kind: str, action: Any) -> Any:
        """:meth:`_send` a dicomweb-client call and count what it brought."""
        result = self._send(what, action)
        self._count(kind, _size(result))
        return result

    # ------------------------------------------------------------------ QIDO-RS

    def search_studies(self, filters: dict[str, str]) -> list[str]:
        """Study Instance UIDs matching QIDO ``filters`` (every page)."""
        found = self._pages(f"{self.url}: study search", "0020000D",
                            lambda offset: self.client.search_for_studies(search_filters=dict(filters), offset=offset,
                                                                          limit=PAGE))
        return [uid for item in found if (uid := _value(item, "0020000D")) and is_uid(uid)]

    def _pages(self, what: str, key: str, page: Any) -> list[dict[str, Any]]:
        """Every result of a QIDO search, a page of :data:`PAGE` at a time. Some servers ignore
        ``offset`` with some filters (Orthanc 1.10 with ``ModalitiesInStudy``) and send the first
        page again: a page with nothing new ends the search (dicomweb-client's own paging would
        loop for ever there)."""
        results: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            found = self._call(what, "query", lambda: page(offset))
            new = {uid: item for item in found if (uid := _value(item, key)) and uid not in results}
            results.update(new)
            if not new or len(found) < PAGE:
                return list(results.values())
            offset += len(found)

    def study_instances(self, study: str, sop_classes: str | None = None) -> list[tuple[str, str]]:
        """``(series UID, SOP instance UID)`` of every instance of ``study`` (of SOP classes whose
        UID starts with ``sop_classes``, when given), in series then instance number order; a
        :class:`ServerError` (status 404) when the study is not there."""
        found = self._pages(f"{self.url}/studies/{study}", "00080018",
                            lambda offset: self.client.search_for_instances(study_instance_uid=study, offset=offset,
                                                                            limit=PAGE))
        if not found:
            raise ServerError(f"{self.url}/studies/{study}: no such study on the server", 404)
        rows = []
        for item in found:
            series, sop = _value(item, "0020000E"), _value(item, "00080018")
            if sop_classes is not None and not (_value(item, "00080016") or "").startswith(sop_classes):
                continue
            if series and sop and is_uid(series) and is_uid(sop):  # they go into URLs and file names
                rows.append((_number(item, "00200011"), series, _number(item, "00200013"), sop))
        return [(series, sop) for _, series, _, sop in sorted(rows)]

    # ------------------------------------------------------------------ WADO-RS

    def metadata(self, study: str, series: str, sop: str) -> dict[str, Any]:
        """The instance's metadata (DICOM JSON, no pixel data)."""
        found = self._call(self.instance_url(study, series, sop) + "/metadata", "metadata",
                           lambda: self.client.retrieve_instance_metadata(study, series, sop))
        if isinstance(found, list):
            found = found[0] if found else {}
        if not isinstance(found, dict):
            raise ServerError(f"{self.instance_url(study, series, sop)}/metadata: not a DICOM JSON object")
        return found

    def series_metadata(self, study: str, series: str) -> dict[str, dict[str, Any]]:
        """The metadata of every instance of a series in one request, by SOP Instance UID."""
        found = self._call(f"{self.url}/studies/{study}/series/{series}/metadata", "metadata",
                           lambda: self.client.retrieve_series_metadata(study, series))
        if not isinstance(found, list):
            raise ServerError(f"{self.url}/studies/{study}/series/{series}/metadata: not a list of DICOM JSON objects")
        return {sop: item for item in found if isinstance(item, dict) and (sop := _value(item, "00080018"))}

    def frames(self, study: str, series: str, sop: str, numbers: Sequence[int]) -> Frames:
        """Frames ``numbers`` (1-based, as DICOMweb counts) as stored: their bytes and transfer
        syntax. A :class:`ServerError` with the HTTP status when the server cannot serve them."""
        url = f"{self.instance_url(study, series, sop)}/frames/{','.join(str(n) for n in numbers)}"
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        response = self._send(url, lambda: self.session.get(url, headers={"Accept": accept}))
        self._count("frames", len(response.content))
        if response.status_code != 200:
            raise ServerError(f"{url}: {answered(response.status_code)}", response.status_code)
        parts, syntax = _multipart(response.headers.get("Content-Type", ""), response.content)
        if len(parts) != len(numbers):
            raise ServerError(f"{url}: the server sent {len(parts)} frame(s) for the {len(numbers)} asked")
        return Frames(parts, syntax)

    def instance(self, study: str, series: str, sop: str) -> Any:
        """The whole instance as stored (a pydicom Dataset)."""
        return self._call(self.instance_url(study, series, sop), "instance",
                          lambda: self.client.retrieve_instance(study, series, sop,
                                                                media_types=(("application/dicom", "*"),)))

    # ------------------------------------------------------------------ STOW-RS

    def store(self, datasets: Sequence[Any], study: str | None = None) -> None:
        """Store ``datasets`` (STOW-RS); a :class:`ServerError` when any is refused."""
        result = self._call(f"{self.url}/studies" + (f"/{study}" if study else ""), "store",
                            lambda: self.client.store_instances(list(datasets), study_instance_uid=study))
        failed = result.get("FailedSOPSequence") if result is not None else None
        if failed:
            raise ServerError(f"{self.url}: the server refused {len(failed)} of {len(datasets)} instance(s)")


_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def answered(status: int | None) -> str:
    """An HTTP error status in words for a record."""
    meaning = {401: "credentials refused", 403: "not allowed", 404: "not on the server (deleted or moved?)",
               406: "cannot be served in the form asked", 500: "the server failed", 503: "the server is unavailable"}
    return f"the server answered HTTP {status}" + (f": {meaning[status]}" if status in meaning else "")


def is_uid(text: str) -> bool:
    """Whether ``text`` is a DICOM UID (digits and dots, at most 64 characters)."""
    return len(text) <= 64 and _UID.match(text) is not None


def _reason(exc: Exception) -> str:
    """A requests failure in a few words, without the URL's query or any header."""
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed (set ECHOCLIP_DICOMWEB_CA to the hospital's CA bundle)"
    if isinstance(exc, requests.exceptions.Timeout):
        return "the server did not answer in time"
    if isinstance(exc, requests.exceptions.RetryError):
        return "the server kept failing (retries used up)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect to the server"
    return f"request failed ({type(exc).__name__})"


def _value(item: dict[str, Any], tag: str) -> str | None:
    values = (item.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else None


def _number(item: dict[str, Any], tag: str) -> int:
    try:
        return int(_value(item, tag) or 0)
    except ValueError:
        return 0


def _size(result: Any) -> int:
    """About how many bytes an answer held (for the run's summary)."""
    import json

    from pydicom.dataset import Dataset

    if isinstance(result, Dataset):
        pixels = result.get("PixelData")
        return len(pixels) if isinstance(pixels, (bytes, bytearray)) else 0
    try:
        return len(json.dumps(result))
    except (TypeError, ValueError):
        return 0


_SYNTAX = re.compile(r'transfer-syntax\s*=\s*"?([0-9.]+)"?', re.IGNORECASE)
_BOUNDARY = re.compile(r'boundary\s*=\s*"?([^";]+)"?', re.IGNORECASE)


def _multipart(content_type: str, body: bytes) -> tuple[list[bytes], str | None]:
    """The parts of a multipart/related body (RFC 2046: each after a CRLF, ``--``, the boundary)
    and the transfer syntax its parts (or the whole) declare."""
    found = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/") or found is None:
        raise ServerError(f"frames came as {content_type.split(';')[0] or 'an unnamed type'}, not multipart")
    delimiter = b"\r\n--" + found.group(1).strip().encode("latin-1")
    parts, syntax = [], None
    for chunk in (b"\r\n" + body).split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        end = chunk.find(b"\r\n\r\n")
        if end < 0:
            raise ServerError("a part of the server's multipart answer has no header end")
        headers = chunk[:end].decode("latin-1")
        parts.append(chunk[end + 4:])
        declared = _SYNTAX.search(headers)
        syntax = syntax or (declared.group(1) if declared else None)
    if syntax is None and (declared := _SYNTAX.search(content_type)) is not None:
        syntax = declared.group(1)
    return parts, syntax
