"""Ordered parallel map over worker processes that survives a worker crashing.

Decoders are C libraries; a malformed file can kill the process decoding it (a segfault), which
breaks a whole ``ProcessPoolExecutor``. :func:`ordered_map` yields results in input order with a
bounded number in flight, and when the pool breaks it re-runs the input at the head alone in a
fresh process: if that one kills its process too it is the culprit and yields ``on_crash(item)``;
otherwise its result is kept. The rest are resubmitted to a new pool, so every input gets exactly
one result and one bad file costs one error record, not the run.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
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


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    window: int,
    on_crash: Callable[[T], R],
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in input order, ``window`` in flight over ``workers`` processes."""
    queue: deque[T] = deque()  # inputs taken back after a crash, ahead of the rest
    source = iter(items)
    pending: deque[tuple[T, Future[R]]] = deque()
    pool = _new_pool(workers)
    try:
        while True:
            broken = _fill(pool, fn, pending, queue, source, window)
            if not pending:
                if not broken:
                    return
                pool.shutdown(wait=True, cancel_futures=True)
                pool = _new_pool(workers)
                continue
            item, future = pending.popleft()
            try:
                result = future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                queue.extendleft(reversed([other for other, _ in pending]))
                pending.clear()
                result = _alone(fn, item, on_crash)
                pool = _new_pool(workers)
            yield item, result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _fill(
    pool: ProcessPoolExecutor,
    fn: Callable[[T], R],
    pending: deque[tuple[T, Future[R]]],
    queue: deque[T],
    source: Iterator[T],
    window: int,
) -> bool:
    """Submit until ``window`` are in flight; True when the pool turned out to be broken."""
    while len(pending) < window:
        item = queue.popleft() if queue else next(source, _END)
        if item is _END:
            return False
        try:
            pending.append((item, pool.submit(fn, item)))
        except BrokenProcessPool:  # a worker died since the last submit: keep the item for later
            queue.appendleft(item)
            return True
    return False


_END: Any = object()
