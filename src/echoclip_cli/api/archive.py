"""Every use case over a DICOMweb archive: ``inputs`` may be an :class:`~echoclip_cli.dicomweb.Archive`.

:func:`reads_archives` lets a use-case call take an archive where it takes files. The studies
are found first (given, or by a QIDO-RS search) and their instances listed, so every input is
known before any pixel moves; then study after study is staged (only the sampled frames of the
clips the run scores, :mod:`echoclip_cli.dicomweb.staging`) into a private temporary folder, the
call runs on the staged files exactly as on files from a disk, and the records come back with
``source`` naming the instance on the server (its WADO-RS URL, without credentials). The next
study is fetched while the model works on this one. A study's folder is removed once its records
are out, so disk use stays at about two studies whatever the archive's size.

An instance that cannot be fetched (HTTP error, timeout, the study gone mid-run, the server
dead) is one error record naming it; a study whose instances cannot even be listed is one error
record naming the study. Calls that compare across studies (``match_patients``, ``report``) stage
every study first and run once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import queue
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..dicomweb import Archive, ServerError
from ..options import DEFAULT, RunOptions
from .common import Found, Progress, Silent


@dataclasses.dataclass
class _Study:
    """One study as the run goes: its instances listed, or why they could not be."""

    uid: str
    instances: list[tuple[str, str]]
    error: str | None = None


def reads_archives(types: Callable[[RunOptions], Sequence[str] | None], *, together: bool = False,
                   held: Callable[[dict[str, Any]], set[str]] | None = None) -> Callable:
    """A use-case call that also takes an :class:`Archive` as ``inputs``. ``types(options)``:
    the clip types the call scores (None: every type), so clips of other types are refused from
    their metadata. ``together``: stage every study, then call once (results that compare
    studies). ``held(arguments)``: instance URLs the call has already (the store it resumes),
    which are not fetched at all."""

    def wrap(call: Callable) -> Callable:
        signature = inspect.signature(call)

        @functools.wraps(call)
        def use_case(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            archive = bound.arguments.get("inputs")
            if not isinstance(archive, Archive):
                return call(*args, **kwargs)
            options = bound.arguments.get("options", DEFAULT)
            model = bound.arguments.get("model")
            if model is None:
                from ..errors import UsageError

                raise UsageError("reading a DICOMweb archive needs a model (its sampling decides what is fetched)")

            def run(found: Found, progress: Progress | None) -> Any:
                bound.arguments["inputs"] = found
                if "progress" in signature.parameters and progress is not None:
                    bound.arguments["progress"] = progress
                return call(*bound.args, **bound.kwargs)

            frames = options.sampled().apply(model.preprocess).frame_indices
            progress = bound.arguments.get("progress") or Silent()
            have = held(bound.arguments) if held is not None else set()
            if together:
                return _together(archive, run, frames, types(options), progress, have)
            return _per_study(archive, run, frames, types(options), progress, have)

        return use_case

    return wrap


def list_studies(archive: Archive, server: Any) -> list[_Study]:
    """The archive's studies, each with its instances listed (or the reason they are not).
    A failed search is raised: nothing could be read."""
    uids = list(archive.studies)
    if archive.query:
        found = server.search_studies(dict(archive.query))
        uids += [uid for uid in found if uid not in uids]
    studies = []
    for uid in uids:
        try:
            studies.append(_Study(uid, server.study_instances(uid)))
        except ServerError as exc:
            studies.append(_Study(uid, [], exc.message))
    return studies


def _per_study(archive: Archive, run: Callable, frames: Sequence[int], types: Sequence[str] | None,
               progress: Progress, held: set[str]) -> Iterator[Any]:
    from ..errors import MediaError

    server = archive.connect()
    try:
        studies = list_studies(archive, server)
    except ServerError as exc:
        raise MediaError(exc.message) from None
    counted = _Counted(progress, sum(max(1, len(s.instances)) for s in studies))
    already = 0
    with tempfile.TemporaryDirectory(prefix="echoclip-dicomweb-") as tmp:
        for staged in _staged_ahead(server, studies, frames, types, Path(tmp), progress, held):
            archive.headers.update(staged.headers)
            already += staged.held
            try:
                if staged.paths:
                    for record in run(Found(staged.paths), counted):
                        yield _rewrite(record, staged)
            finally:
                staged.remove()
    if already:
        progress.note(f"{already} instances already in the store: not fetched")
    progress.note(_summary(server))


def _together(archive: Archive, run: Callable, frames: Sequence[int], types: Sequence[str] | None,
              progress: Progress, held: set[str]) -> Any:
    from ..dicomweb.staging import StagedStudy
    from ..errors import MediaError

    server = archive.connect()
    try:
        studies = list_studies(archive, server)
    except ServerError as exc:
        raise MediaError(exc.message) from None
    with tempfile.TemporaryDirectory(prefix="echoclip-dicomweb-") as tmp:
        everything = StagedStudy("", Path(tmp))
        for staged in _staged_ahead(server, studies, frames, types, Path(tmp), progress, held):
            everything.paths += staged.paths
            everything.sources.update(staged.sources)
            everything.errors.update(staged.errors)
            archive.headers.update(staged.headers)
        result = run(Found(everything.paths), progress) if everything.paths else None
        if inspect.isgenerator(result):
            result = list(result)
        progress.note(_summary(server))
        return _rewrite(result, everything)


def _staged_ahead(server: Any, studies: list[_Study], frames: Sequence[int], types: Sequence[str] | None,
                  folder: Path, progress: Progress, held: set[str] = frozenset()) -> Iterator[Any]:
    """Each study staged (:func:`~echoclip_cli.dicomweb.staging.stage`), the next one fetched in
    a thread while the caller works on this one."""
    from ..dicomweb.staging import StagedStudy, stage

    said: set[str] = set()

    def warn_once(message: str) -> None:
        key = message.split(" (")[0]
        if key not in said:
            said.add(key)
            progress.warn(message)

    def one(number: int, study: _Study) -> StagedStudy:
        place = folder / f"{number:05d}"
        if study.error is not None:  # one record for the study: a file that is never written
            staged = StagedStudy(study.uid, place)
            path = place / "study.dcm"
            staged.paths.append(path)
            staged.sources[str(path)] = f"{server.url}/studies/{study.uid}"
            staged.errors[str(path)] = study.error
            return staged
        return stage(server, study.uid, study.instances, frames, place, wanted_types=types, warn=warn_once,
                     held=held)

    handoff: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        for number, study in enumerate(studies):
            if stop.is_set():
                return
            try:
                item: Any = one(number, study)
            except BaseException as exc:  # noqa: BLE001 - raised in the consumer
                item = exc
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
        handoff.put(None)

    thread = threading.Thread(target=produce, name="echoclip-dicomweb", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                leftover = handoff.get(timeout=0.1)
                if isinstance(leftover, StagedStudy):
                    leftover.remove()
            except queue.Empty:
                pass
        thread.join(timeout=5)


class _Counted:
    """The caller's progress over the whole archive: started once, with every instance listed."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.started = progress, total, False

    def start(self, total: int, frames_per_item: int | None) -> None:
        if not self.started:
            self.started = True
            self.progress.start(self.total, frames_per_item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.progress, name)


def _summary(server: Any) -> str:
    got = server.received
    pixels = got.get("frames", 0) + got.get("instance", 0)
    other = sum(got.values()) - pixels
    return (f"{server.url}: fetched {pixels / 1e6:.1f} MB of pixel data "
            f"({got.get('frames', 0) / 1e6:.1f} MB as single frames, {got.get('instance', 0) / 1e6:.1f} MB as whole "
            f"instances) and {other / 1e3:.0f} kB of metadata and searches")


def _rewrite(value: Any, staged: Any) -> Any:
    """``value`` (a record, a list, a result object) with each staged file's path replaced by its
    instance's URL, and the error of each instance that could not be fetched."""
    sources: dict[str, str] = staged.sources
    errors: dict[str, str] = staged.errors
    if not sources:
        return value
    paths = re.compile(re.escape(str(staged.folder)) + r"[^\s'\"]*?\.dcm")

    def text(item: str) -> str:
        if item in sources:
            return sources[item]
        return paths.sub(lambda m: sources.get(m.group(0), m.group(0)), item) if str(staged.folder) in item else item

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return text(item)
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, tuple) and not hasattr(item, "_fields"):
            return tuple(walk(v) for v in item)
        if isinstance(item, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in item.items()}
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            changes = {f.name: walk(getattr(item, f.name)) for f in dataclasses.fields(item) if f.init}
            source = getattr(item, "source", None)
            if isinstance(source, str) and source in errors and getattr(item, "error", None) is not None:
                changes["error"] = errors[source]
                if "study" in changes:  # it was never read: its study is the one it was listed in
                    changes["study"] = sources[source].split("/studies/")[-1].split("/")[0]
            try:
                return dataclasses.replace(item, **changes)
            except (TypeError, ValueError):
                return item
        return item

    return walk(value)


def with_stow(records: Iterable[Any], archive: Archive) -> Iterator[Any]:
    """The records as they come; each study output that wrote an SR file (``exchange.with_sr``)
    is stored into its study on the archive's server (STOW-RS) and comes out with ``stored`` (the
    study's URL), or with ``error`` saying why it was not."""
    server = None
    for record in records:
        output = getattr(record, "output", None)
        if getattr(record, "level", None) != "sr" or not output:
            yield record
            continue
        if server is None:
            server = archive.connect()
        try:
            from pydicom import dcmread

            server.store([dcmread(output)], study=record.study)
        except ServerError as exc:
            yield dataclasses.replace(record, error=f"{output} not stored: {exc.message}")
            continue
        yield dataclasses.replace(record, stored=f"{server.url}/studies/{record.study}")
