"""Every benchmark module imports, as its docstring says to run it.

The benchmarks run by hand, so nothing else notices when a change of the code they import
breaks one: `python -m bench.order_events` failed on import for a session after the
positions benchmark became a package. Modules run as ``python -m bench...`` import from the
repository's root; those run as ``python bench/<file>.py`` import their neighbours by name,
so bench/ is on the path too. A third-party module that the test extra does not install
skips its benchmark, named (``pytest -ra``); anything else that fails to import fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.db.migrations import PROJECT_ROOT

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import bench

ours = ("app", "bench", *(m.name for m in pkgutil.iter_modules(bench.__path__)))
failed, missing = {}, {}
for module in pkgutil.walk_packages(bench.__path__, "bench."):
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in ours:
            failed[module.name] = repr(error)
        else:
            missing[module.name] = error.name
    except Exception as error:
        failed[module.name] = repr(error)
print(json.dumps({"failed": failed, "missing": missing}))
"""


def test_every_benchmark_module_imports() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": f"{PROJECT_ROOT}:{PROJECT_ROOT / 'bench'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["failed"] == {}
    if found["missing"]:
        pytest.skip(f"not installed by the test extra: {found['missing']}")
