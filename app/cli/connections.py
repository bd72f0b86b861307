"""Which database a command uses, and a failure to reach it as one line.

A command uses the configured database when ``DATABASE_URL`` is set, else the embedded
PostgreSQL (started on demand, left running for the next command).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator

from app.settings import Settings


class CannotConnect(Exception):
    """The database named in the message cannot be reached or logged in to."""


def quiet_pgserver() -> None:
    # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
    warnings.filterwarnings("ignore", module="platformdirs")


def embedded_settings(settings: Settings) -> tuple[Settings, bool]:
    """Settings pointing at the embedded server when no DATABASE_URL is given, and whether
    this call started it."""
    from app.db import embedded

    if settings.database_url is not None:
        return settings, False
    quiet_pgserver()
    server = embedded.start(settings.data_dir)
    owner = server.owner_url.render_as_string(hide_password=False)
    api = settings.api_database_url or server.url_for("authenticator").render_as_string(
        hide_password=False
    )
    return dataclasses.replace(
        settings, database_url=owner, api_database_url=api
    ), server.started_here


def api_settings(settings: Settings) -> Settings:
    """For ``serve`` and ``worker``: the configured login (API_DATABASE_URL, or derived from
    DATABASE_URL), else the embedded server's; never the embedded server when a database is
    configured."""
    from app.db.urls import api_database_url

    configured = api_database_url(settings)  # refuses DATABASE_URL without a way to log in
    if configured is None:
        return embedded_settings(settings)[0]
    return dataclasses.replace(settings, api_database_url=configured)


@contextlib.contextmanager
def connecting(name: str, url: str | None) -> Iterator[None]:
    """A failure to connect becomes one line naming the variable and the server."""
    from app.db.failures import connection_failure, describe

    try:
        yield
    except Exception as error:
        reason = connection_failure(error)
        if reason is None:
            raise
        where = f"{name} ({describe(url)})" if url else f"the {name} PostgreSQL"
        raise CannotConnect(f"cannot connect to the database at {where}: {reason}") from None


async def check_api_login(settings: Settings) -> None:
    """What the server's startup checks first, checked before the server starts so that a
    failure is one line rather than uvicorn's traceback of the app's startup."""
    from app.main import database_for

    database = database_for(settings)
    try:
        await database.check_login_role()
    finally:
        await database.dispose()
