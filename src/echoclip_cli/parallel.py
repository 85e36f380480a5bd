"""Parallel map over worker processes that survives a worker crashing.

:func:`completion_map` yields results as they finish, so one slow input does not hold up the
consumer (the GPU), with a bounded number in flight and a bounded lead over the oldest input
still running (a consumer restores input order with a buffer of that bound).

Decoders are C libraries; a malformed file can kill the process decoding it (a segfault), which
breaks a whole ``ProcessPoolExecutor``. When the pool breaks, the oldest input it was running is
re-run alone in a fresh process: if that one kills its process too it is the culprit and yields
``on_crash(item)``; otherwise its result is kept. The rest are resubmitted to a new pool, so
every input gets exactly one result and one bad file costs one error record, not the run.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch

WATCH_SECONDS = 1.0  # how often a worker checks that the run's main process is alive
T = TypeVar("T")
R = TypeVar("R")


def _init_worker(parent: int) -> None:
    torch.set_num_threads(1)  # workers share the machine with the model and with each other
    threading.Thread(target=_die_with, args=(parent,), daemon=True, name="echoclip-parent-watch").start()


def _die_with(parent: int) -> None:
    """End this worker when the run's main process is gone, even killed with -9 (no cleanup ran
    there): a worker's own parent is the fork server, so the kernel's parent-death signal would
    not fire, and an orphaned worker would wait for tasks forever holding its memory."""
    while True:
        time.sleep(WATCH_SECONDS)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass  # the pid exists (another user's process took it only if ours is long gone: rare)


def pool_context() -> Any:
    """Fresh worker processes, never forked from a parent that may hold CUDA or thread pools.

    ``forkserver`` (Linux, macOS) forks workers from a clean server that imported echoclip's
    media code once; elsewhere ``spawn`` starts each worker from scratch.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["echoclip_cli.media.batch"])  # the decoders, imported once
        return context
    return multiprocessing.get_context("spawn")


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=_init_worker, initargs=(os.getpid(),))


def _alone(fn: Callable[[T], R], item: T, on_crash: Callable[[T], R]) -> R:
    """Run one item in its own process; its crash becomes ``on_crash(item)``."""
    with _new_pool(1) as pool:
        try:
            return pool.submit(fn, item).result()
        except BrokenProcessPool:
            return on_crash(item)


def completion_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    window: int,
    on_crash: Callable[[T], R],
    lead: int | None = None,
) -> Iterator[tuple[int, T, R]]:
    """``(index, item, fn(item))`` as results finish, over ``workers`` processes.

    At most ``window`` inputs run at once, and an input starts only while it lies fewer than
    ``window + lead`` places (default ``lead``: ``3 × window``) after the oldest one still
    running, so a consumer that restores input order buffers fewer than that many results.
    """
    runner = _Runner(fn, items, workers, window, 3 * window if lead is None else lead)
    try:
        while runner.fill():
            results, broken = runner.collect()
            yield from results
            if broken:
                yield runner.recover(broken, on_crash)
    finally:
        runner.pool.shutdown(wait=False, cancel_futures=True)


class _Runner:
    """The state of one :func:`completion_map`: the pool, what runs, what waits to (re)start."""

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], workers: int, window: int, lead: int) -> None:
        self.fn, self.workers, self.window, self.lead = fn, workers, window, lead
        self.source = enumerate(items)
        self.retry: deque[tuple[int, Any]] = deque()  # taken back after a crash, ahead of the rest
        self.upcoming: tuple[int, Any] | None = None
        self.pending: dict[Future[Any], tuple[int, Any]] = {}
        self.pool = _new_pool(workers)

    def fill(self) -> bool:
        """Start inputs up to the window and lead; False when nothing is left to run or wait for."""
        while True:
            while len(self.pending) < self.window:
                if self.upcoming is None:
                    self.upcoming = self.retry.popleft() if self.retry else next(self.source, None)
                if self.upcoming is None:
                    break
                oldest = min((i for i, _ in self.pending.values()), default=self.upcoming[0])
                if self.upcoming[0] - oldest >= self.window + self.lead:
                    break
                try:
                    self.pending[self.pool.submit(self.fn, self.upcoming[1])] = self.upcoming
                except BrokenProcessPool:  # a worker died since the last submit
                    break
                self.upcoming = None
            if self.pending:
                return True
            if self.upcoming is None:
                return False
            self._new_pool()  # broken before anything ran: start again

    def collect(self) -> tuple[list[tuple[int, Any, Any]], list[tuple[int, Any]]]:
        """Wait for the first results: (finished results by index, inputs lost to a broken pool)."""
        done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
        results, broken = [], []
        for future in sorted(done, key=lambda f: self.pending[f][0]):
            index, item = self.pending.pop(future)
            try:
                results.append((index, item, future.result()))
            except BrokenProcessPool:
                broken.append((index, item))
        return results, broken

    def recover(self, broken: list[tuple[int, Any]], on_crash: Callable[[Any], Any]) -> tuple[int, Any, Any]:
        """After a crash: run the oldest lost input alone (the culprit, or a result), queue the rest."""
        victims = sorted(broken + list(self.pending.values()), key=lambda entry: entry[0])
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.retry.extendleft(reversed(victims[1:]))
        if self.upcoming is not None:  # keep input order in what is resubmitted
            self.retry.append(self.upcoming)
            self.upcoming = None
        index, item = victims[0]
        result = _alone(self.fn, item, on_crash)
        self.pool = _new_pool(self.workers)
        return index, item, result

    def _new_pool(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = _new_pool(self.workers)
