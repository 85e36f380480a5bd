"""The package's layout holds: its imports (every import statement, also those inside functions
and under TYPE_CHECKING) form no cycle, the ground floor imports nothing of the package above
it, no backend imports a use case, and no use case names a backend module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from echoclip_cli.backends import registry

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "echoclip_cli"
GROUND = ("errors", "defaults", "records", "files", "options")  # and preprocess_config under options
USE_CASES = ("api", "optimising", "tasks", "retrieval", "patients", "cli")


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if module else []
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *(name.split(".") if name else [])])


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = _resolve(module, is_package, node.level, node.module)
                names = [f"{target}.{a.name}" if target else a.name for a in node.names]
                found = [n for n in names if n in modules] or ([target] if target in modules else [])
                graph[module].update(t for t in found if t != module)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("echoclip_cli"):
                target = node.module.removeprefix("echoclip_cli").lstrip(".")
                if target in modules and target != module:
                    graph[module].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_imports_form_no_cycle():
    assert _cycle(_graph()) is None


def test_the_ground_floor_imports_nothing_above_it():
    graph = _graph()
    allowed = {"options": {"defaults", "preprocess_config", "errors"}}
    for module in GROUND:
        assert graph[module] <= allowed.get(module, set()) | set(GROUND) - {module}, (module, graph[module])


def test_no_backend_imports_a_use_case_and_no_use_case_names_a_backend_module():
    graph = _graph()
    for module, targets in graph.items():
        if module.startswith("backends"):
            assert not {t for t in targets if t.split(".")[0] in USE_CASES}, (module, targets)
        if module.split(".")[0] in ("api", "cli", "tasks", "retrieval", "patients"):
            named = {t for t in targets if t.startswith("backends.") and t != "backends.registry"}
            assert not named, (module, named)


def test_the_registry_is_the_one_place_that_reads_the_backend_word(monkeypatch):
    for path in PACKAGE.rglob("*.py"):
        if path.name != "registry.py":
            assert '"ECHOCLIP_BACKEND"' not in path.read_text(), path  # read (or named to typer) elsewhere
    monkeypatch.setenv(registry.ENV, "compiled")
    assert registry.word("auto") == "compiled" and registry.word("torch") == "torch"
    monkeypatch.setenv(registry.ENV, "tpu")
    with pytest.raises(Exception, match="unknown backend 'tpu'"):
        registry.word(None)


@pytest.mark.parametrize(("backend", "precision", "message"), [
    ("compiled", "bf16", "the compiled backend runs fp32"),
    ("torch", "int8", "int8 runs on the onnx backend only"),
    ("onnx", "fp16", "the onnx backend runs fp32 or int8"),
    ("auto", "fp64", "unknown precision"),
])
def test_backend_words_are_checked_before_anything_loads(backend, precision, message):
    with pytest.raises(Exception, match=message):
        registry.check(backend, precision)
