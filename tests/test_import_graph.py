"""The app's modules import each other without a circle.

A circle of imports works only in the order Python happens to load its modules, and
says that two concepts are one: app/db/pool.py counted into app/metrics.py, whose
collector read the database through app/db/session.py and the engine's claims, and the
engine counted into the metrics again (issue 19). Every import counts here, also one
inside a function or under ``TYPE_CHECKING``: such an import hides a circle from Python,
not from a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import app

APP = Path(app.__file__).parent

KNOWN_CIRCLES: tuple[frozenset[str], ...] = (
    # Issue 19: the GraphQL context, the subscription and the types refer to each other;
    # another engineer is reshaping graphql/ now. Remove this entry once that lands.
    frozenset({"app.graphql.context", "app.graphql.subscriptions", "app.graphql.types"}),
)
"""Circles allowed for now: a circle found must lie within one of these."""


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The app's modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                # ``from app.engine import order_rows`` imports a module, not a name.
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph(root: Path = APP) -> dict[str, set[str]]:
    modules = {_module_name(path, root): path for path in root.rglob("*.py")}
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def circles(graph: Mapping[str, set[str]]) -> Iterator[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(module: str) -> Iterator[frozenset[str]]:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                yield from visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                yield frozenset(component)

    for module in sorted(graph):
        if module not in index:
            yield from visit(module)


def test_no_module_of_the_app_imports_itself_through_others() -> None:
    unexpected = [
        sorted(circle)
        for circle in circles(import_graph())
        if not any(circle <= known for known in KNOWN_CIRCLES)
    ]
    assert unexpected == []


def test_the_metrics_import_nothing_that_counts_into_them() -> None:
    imported = import_graph()["app.metrics"]
    assert {m for m in imported if m.startswith(("app.db", "app.engine", "app.orders"))} == set()


def test_a_circle_is_found_wherever_its_imports_hide(tmp_path: Path) -> None:
    package = tmp_path / "app"
    (package / "db").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "db" / "__init__.py").write_text("")
    (package / "metrics.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.db.session import Database\n"
    )
    (package / "db" / "pool.py").write_text("from app import metrics\n")
    (package / "db" / "session.py").write_text("def open():\n    from .pool import Pool\n")
    (package / "db" / "urls.py").write_text("import app.db.session\n")

    assert list(circles(import_graph(package))) == [
        frozenset({"app.metrics", "app.db.pool", "app.db.session"})
    ]
