"""House rules read from the source: no import cycles between modules, small modules, short functions.

The layer contracts (what may import what) are import-linter's, in pyproject.toml, run by ``lint-imports``.
Here: module-level import cycles (including a submodule importing its own package, which import-linter's
sibling check does not see), and sizes. A module over 300 lines or a function over 60 lines needs one line
saying why: ``# long module: <why>`` in the module's first lines, ``# long: <why>`` on the line directly
above the ``def`` (or above its decorators).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fl_privacy", "strategies", "clients")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
LONG_MODULE = re.compile(r"^\s*#\s*long module:\s*\S")
LONG_FUNCTION = re.compile(r"^\s*#\s*long:\s*\S")
HEADER_LINES = 10
"""A ``# long module:`` comment counts within the module's first lines."""

pytestmark = pytest.mark.unit


def _sources() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


SOURCES = _sources()


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    """Project modules one import statement names (``from a import b`` names only ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    for alias in node.names:
        submodule = f"{target}.{alias.name}"
        yield submodule if submodule in SOURCES else target


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports anywhere in its body (top level, functions, TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {}
    for module, path in SOURCES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(name for name in _imported(node, module, is_package) if name in SOURCES)
        edges.discard(module)
        graph[module] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def _cycle_path(graph: dict[str, set[str]], cycle: list[str]) -> str:
    """The shortest loop from the component's first module back to it, for the message: a -> b -> a."""
    members, start = set(cycle), cycle[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return " -> ".join([*paths[node], start])
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return " -> ".join(cycle)


def test_no_import_cycles_between_modules():
    graph = import_graph()
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (break each one):\n" + "\n".join(
        f"  {_cycle_path(graph, cycle)}" for cycle in cycles
    )


def test_cycle_finder_sees_a_cycle_and_names_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert _cycle_path(graph, ["a", "b", "c"]) == "a -> b -> c -> a"


def _long_functions(path: Path) -> Iterator[tuple[str, int]]:
    """(qualified name, lines) of each function over the limit without a ``# long:`` line above it."""
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines), filename=str(path))

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            name = f"{prefix}{getattr(child, 'name', '')}"
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                above = {lines[n - 2] for n in (first, child.lineno) if n >= 2}
                if length > MAX_FUNCTION_LINES and not any(LONG_FUNCTION.match(line) for line in above):
                    yield name, length
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{name}.")

    yield from walk(tree, "")


def oversized() -> list[str]:
    """Every module and function over its limit that does not say why, as ``path: what (lines)``."""
    found = []
    for path in SOURCES.values():
        relative = path.relative_to(REPO)
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(LONG_MODULE.match(line) for line in lines[:HEADER_LINES]):
            found.append(f"{relative}: module ({len(lines)} lines)")
        found.extend(f"{relative}: {name}() ({length} lines)" for name, length in _long_functions(path))
    return found


def test_modules_and_functions_are_small_or_say_why():
    """Over 300 lines (module) or 60 lines (function) only with a one-line reason (see the module docstring)."""
    found = oversized()
    assert not found, (
        f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function; split it, or put "
        "'# long module: <why>' at the top / '# long: <why>' right above the def:\n  " + "\n  ".join(found)
    )


def test_size_rule_accepts_a_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    plain = tmp_path / "plain.py"
    plain.write_text(f"def f():\n{body}\n")
    said = tmp_path / "said.py"
    said.write_text(f"# long: one table of constants\n@staticmethod\ndef f():\n{body}\n")
    assert list(_long_functions(plain)) == [("f", MAX_FUNCTION_LINES + 1)]
    assert list(_long_functions(said)) == []
