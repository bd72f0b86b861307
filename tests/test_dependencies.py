"""Every third-party module that app/ or tests/ import is a declared dependency, so that a
fresh install does not depend on what another package happens to bring."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

from app.db.migrations import PROJECT_ROOT

PROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {normalise(re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0]) for r in requirements}


def normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def imported_modules(root: Path) -> set[str]:
    modules: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("app", "tests")}


EXTRAS = PROJECT["optional-dependencies"]
DECLARED = {
    # app/tracing.py imports OpenTelemetry only when the "otel" extra is installed.
    "app": names(PROJECT["dependencies"]) | names(EXTRAS["otel"]),
    "tests": names(PROJECT["dependencies"]) | names(EXTRAS["test"]) | names(EXTRAS["otel"]),
}


@pytest.mark.parametrize("root", sorted(DECLARED))
def test_every_third_party_import_is_a_declared_dependency(root: str) -> None:
    distributions = importlib.metadata.packages_distributions()
    undeclared = {
        module: distributions.get(module)
        for module in imported_modules(PROJECT_ROOT / root)
        if not {normalise(d) for d in distributions.get(module, [])} & DECLARED[root]
    }
    assert undeclared == {}
