"""What this machine's echoclip holds to search: the stores it has written and the frame cache.

    >>> import echoclip_cli
    >>> held = echoclip_cli.holdings()
    >>> choice = held.preferred_weights()        # echo-clip-r when its vectors are held and installed
    >>> choice.name, choice.note
    >>> held.for_weights(choice.weights_sha256).describe()      # '2 stores and 14 cached videos'

``embed --out`` remembers every store it writes (:mod:`echoclip_cli.remembered`); every model
command on files leaves their frame embeddings in the cache (:mod:`echoclip_cli.frame_cache`).
Both are grouped here by the weights that made them: a search embeds its query with one weights,
so it searches the vectors of those only. Where several weights hold vectors, the retrieval model
(``echo-clip-r``, then any template-tokenizer weights) is preferred when installed, else the
zero-shot model (``echo-clip``), else the weights holding the most videos.

A remembered store whose folder is gone (moved or deleted) is listed in ``gone``;
:func:`drop_gone` forgets it and says so. Reading what is held (:func:`read_held`) never fails on
one unreadable store: it is left out with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from . import frame_cache, remembered
from .defaults import RETRIEVAL_WEIGHTS, ZERO_SHOT_WEIGHTS
from .errors import NothingHeldError, WeightsNotFoundError
from .frame_cache import CacheFolder
from .remembered import Remembered
from .store import HEADER, StoreError

if TYPE_CHECKING:
    from .store import Store
    from .weights import Bundle

CACHE = "cache"  # the origin named in search records for videos from the frame cache
FIRST = "run `echoclip embed --dir STUDIES --out STORE` first"
HINT = ("any model command on a folder (predict-ef, detect-devices, ...) also leaves its videos to search; "
        "or give --store STORE")


@dataclass(frozen=True)
class Held:
    """What is held for one weights: remembered stores and frame-cache folders."""

    weights_sha256: str
    weights: str  # the name the vectors record
    stores: tuple[Remembered, ...] = ()
    cache: tuple[CacheFolder, ...] = ()

    @property
    def cached_videos(self) -> int:
        return sum(folder.videos for folder in self.cache)

    @property
    def videos(self) -> int:
        """Videos held, as counted when written (a store's count may lag a concurrent writer)."""
        return sum(store.videos or 0 for store in self.stores) + self.cached_videos

    def describe(self) -> str:
        """'2 stores and 14 cached videos'."""
        stores = f"{len(self.stores)} store" + ("s" if len(self.stores) != 1 else "")
        return f"{stores} and {self.cached_videos} cached video" + ("s" if self.cached_videos != 1 else "")


@dataclass(frozen=True)
class WeightsChoice:
    """The weights a search of what is held runs with, and a line saying why."""

    name: str  # an installed bundle
    weights_sha256: str
    note: str


@dataclass(frozen=True)
class Holdings:
    """Everything held, grouped by weights; ``gone``: remembered stores no longer where they were."""

    held: tuple[Held, ...] = ()
    gone: tuple[Remembered, ...] = ()

    def for_weights(self, weights_sha256: str) -> Held | None:
        return next((h for h in self.held if h.weights_sha256 == weights_sha256), None)

    def preferred_weights(self) -> WeightsChoice:
        """The weights to search with when none are named (see the module docstring); a
        :class:`NothingHeldError` when nothing is held, a :class:`WeightsNotFoundError` when no
        weights that made what is held are installed."""
        if not self.held:
            raise nothing_held()
        from . import weights as w

        installed = {h.weights_sha256: b for h in self.held
                     if (b := w.installed_by_sha256(h.weights_sha256, prefer=h.weights)) is not None}
        if not installed:
            raise _not_installed(max(self.held, key=lambda h: h.videos))
        chosen = min((h for h in self.held if h.weights_sha256 in installed),
                     key=lambda h: _preference(installed[h.weights_sha256], h))
        bundle = installed[chosen.weights_sha256]
        others = [h for h in self.held if h is not chosen]
        return WeightsChoice(bundle.name, chosen.weights_sha256, _choice_note(bundle, others))


def nothing_held(weights: str | None = None, others: tuple[Held, ...] = ()) -> NothingHeldError:
    """The error of a search with nothing to search (for ``weights``, when named)."""
    if weights is None:
        return NothingHeldError(f"nothing to search yet (no stores, an empty embedding cache): {FIRST}", hint=HINT)
    held = "; ".join(f"{h.weights}: {h.describe()}" for h in others)
    return NothingHeldError(f"nothing embedded by weights {weights} to search: {FIRST}",
                            hint=f"echoclip holds {held}: --weights NAME searches those" if held else HINT)


def _preference(bundle: "Bundle", held: Held) -> tuple[bool, bool, bool, int]:
    """Sort key: echo-clip-r, other retrieval (template) weights, echo-clip, then most videos."""
    return (bundle.name != RETRIEVAL_WEIGHTS, bundle.tokenizer_kind != "template", bundle.name != ZERO_SHOT_WEIGHTS,
            -held.videos)


def _role(bundle: "Bundle") -> str:
    return "the retrieval model" if bundle.tokenizer_kind == "template" else "the zero-shot model"


def _choice_note(bundle: "Bundle", others: list[Held]) -> str:
    note = f"searching with weights {bundle.name} ({_role(bundle)})"
    if others:
        also = "; ".join(f"{h.weights}: {h.describe()}" for h in others)
        note += f"; also held: {also} (--weights NAME searches those)"
    return note


def _not_installed(held: Held) -> WeightsNotFoundError:
    from . import weights as w

    hint = (w.manual_import_hint(held.weights) if held.weights in w.REGISTRY
            else "install them with `echoclip weights import CHECKPOINT --name NAME`")
    return WeightsNotFoundError(f"what echoclip holds was embedded by weights {held.weights!r} "
                                f"({held.weights_sha256[:12]}…), which are not installed", hint=hint)


def holdings(weights_sha256: str | None = None) -> Holdings:
    """What is held (only what ``weights_sha256`` made, when given): cheap, reads no vectors."""
    present, gone = [], []
    for entry in remembered.remembered():
        if weights_sha256 not in (None, entry.weights_sha256):
            continue
        if is_gone(entry):
            gone.append(entry)
        elif next(entry.path.glob("part-*.safetensors"), None) is not None:  # an empty store holds nothing
            present.append(entry)
    caches = [folder for folder in frame_cache.folders(weights_sha256) if folder.videos]
    return Holdings(_grouped(present, caches), tuple(gone))


def _grouped(stores: list[Remembered], caches: list[CacheFolder]) -> tuple[Held, ...]:
    names = {**{c.weights_sha256: c.weights for c in caches}, **{s.weights_sha256: s.weights for s in stores}}
    return tuple(Held(sha, name, tuple(s for s in stores if s.weights_sha256 == sha),
                      tuple(c for c in caches if c.weights_sha256 == sha)) for sha, name in names.items())


def is_gone(entry: Remembered) -> bool:
    """Whether a remembered store is no longer where it was written (moved or deleted)."""
    return not (entry.path / HEADER).is_file()


def remembered_stores() -> tuple[list[Remembered], list[str]]:
    """The remembered stores still where they were, and a note for each one gone (forgotten)."""
    entries = remembered.remembered()
    gone = [entry for entry in entries if is_gone(entry)]
    return [entry for entry in entries if entry not in gone], drop_gone(gone)


def drop_gone(gone: Sequence[Remembered]) -> list[str]:
    """Forget remembered stores that are gone; one note for each (where the home cannot be
    written they stay listed, and are left out and said again next time)."""
    notes = []
    for entry in gone:
        try:
            remembered.forget(entry.path)
        except OSError:
            pass  # a read-only home: still left out of this search
        notes.append(f"{entry.path} is gone (moved or deleted): dropped from the remembered stores "
                     "(`echoclip index add PATH` remembers it where it is now)")
    return notes


def read_held(held: Held) -> tuple[list[tuple[str, "Store"]], list[str]]:
    """The vectors held for one weights, each store with where it lies (its path, or ``cache``),
    and a warning for each remembered store that could not be read or now holds other weights."""
    from .store import read_store

    read: list[tuple[str, Store]] = []
    warnings = []
    for entry in held.stores:
        try:
            store = read_store(entry.path)
        except StoreError as exc:
            warnings.append(f"{exc.message}; left out of the search")
            continue
        if store.weights_sha256 != held.weights_sha256:
            warnings.append(f"{entry.path} now holds embeddings of weights {store.header['weights']['name']!r}; "
                            "left out of the search")
            continue
        read.append((str(entry.path), store))
    read.extend((CACHE, frame_cache.videos(folder.path)) for folder in held.cache)
    return read, warnings


__all__ = ["CACHE", "FIRST", "HINT", "Held", "Holdings", "WeightsChoice", "drop_gone", "holdings", "is_gone",
           "nothing_held", "read_held", "remembered_stores"]
