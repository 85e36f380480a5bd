"""File plumbing every stage shares: the echoclip home, content hashes, stat keys (identity
without reading), atomic writes with the usual permissions, and the DICOM sniff. It imports
nothing of the package, so every module may import it (how stores recognise an input by these
keys: :mod:`echoclip_cli.identity`).

Atomic writes go to a temporary file in the target's folder and are renamed into place, so a
reader (or a run killed at any moment) never sees half a file. ``mkstemp``/``mkdtemp`` create
0600/0700 entries; they are given the modes a plain ``open``/``mkdir`` would (0644/0755 under
umask 022), so a store or weights home shared by a lab group stays readable to the group.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

HASH_CHUNK = 8 << 20  # bytes read per step while hashing: large enough for disk throughput
DICOM_MAGIC_AT = 128  # the DICOM preamble: 128 bytes, then "DICM"
HOME_ENV = "ECHOCLIP_HOME"


def home() -> Path:
    """The echoclip home: installed weights, the frame and text caches, the patient-key salt.
    ``$ECHOCLIP_HOME``, else ``$XDG_CACHE_HOME/echoclip``, else ``~/.cache/echoclip``."""
    if env := os.environ.get(HOME_ENV):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "echoclip"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes | memoryview) -> str:
    """The sha256 of bytes already read: :func:`sha256_file` of the file they were read from."""
    return hashlib.sha256(data).hexdigest()


def stat_key(path: str | os.PathLike[str]) -> str:
    """A file's identity without reading it: a digest of its absolute path, size and modification
    time (nanoseconds). Stores keep it so a rerun skips unchanged files without hashing them; the
    path itself is not kept in it readably."""
    st = os.stat(path)
    text = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def umask() -> int:
    """The process umask (read once: setting it to read it back is not safe while threads write)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary file beside ``path``, give it the usual file mode, and
    rename it onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


STALE_STAGING_SECONDS = 6 * 3600  # no build, export or import takes that long: its folder is a leftover


def staging_dir(beside: Path, suffix: str) -> Path:
    """A new hidden folder next to ``beside`` (same file system, so it can be renamed into place),
    with the usual folder mode. Leftovers of the same kind that an interrupted run left there
    (older than :data:`STALE_STAGING_SECONDS`) are deleted first."""
    _sweep(beside, suffix)
    folder = Path(tempfile.mkdtemp(dir=beside.parent, prefix=f".{beside.name}.", suffix=suffix))
    os.chmod(folder, 0o777 & ~umask())
    return folder


def _sweep(beside: Path, suffix: str) -> None:
    import shutil
    import time

    cutoff = time.time() - STALE_STAGING_SECONDS
    try:
        leftovers = list(beside.parent.glob(f".{beside.name}.*{suffix}"))
    except OSError:
        return
    for path in leftovers:
        try:
            if path.is_dir() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def head(path: str | os.PathLike[str], size: int = DICOM_MAGIC_AT + 4) -> bytes:
    """The first ``size`` bytes of a file (b"" when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def has_dicom_preamble(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes) holds the DICOM preamble, "DICM" at byte 128."""
    return data[DICOM_MAGIC_AT : DICOM_MAGIC_AT + 4] == b"DICM"
