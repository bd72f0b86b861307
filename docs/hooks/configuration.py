"""MkDocs hook: the configuration reference's table, rendered from app/settings.py.

docs/reference/configuration.md holds ``MARKER`` where the table goes; each row is one
declaration (``env(VARIABLE, default, reader, description)``), so the page cannot state a
variable, default or bound that the code does not. tests/test_configuration_reference.py
renders it too.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The checkout being documented, not whichever one the virtualenv's editable install points at.
sys.path.insert(0, str(ROOT))

from app import settings  # noqa: E402  (after the path above)

PAGE = "reference/configuration.md"
MARKER = "<!-- the table of app/settings.py's declarations (docs/hooks/configuration.py) -->"

_LINK = re.compile(r"\]\((?!https?:)([^)]+)\)")
"""A Markdown link's target; descriptions write them relative to docs/."""


def default_text(default: Any) -> str:
    """A default as a reader would type it, or ``unset``; paths in this checkout relative to it."""
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, tuple):
        return f"`{','.join(default)}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    if isinstance(default, Path):
        if default.is_relative_to(ROOT):
            return f"`{default.relative_to(ROOT)}/` in the checkout"
        return f"`{default}`"
    if isinstance(default, int | Decimal | str):
        return f"`{default}`"
    raise TypeError(f"no rendering for the default {default!r}")


def _cell(markdown: str) -> str:
    return markdown.replace("|", "\\|")


def _plain(text: str) -> str:
    """A reader's kind is plain text: ``*`` there means a star, not emphasis."""
    return re.sub(r"([*_`\\])", r"\\\1", text)


def table(*, docs_prefix: str = "../") -> str:
    """Every declared variable, one row each; ``docs_prefix`` leads from the page to docs/."""
    rows = ["| variable | accepts | default | meaning |", "|---|---|---|---|"]
    for variable, default in settings.variables():
        meaning = _LINK.sub(lambda link: f"]({docs_prefix}{link.group(1)})", variable.doc)
        cells = (f"`{variable.name}`", _plain(variable.read.kind), default_text(default), meaning)
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its marker {MARKER}: the settings table has no place")
    return markdown.replace(MARKER, table())
