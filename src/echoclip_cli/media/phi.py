"""Patient data: what may leave a DICOM header, and the salted patient key.

Outputs never hold names, birth dates or raw IDs unless the user asks (``keep_phi``). To let
later commands group videos by patient without the ID itself, each output carries
``patient_key``: the first 16 hex digits of HMAC-SHA256(salt, PatientID).

The salt, first found wins:

1. the ``salt`` argument (``--salt``);
2. the ``ECHOCLIP_SALT`` environment variable;
3. a random 32-byte salt made on first use and kept in ``$ECHOCLIP_HOME/salt`` (mode 0600).

With the default (3) keys link videos within one installation only; set the same salt on every
machine (and keep it secret: with the salt, anyone can test a guessed ID) to link across sites.
A home that cannot keep a salt (read-only, full) gets one for this process only, with an
:class:`~echoclip_cli.errors.EchoclipWarning`: keys then link videos within the run. A run
resolves its salt once (:func:`run_salt`) and hands it to its decode workers, so they share it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import warnings
from pathlib import Path
from typing import Any

from ..errors import EchoclipWarning, MediaError

SALT_ENV = "ECHOCLIP_SALT"
SALT_FILE = "salt"

# Header fields that identify a person: only ever copied into outputs under ``keep_phi``.
PHI_FIELDS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "accession_number": "AccessionNumber",
    "institution_name": "InstitutionName",
    "referring_physician": "ReferringPhysicianName",
}


def _salt_path() -> Path:
    from ..files import home

    return home() / SALT_FILE


def _home_salt() -> str:
    """The per-home salt, created (atomically, owner-only) the first time it is needed; where the
    home cannot keep one, this process's own (:func:`_process_salt`)."""
    path = _salt_path()
    try:
        return _kept_salt(path)
    except OSError as exc:
        return _process_salt(path, exc)


def _kept_salt(path: Path) -> str:
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SALT_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # fails if another process made one meanwhile: keep theirs
    except FileExistsError:
        pass  # another process made the salt meanwhile: theirs is the one every run now reads
    finally:
        tmp.unlink()
    return path.read_text().strip()


_PROCESS_SALT: list[str] = []  # this process's salt, made once, where the home cannot keep one


def _process_salt(path: Path, exc: OSError) -> str:
    if not _PROCESS_SALT:
        _PROCESS_SALT.append(secrets.token_hex(32))
        warnings.warn(f"cannot keep a patient-key salt at {path} ({exc.strerror or type(exc).__name__}): "
                      "patient keys of this run are made with a salt for this run only and will not match other "
                      f"runs' (set {SALT_ENV} to link runs)", EchoclipWarning, stacklevel=2)
    return _PROCESS_SALT[0]


def run_salt(salt: str | None = None) -> str | None:
    """The salt a run hands to its decode workers, resolved once here: a worker resolving its own
    would make its own where the home cannot keep one, and keys would differ between workers.
    None where it cannot be resolved (an empty salt file): each DICOM input then says why."""
    try:
        return resolve_salt(salt)
    except MediaError:
        return salt


def resolve_salt(salt: str | None = None) -> str:
    """The salt to use: the argument, else ``$ECHOCLIP_SALT``, else the per-home salt."""
    chosen = salt if salt else os.environ.get(SALT_ENV) or _home_salt()
    if not chosen:
        raise MediaError(f"the patient-key salt is empty (check {_salt_path()})")
    return chosen


def patient_key(patient_id: str | None, salt: str) -> str | None:
    """16 hex digits of HMAC-SHA256(salt, PatientID); ``None`` when there is no ID."""
    pid = (patient_id or "").strip()
    if not pid:
        return None
    return hmac.new(salt.encode(), pid.encode(), hashlib.sha256).hexdigest()[:16]


def phi_values(ds: Any) -> dict[str, str | None]:
    """The identifying header values (for ``keep_phi`` outputs only)."""
    values = {}
    for key, keyword in PHI_FIELDS.items():
        value = ds.get(keyword)
        values[key] = str(value) if value not in (None, "") else None
    return values


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def safe_reason(exc: BaseException, limit: int = 160) -> str:
    """A library exception as one short line, quoted values blanked (they may be header values)."""
    text = str(getattr(exc, "strerror", None) or exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if first.endswith(":") and len(lines) > 1:  # pydicom: "... raised by all available plugins:", one line each
        first = lines[1]
    return _QUOTED.sub("'…'", first)[:limit]
