"""Progress a person can read, on stderr only, that never takes a record away from stdout.

Rich's ``Progress`` replaces ``sys.stdout`` while it is live (``redirect_stdout=True``) and so sent
every record written during a run to the *stderr* console: ``predict-ef … > ef.csv`` from a
terminal left ef.csv empty. Here the bar is drawn with stdout left alone. When stdout is the
terminal too, a record line is written between two draws of the bar (the bar line is erased,
the record written to stdout, the bar drawn again), so lines never merge with the bar.

Embedding runs advance per batch of frames, not per video: on a CPU one batch of 64 frames may
hold every video of a small run, and a bar counting videos sat at 0/6 for minutes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from . import common
from .common import err_console


class Bar:
    """One run's progress: ``frames(n)`` as batches finish, ``item(n_frames)`` as inputs finish.

    With ``frames_per_item`` the bar measures frames: it starts from ``items × frames_per_item``
    and shrinks its total when an input turns out shorter (or fails), so the ETA is honest from
    the first batch. Without it the bar counts inputs.
    """

    def __init__(self, progress: Progress | None, total: int, label: str, frames_per_item: int | None) -> None:
        self._progress = progress
        self._total = total
        self._per_item = frames_per_item
        self._items = 0
        self._frames = 0
        self._start = time.perf_counter()
        self._units = total * (frames_per_item or 1)  # the bar's total: frames or inputs
        self._task = None
        if progress is not None:
            self._task = progress.add_task(label, total=max(1, self._units), items=f"0/{total}", rate="")

    def frames(self, count: int) -> None:
        self._frames += count
        if self._per_item:
            self._update(advance=count)

    def item(self, n_frames: int = 0) -> None:
        self._items += 1
        if self._per_item:
            shortfall = max(0, self._per_item - n_frames)
            self._update(total_change=-shortfall)
        else:
            self._update(advance=1)

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
def progress_bar(total: int, quiet: bool, label: str = "videos",
                 frames_per_item: int | None = None) -> Iterator[Bar]:
    """A transient bar on stderr (none with ``--quiet``, when stderr is not a terminal, or for nothing)."""
    if quiet or not err_console.is_terminal or total == 0:
        yield Bar(None, total, label, frames_per_item)
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
            yield Bar(progress, total, label, frames_per_item)
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
