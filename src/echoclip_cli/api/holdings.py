"""What echoclip holds to search, and the remembered stores (``echoclip index``).

    >>> import echoclip_cli
    >>> echoclip_cli.holdings().preferred_weights().note   # which weights a plain search would use
    >>> echoclip_cli.remember_store("moved/archive.store") # a store moved by hand, found again
    >>> echoclip_cli.forget_store("old.store")              # searched only with --store from now on

``embed --out`` remembers each store it writes; :func:`echoclip_cli.search` without a store
searches them and the frame cache (:mod:`echoclip_cli.held`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import EchoclipError, UsageError
from .common import PathLike, store_header

if TYPE_CHECKING:
    from ..held import Holdings
    from ..remembered import Remembered


def holdings(weights_sha256: str | None = None) -> "Holdings":
    """Everything held to search (only what ``weights_sha256`` made, when given), grouped by
    weights: remembered stores and frame-cache folders; reads no vectors."""
    from ..held import holdings as held_now

    return held_now(weights_sha256)


def remembered_stores() -> tuple[list["Remembered"], list[str]]:
    """The remembered stores, and a note for each one that is gone (it is forgotten)."""
    from ..held import remembered_stores as listed

    return listed()


def remember_store(store: PathLike) -> "Remembered":
    """Remember a store (one moved by hand, or written before echoclip remembered stores) so that
    a search without ``--store`` looks through it."""
    from ..remembered import remember, remembered, where
    from ..store import read_store

    weights = store_header(store)["weights"]
    if not remember(store, weights["name"], weights["sha256"], len(read_store(store))):
        raise EchoclipError(f"cannot write the list of remembered stores in {_folder()}",
                            hint="check that the echoclip home (ECHOCLIP_HOME) is writable")
    return next(entry for entry in remembered() if entry.path == where(store))


def forget_store(store: PathLike) -> "Remembered":
    """Forget a store (its files stay): a search without ``--store`` no longer looks through it.
    A usage error when it is not remembered."""
    from ..remembered import forget

    try:
        dropped = forget(store)
    except OSError as exc:
        raise EchoclipError(f"cannot write the list of remembered stores in {_folder()} ({exc.strerror})") from None
    if dropped is None:
        raise UsageError(f"{store} is not a remembered store", hint="echoclip index list shows them")
    return dropped


def _folder() -> str:
    from ..remembered import folder

    return str(folder())
