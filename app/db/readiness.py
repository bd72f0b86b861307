"""Whether the database can serve this version of the application, and if not, why.

Three states, each with what an operator does about it:

    ready          reachable and migrated to the head revision this code expects
    not migrated   reachable, but at another revision (or none: the tables are missing);
                   run the migrations (``alembic upgrade head``)
    unreachable    no connection (down, wrong address, wrong password, pool exhausted)

``/readyz`` reports it (app/main.py), and the execution engine uses ``classify`` to log a
failing pass once per state change rather than once per retry (engine/worker.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import migrations
from app.db.failures import DatabaseUnavailable, connection_failure

State = Literal["ready", "not migrated", "unreachable"]


@dataclass(frozen=True)
class Readiness:
    state: State
    current: str | None = None
    expected: str | None = None
    detail: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def body(self) -> dict[str, Any]:
        if self.ready:
            return {"status": "ready", "migration": self.current}
        body: dict[str, Any] = {"status": "unavailable", "database": self.state}
        if self.state == "not migrated":
            body.update(migration=self.current, expected=self.expected)
        # No detail: the probe is public, and the driver's message names hosts and roles.
        return body

    def describe(self) -> str:
        """One line for logs."""
        if self.state == "not migrated":
            why = f": {self.detail}" if self.detail else ""
            return (
                f"database not migrated (revision {self.current or 'none'},"
                f" expected {self.expected}){why}; run: alembic upgrade head"
            )
        if self.state == "unreachable":
            return f"database unreachable: {self.detail}"
        return "database ready"


class StateLog:
    """Logs a state when it differs from the last one logged: a database that stays down
    for an hour is one WARNING line (and one INFO line when it is back), not thousands."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.last: State | None = None

    def report(self, readiness: Readiness) -> None:
        if readiness.state == self.last:
            return
        first = self.last is None
        self.last = readiness.state
        if readiness.ready:
            if not first:
                self.logger.info("%s: %s again", self.what, readiness.describe())
        else:
            self.logger.warning("%s: %s", self.what, readiness.describe())


def is_unreachable(error: BaseException) -> str | None:
    """The reason, when ``error`` means no connection could be had or kept."""
    if isinstance(error, DatabaseUnavailable):
        return str(error).splitlines()[0] if str(error) else "unavailable"
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return connection_failure(error) or "connection lost"
    return connection_failure(error)


async def check(engine: AsyncEngine, head: str | None) -> Readiness:
    try:
        async with engine.connect() as conn:
            current = await migrations.current_revision(conn)
    except Exception as error:
        reason = is_unreachable(error)
        if reason is not None:
            return Readiness("unreachable", detail=reason)
        # Reached the server, which refused the question (alembic_version unreadable: the
        # migrations that grant it are not applied).
        return Readiness("not migrated", None, head, detail=_sql_error(error))
    if current != head:
        return Readiness("not migrated", current, head)
    return Readiness("ready", current, head)


def _sql_error(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__
