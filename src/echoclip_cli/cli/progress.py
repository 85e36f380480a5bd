"""Progress a person can read, on stderr only, that never takes a record away from stdout.

Rich's ``Progress`` replaces ``sys.stdout`` while it is live (``redirect_stdout=True``) and so sent
every record written during a run to the *stderr* console: ``predict-ef … > ef.csv`` from a
terminal left ef.csv empty. Here the bar is drawn with stdout left alone. When stdout is the
terminal too, a record line is written between two draws of the bar (``common.write_stdout``).

:class:`Bar` is the CLI's side of the library's progress hook (``echoclip_cli.api.Progress``):
the library says how many inputs it will read and reports frames, finished inputs, notes (hidden
by ``--quiet``) and warnings (always shown); embedding
runs advance per batch of frames, not per video (on a CPU one batch of 64 frames may hold every
video of a small run, and a bar counting videos sat at 0/6 for minutes).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from . import common
from .common import err_console, info, warn


class Bar:
    """One run's progress. With ``frames_per_item`` the bar measures frames: it starts from
    ``items × frames_per_item`` and shrinks its total when an input turns out shorter (or fails),
    so the ETA is honest from the first batch. Without it the bar counts inputs."""

    def __init__(self, progress: Progress | None, label: str, quiet: bool = False) -> None:
        self._progress = progress
        self._quiet = quiet
        self._label = label
        self._task = None
        self._total = self._items = self._frames = self._units = 0
        self._per_item: int | None = None
        self._start = time.perf_counter()

    def start(self, total: int, frames_per_item: int | None = None) -> None:
        self._total, self._per_item = total, frames_per_item
        self._units = total * (frames_per_item or 1)  # the bar's total: frames or inputs
        self._start = time.perf_counter()
        if self._progress is not None and total:
            self._task = self._progress.add_task(self._label, total=max(1, self._units), items=f"0/{total}", rate="")
            self._progress.refresh()

    def frames(self, count: int) -> None:
        self._frames += count
        if self._per_item:
            self._update(advance=count)

    def item(self, n_frames: int = 0) -> None:
        self._items += 1
        if self._per_item:
            self._update(total_change=-max(0, self._per_item - n_frames))
        else:
            self._update(advance=1)

    def note(self, message: str) -> None:
        if not self._quiet:
            info(message)  # printed above the bar when one is live

    def warn(self, message: str) -> None:
        warn(message)  # shown with --quiet too

    def _update(self, advance: int = 0, total_change: int = 0) -> None:
        self._units += total_change
        if self._progress is None or self._task is None:
            return
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = f"{self._frames / elapsed:.1f} frames/s" if self._frames else ""
        self._progress.update(self._task, advance=advance, total=max(1, self._units),
                              items=f"{self._items}/{self._total}", rate=rate)
        self._progress.refresh()


@contextmanager
def progress_bar(quiet: bool, label: str = "videos") -> Iterator[Bar]:
    """A transient bar on stderr (drawn only when stderr is a terminal and not ``--quiet``)."""
    if quiet or not err_console.is_terminal:
        yield Bar(None, label, quiet)
        return
    progress = Progress(
        TextColumn(f"[bold]{label}[/bold]"), BarColumn(), TextColumn("{task.fields[items]}"),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
        console=err_console, transient=True, auto_refresh=False,
        redirect_stdout=False, redirect_stderr=False,
    )
    with progress:
        common.live_bar = progress
        try:
            yield Bar(progress, label)
        finally:
            common.live_bar = None


@contextmanager
def status(message: str, quiet: bool) -> Iterator[None]:
    """A spinner with ``message`` on stderr while something slow with no steps runs (loading weights)."""
    if quiet or not err_console.is_terminal:
        yield
        return
    with err_console.status(message):
        yield
