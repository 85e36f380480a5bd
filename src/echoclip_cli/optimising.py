"""Optimising the image tower for this CPU, as a use case: build and check every fast CPU path,
then race them against eager torch, so ``--backend auto`` runs the fastest exact one.

    >>> import echoclip_cli
    >>> report = echoclip_cli.optimise("echo-clip", note=print)   # once; ~6 min at full size on 2 cores
    >>> report.chosen                                              # ('compiled', None), say

The backends build and measure themselves (:mod:`echoclip_cli.backends`); what they cannot know
without a use case, the EF and device-score changes a backend causes, comes in from the
zero-shot code (:func:`echoclip_cli.tasks.task_numbers`) as a callback.
"""

from __future__ import annotations

import time

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backends import registry
from .backends.base import Note, quiet
from .errors import UsageError

if TYPE_CHECKING:
    from .inference import EchoClip
    from .weights import Bundle


@dataclass(frozen=True)
class OptimiseReport:
    """What :func:`optimise` did: each path's outcome and the path ``--backend auto`` now runs."""

    chosen: tuple[str, str | None]
    failed: dict[str, str] = field(default_factory=dict)  # backend -> why it could not be built
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why it was not tried


def _task_numbers(model: "EchoClip") -> Any:
    from .tasks import task_numbers

    return task_numbers(model)


def ensure(bundle: "Bundle", backend: str, note: Note = quiet, reference: "EchoClip | None" = None) -> None:
    """Build and check ``backend`` for ``bundle`` on this CPU unless that is done already."""
    from .inference import reference as make_reference

    model = reference or make_reference(bundle)
    registry.get(backend).ensure(bundle, lambda: model, note, _task_numbers)


def auto_build(bundle: "Bundle", inputs: int, note: Note = quiet) -> bool:
    """``--backend auto`` on a large run with nothing built: build the compiled tower first (once
    per CPU; success, failure and "not faster" are remembered). True when the run should use it."""
    note(f"{inputs} inputs: building the compiled image tower for this CPU first (once; --backend torch skips this)")
    try:
        ensure(bundle, "compiled", note)
    except UsageError as exc:
        note(f"{exc.message}; running eager")
        return False
    except OSError as exc:  # a read-only or full home: the run stays eager
        note(f"cannot build the compiled image tower in the echoclip home ({exc.strerror or exc}); running eager")
        return False
    return registry.get("compiled").usable(bundle)


FAST_BACKENDS = ("compiled", "onnx")  # what optimise builds, checks and races against eager torch


def optimise(weights: "str | Bundle", *, onnx: bool = True, force: bool = False, note: Note = quiet) -> OptimiseReport:
    """Build, check and race the fast CPU paths of ``weights`` on this CPU (what ``echoclip weights
    optimise`` does). Paths already built and checked here are kept, their numbers said again,
    unless ``force``; nothing is built when nothing is to be built or checked. ``onnx=False``
    leaves the ONNX backend out."""
    from . import weights as w
    from .backends import race
    from .inference import reference

    started = time.perf_counter()
    bundle = weights if isinstance(weights, w.Bundle) else w.resolve(weights, auto_pull=False)
    w.ensure_verified(bundle)
    model = reference(bundle)  # built only if something is to be built, checked or raced
    failed, skipped = {}, {}
    for name in FAST_BACKENDS if onnx else FAST_BACKENDS[:1]:
        backend = registry.get(name)
        reason = backend.missing()
        if reason:
            skipped[name] = f"{backend.label or name + ' backend'} not checked: {registry.CPU_FAST_HINT}"
            note(skipped[name])
            continue
        try:
            backend.optimise(bundle, lambda: model, note, _task_numbers, force)
        except UsageError as exc:
            failed[name] = exc.message  # said by the caller, as a warning
    raced = None if force else race.read_race(bundle)
    if raced is not None:
        note(f"already timed against each other on this CPU: {race.race_summary(raced)}")
    else:
        race.race(bundle, model, note)
    chosen = race.fastest_built(bundle)
    if chosen == race.EAGER:  # nothing built ran faster here: keep what was measured, not the ~0.9 GB of files
        freed = sum(registry.get(name).prune(bundle) for name in FAST_BACKENDS if registry.get(name).built(bundle))
        if freed:
            note(f"eager torch is the fastest here: the built towers were not kept ({freed / 1e6:.0f} MB freed; "
                 "what they measured was, so --backend auto does not build them again)")
    note(f"--backend auto on this CPU now runs: {chosen[0]}" + (f" {chosen[1]}" if chosen[1] else "")
         + f" (this took {time.perf_counter() - started:.0f} s)")
    return OptimiseReport(chosen=chosen, failed=failed, skipped=skipped)


def cpu_path(bundle: "Bundle") -> tuple[tuple[str, str | None], dict[str, float]]:
    """What ``--backend auto`` runs for ``bundle`` on this CPU, and each built path's speed against
    eager torch as auto compared them (never builds anything): what ``echoclip info`` shows."""
    from .backends import race

    return race.fastest_built(bundle), race.relative_speeds(bundle)


__all__ = ["OptimiseReport", "auto_build", "cpu_path", "ensure", "optimise"]
