"""The configuration reference (docs/reference/configuration.md) cannot drift from the code:
its table is rendered from app/settings.py's declarations by a MkDocs hook, and what the page
says by hand (variables read outside the settings, the retired ones) is checked here."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from app import main
from app.retired_variables import MOVED_TO_ORDER_LIMITS
from app.settings import SettingsError, Variable, variables

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "configuration.md"


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "configuration_hook", ROOT / "docs" / "hooks" / "configuration.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _hook()


def rendered_page() -> str:
    page = SimpleNamespace(file=SimpleNamespace(src_uri="reference/configuration.md"))
    text: str = hook.on_page_markdown(PAGE.read_text(), page=page)
    return text


def rows() -> dict[str, list[str]]:
    """The rendered table: variable -> its cells (accepts, default, meaning)."""
    table = {}
    for line in hook.table().splitlines()[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        table[cells[0].strip("`")] = cells[1:]
    return table


DECLARED = {variable.name: (variable, default) for variable, default in variables()}


def test_the_page_holds_the_marker_and_no_hand_written_table() -> None:
    source = PAGE.read_text()

    assert source.count(hook.MARKER) == 1
    assert not [line for line in source.splitlines() if line.lstrip().startswith("|")]
    assert hook.MARKER not in rendered_page()


def test_every_declared_variable_has_one_row_in_declaration_order() -> None:
    assert list(rows()) == list(DECLARED)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("DATABASE_URL", "unset"),
        ("CORS_ORIGINS", "unset"),
        ("DB_POOL_SIZE", "`10`"),
        ("DB_POOL_TIMEOUT", "`5`"),
        ("ENGINE_POLL_SECONDS", "`0.2`"),
        ("GRAPHIQL", "`true`"),
        ("COMPILED_QUERIES_STRICT", "`false`"),
        ("JWT_ALGORITHMS", "`HS256,RS256,ES256`"),
        ("VENUE_COMMISSION_MINIMUM", "`1.00`"),
        ("ORDER_API_DATA_DIR", "`.order-api/` in the checkout"),
    ],
)
def test_a_default_is_shown_as_a_reader_would_type_it(name: str, shown: str) -> None:
    assert rows()[name][1] == shown


@pytest.mark.parametrize("name", list(DECLARED))
def test_each_shown_default_read_back_is_the_declared_default(name: str) -> None:
    variable, default = DECLARED[name]
    shown = rows()[name][1]
    if shown == "unset":
        typed = ""
    elif shown.endswith(" in the checkout"):
        typed = str(ROOT / shown.split("`")[1])
    else:
        typed = shown.strip("`")

    assert variable.read({name: typed}, name, default) == default


def _refused(variable: Variable, value: str) -> bool:
    try:
        variable.read({variable.name: value}, variable.name, None)
    except SettingsError:
        return True
    return False


@pytest.mark.parametrize("name", list(DECLARED))
def test_each_shown_type_or_bound_is_what_the_reader_accepts(name: str) -> None:
    variable, _ = DECLARED[name]
    accepts = rows()[name][0]
    if bound := re.fullmatch(r"integer ≥ (\d+)", accepts):
        least = int(bound.group(1))
        assert not _refused(variable, str(least))
        assert _refused(variable, str(least - 1))
        assert _refused(variable, "1.5")
    elif choices := re.fullmatch(r"one of (.+)", accepts):
        assert not [value for value in choices.group(1).split(", ") if _refused(variable, value)]
        assert _refused(variable, "bogus")
    elif accepts == "true or false":
        assert not _refused(variable, "true")
        assert not _refused(variable, "false")
        assert _refused(variable, "maybe")
    elif accepts in ("number", "decimal"):
        assert not _refused(variable, "0.5")
        assert _refused(variable, "half")
    elif accepts == "PostgreSQL URL":
        assert not _refused(variable, "postgresql://u@localhost:5432/db")
        assert _refused(variable, "mysql://u@localhost/db")


def test_no_absolute_path_of_this_machine_reaches_the_page() -> None:
    assert str(ROOT) not in hook.table()


def test_the_headers_cors_allow_headers_adds_to_are_the_ones_the_api_reads() -> None:
    meaning = rows()["CORS_ALLOW_HEADERS"][2]
    said = re.findall(r"`([\w-]+)`", meaning.split("(e.g.")[0])

    assert said == list(main.CORS_HEADERS)


def _named_in_sources(pattern: str, *files: Path) -> set[str]:
    return {name for file in files for name in re.findall(pattern, file.read_text())}


def test_the_application_reads_the_environment_only_through_the_settings() -> None:
    readers = [
        file
        for file in (ROOT / "app").rglob("*.py")
        # code, not a docstring's ``os.environ``
        if re.search(r"(?<!`)os\.environ(?!`)|getenv\(", file.read_text())
    ]

    assert readers == [ROOT / "app" / "settings.py"]


def test_variables_read_outside_the_declarations_are_on_the_page() -> None:
    page = rendered_page()
    outside = (
        # read under a name of their own by a declared reader (app/supabase.py)
        _named_in_sources(r'parse_\w+\(env, "([A-Z][A-Z0-9_]+)"', *(ROOT / "app").rglob("*.py"))
        # read by the tests
        | _named_in_sources(r'environ\.get\("(TEST_[A-Z0-9_]+)"', *(ROOT / "tests").rglob("*.py"))
        | set(MOVED_TO_ORDER_LIMITS)
    )

    assert "SUPABASE_JWT_SECRET" in outside
    assert {"TEST_DATABASE_URL", "TEST_POOLER_URL"} <= outside
    assert [name for name in sorted(outside) if f"`{name}`" not in page] == []


def test_only_the_configuration_page_is_changed_by_the_hook() -> None:
    other = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))

    assert hook.on_page_markdown(hook.MARKER, page=other) == hook.MARKER
