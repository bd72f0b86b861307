"""Runs a revision's SQL files (alembic/versions/sql/<revision>/) whole, online and offline.

A file is sent as one script, the way psql -f would send it: online through the driver's
simple-query protocol (asyncpg's ``execute`` without arguments runs a multi-statement script
in the migration's transaction); offline (``alembic upgrade --sql``) printed exactly as it
is, so the offline output is what runs online. No statement splitting, no bind parameters:
a value a revision computes (001's password verifier) is written into the text as a quoted
literal where the file says ``:'name'``, as psql's own variables do.

Loaded by path (``alembic.util.load_python_file``) from the revisions: nothing in
alembic/versions imports the application, so a frozen revision does not change with it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.util import await_only

from alembic import op

SQL = Path(__file__).resolve().parent / "versions" / "sql"

# Where SQLAlchemy logs the statements it sends: these scripts appear there too.
statements_log = logging.getLogger("sqlalchemy.engine.Engine")


def script(path: str, **literals: str) -> str:
    """The text of ``versions/sql/<path>``, with each ``:'name'`` replaced by a quoted literal."""
    text = (SQL / path).read_text()
    for name, value in literals.items():
        marker = f":'{name}'"
        if marker not in text:
            raise ValueError(f"{path} has no {marker} to fill in")
        if "'" in value or "\\" in value:
            raise ValueError(f"the value for {marker} in {path} must not contain quotes")
        text = text.replace(marker, f"'{value}'")
    return text


def run(*paths: str) -> None:
    """Run each file whole, in order, in the migration's transaction."""
    for path in paths:
        execute(script(path))


def execute(text: str) -> None:
    context = op.get_context()
    if context.as_sql:
        context.impl.static_output(text.rstrip() + "\n")
        return
    driver = op.get_bind().connection.driver_connection
    if driver is None or not hasattr(driver, "is_in_transaction"):
        raise RuntimeError(f"migrations run through asyncpg, not {type(driver).__name__}")
    # Alembic has read alembic_version in this transaction before any revision runs; a
    # script sent outside it would commit statement by statement.
    if not driver.is_in_transaction():
        raise RuntimeError("a migration script must run inside the migration's transaction")
    statements_log.info("%s", text)
    await_only(driver.execute(text))
