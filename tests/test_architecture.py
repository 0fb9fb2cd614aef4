"""The package's shape: one-way imports, no circles, IPython and widgets at the edges.

Every ``import`` statement of ``src/sm_magics`` counts, at module level or inside
a function (a lazy import is still a dependency). Run alone with::

    .venv/bin/python -m pytest -q tests/test_architecture.py
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sm_magics"
# The top layer: parses magics, calls services, shows results through the UI.
UI_USERS = {"sm_magics.magics", "sm_magics.__main__"}
# Where IPython may be imported: the magics, the extension entry point, the one error
# class the magics raise (IPython's UsageError), and the notebook runner of `python -m`.
IPYTHON_USERS = {"sm_magics.magics", "sm_magics.errors", "sm_magics.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(path: Path) -> set[str]:
    """Every module (of any package) that ``path`` imports, as absolute dotted names."""
    name = module_name(path)
    package = name if is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from . import params` imports the module params, not the package's code
            submodules = {f"{origin}.{alias.name}" for alias in node.names
                          if module_path(f"{origin}.{alias.name}") is not None}
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(origin)
    return found


def module_path(name: str) -> Path | None:
    if not name.startswith("sm_magics"):
        return None
    relative = Path(*name.split("."))
    for candidate in (PACKAGE.parent / relative.with_suffix(".py"),
                      PACKAGE.parent / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_the_import_graph_has_no_circles():
    edges = graph()
    assert len(edges) > 20  # the walk found the package
    assert cycles(edges) == []


def test_a_circle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_magics_import_the_ui():
    offenders = {
        module: sorted(m for m in imported if m.startswith("sm_magics.ui"))
        for module, imported in graph().items()
        if not module.startswith("sm_magics.ui") and module not in UI_USERS
    }
    assert {m: found for m, found in offenders.items() if found} == {}


@pytest.mark.parametrize("library, allowed", [
    ("ipywidgets", lambda module: module.startswith("sm_magics.ui")),
    ("IPython", lambda module: module in IPYTHON_USERS),
])
def test_ipython_and_widgets_are_imported_only_at_the_edges(library, allowed):
    users = sorted(
        module_name(path) for path in PACKAGE.rglob("*.py")
        if any(m == library or m.startswith(library + ".") for m in imports_of(path))
    )
    assert users, f"nothing imports {library}: the walk is broken"
    assert [m for m in users if not allowed(m)] == []


def test_the_sandbox_api_sits_on_the_engine_and_local_runs_do_not_use_the_sandbox():
    edges = graph()
    assert "sm_magics.engine" in edges["sm_magics.sandbox.training_api"]
    assert "sm_magics.engine" in edges["sm_magics.local"]
    reachable, todo = set(), ["sm_magics.local"]
    while todo:
        for nxt in edges[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert sorted(m for m in reachable if m.startswith("sm_magics.sandbox")) == []
    assert not any(m.startswith("sm_magics.sandbox") for m in edges["sm_magics.engine"])
