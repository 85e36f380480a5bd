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
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def _init_worker() -> None:
    torch.set_num_threads(1)  # workers share the machine with the model and with each other


def pool_context() -> Any:
    """Fresh worker processes, never forked from a parent that may hold CUDA or thread pools.

    ``forkserver`` (Linux, macOS) forks workers from a clean server that imported echoclip's
    media code once; elsewhere ``spawn`` starts each worker from scratch.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["echoclip_cli.media"])
        return context
    return multiprocessing.get_context("spawn")


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=_init_worker)


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
    lead = 3 * window if lead is None else lead
    source = enumerate(items)
    retry: deque[tuple[int, T]] = deque()  # taken back after a crash, ahead of the rest
    upcoming: tuple[int, T] | None = None
    pending: dict[Future[R], tuple[int, T]] = {}
    pool = _new_pool(workers)
    try:
        while True:
            while len(pending) < window:
                if upcoming is None:
                    upcoming = retry.popleft() if retry else next(source, None)
                if upcoming is None:
                    break
                oldest = min((i for i, _ in pending.values()), default=upcoming[0])
                if upcoming[0] - oldest >= window + lead:
                    break
                try:
                    pending[pool.submit(fn, upcoming[1])] = upcoming
                except BrokenProcessPool:  # a worker died since the last submit
                    break
                upcoming = None
            if not pending:
                if upcoming is None:
                    return
                pool.shutdown(wait=True, cancel_futures=True)  # broken before anything ran
                pool = _new_pool(workers)
                continue
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken: list[tuple[int, T]] = []
            for future in sorted(done, key=lambda f: pending[f][0]):
                index, item = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken.append((index, item))
                    continue
                yield index, item, result
            if broken:
                pool.shutdown(wait=True, cancel_futures=True)
                victims = sorted(broken + list(pending.values()), key=lambda entry: entry[0])
                pending.clear()
                index, item = victims[0]
                retry.extendleft(reversed(victims[1:]))
                if upcoming is not None:  # keep input order in what is resubmitted
                    retry.append(upcoming)
                    upcoming = None
                yield index, item, _alone(fn, item, on_crash)
                pool = _new_pool(workers)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
