"""Prompt library: the report sentences zero-shot tasks compare video embeddings with.

Our format is TOML (``default.toml`` documents it); the upstream ``prompts_used.json`` format
(task → mode, label_sources, range / values, value_mapping) is read too, so published prompt
sets can be used unchanged.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, UsageError
from ..tokenizer.template import SLOT  # a prompt template's value slot is the vocabulary's

MODES = ("regression", "binary", "categorical")


@dataclass(frozen=True)
class Task:
    """One zero-shot task and its prompts."""

    name: str
    mode: str
    prompts: tuple[str, ...] = ()  # binary
    templates: tuple[str, ...] = ()  # regression, each with one <#>
    values: tuple[int, ...] = ()  # regression: integers substituted into the templates
    classes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # categorical
    threshold: float | None = None
    threshold_source: str | None = None
    weights: str | None = None
    description: str = ""
    unit: str = ""

    def texts(self) -> list[str]:
        """Every text to embed, in a fixed order (regression: template-major, then value)."""
        if self.mode == "regression":
            return [t.replace(SLOT, str(v)) for t in self.templates for v in self.values]
        if self.mode == "binary":
            return list(self.prompts)
        return [p for prompts in self.classes.values() for p in prompts]

    def text_values(self) -> list[float]:
        """Regression: the value each of :meth:`texts` stands for."""
        return [float(v) for _ in self.templates for v in self.values]


def _check(task: Task) -> Task:
    if task.mode not in MODES:
        raise ConfigError(f"task {task.name!r}: mode must be one of {', '.join(MODES)}, not {task.mode!r}")
    if task.mode == "regression":
        if not task.templates or not task.values:
            raise ConfigError(f"task {task.name!r}: regression needs templates and a range")
        if bad := [t for t in task.templates if t.count(SLOT) != 1]:
            raise ConfigError(f"task {task.name!r}: template needs exactly one {SLOT}: {bad[0]!r}")
    elif task.mode == "binary" and not task.prompts:
        raise ConfigError(f"task {task.name!r}: binary needs prompts")
    elif task.mode == "categorical" and (len(task.classes) < 2 or not all(task.classes.values())):
        raise ConfigError(f"task {task.name!r}: categorical needs at least two classes with prompts")
    return task


def _values(name: str, spec: Any) -> tuple[int, ...]:
    try:
        lo, hi = (int(v) for v in spec)
    except (TypeError, ValueError):
        raise ConfigError(f"task {name!r}: range must be [low, high] integers") from None
    if hi < lo:
        raise ConfigError(f"task {name!r}: empty range [{lo}, {hi}]")
    return tuple(range(lo, hi + 1))


def _from_toml_table(name: str, table: Mapping[str, Any]) -> Task:
    mode = table.get("mode", "")
    return _check(
        Task(
            name=name,
            mode=mode,
            prompts=tuple(table.get("prompts", ())),
            templates=tuple(table.get("templates", ())),
            values=_values(name, table["range"]) if "range" in table else (),
            classes={str(k): tuple(v) for k, v in table.get("classes", {}).items()},
            threshold=float(table["threshold"]) if "threshold" in table else None,
            threshold_source=table.get("threshold_source"),
            weights=table.get("weights"),
            description=table.get("description", ""),
            unit=table.get("unit", ""),
        )
    )


def _from_upstream_entry(name: str, entry: Mapping[str, Any]) -> Task:
    mode, sources = entry.get("mode", ""), entry.get("label_sources")
    if not isinstance(sources, list) or not sources:
        raise ConfigError(f"task {name!r}: label_sources must be a non-empty list")
    if mode == "regression":
        return _check(Task(name=name, mode=mode, templates=tuple(sources), values=_values(name, entry.get("range"))))
    if mode == "binary":
        return _check(Task(name=name, mode=mode, prompts=tuple(sources)))
    values, mapping = entry.get("values"), entry.get("value_mapping", {})
    if not isinstance(values, list) or len(values) != len(sources):
        raise ConfigError(f"task {name!r}: categorical needs one value per label source")
    classes: dict[str, list[str]] = {}
    for prompt, value in zip(sources, values):
        classes.setdefault(str(mapping.get(str(value), value)), []).append(prompt)
    return _check(Task(name=name, mode=mode, classes={k: tuple(v) for k, v in classes.items()}))


def parse_prompts(text: str, source: str) -> dict[str, Task]:
    """Tasks from a TOML (ours) or JSON (upstream prompts_used.json) document."""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
        return {name: _from_upstream_entry(name, entry) for name, entry in data.items()}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML ({exc})") from None
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError(f"{source}: no [tasks.NAME] tables")
    return {name: _from_toml_table(name, table) for name, table in tasks.items()}


def load_prompts(path: str | os.PathLike[str] | None = None) -> dict[str, Task]:
    """The packaged library, or the user's file (our TOML or upstream JSON)."""
    if path is None:
        text = resources.files(__name__).joinpath("default.toml").read_text(encoding="utf-8")
        return parse_prompts(text, "default.toml")
    path = Path(path)
    try:
        return parse_prompts(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read prompts ({exc.__class__.__name__})") from None


def select_tasks(names: Sequence[str], path: str | os.PathLike[str] | None = None) -> dict[str, Task]:
    """The named tasks of the library (or of the user's file); an unknown name is a usage error."""
    library = load_prompts(path)
    missing = [n for n in names if n not in library]
    if missing:
        raise UsageError(
            f"no task {', '.join(map(repr, missing))} in {path or 'the default prompt library'}",
            hint=f"tasks there: {', '.join(library)}",
        )
    return {n: library[n] for n in names}


def load_thresholds(path: str | os.PathLike[str] | None) -> dict[str, float]:
    """Thresholds file (JSON: task -> number, or task -> {"threshold": number, ...})."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise UsageError(f"no such thresholds file: {path}", hint="make one with `echoclip calibrate`")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read thresholds ({type(exc).__name__})") from None
    out = {}
    for task, value in data.items():
        value = value.get("threshold") if isinstance(value, dict) else value
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{path}: threshold for {task!r} must be a number")
        out[task] = float(value)
    return out
