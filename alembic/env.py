"""Alembic environment: async engine online, plain PostgreSQL SQL offline."""

from __future__ import annotations

import asyncio
import logging.config
from collections.abc import Callable

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from app.db.failures import connection_failure, describe
from app.db.urls import async_url
from app.models import Base
from app.settings import Settings, SettingsError

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _configured_url() -> str | None:
    # A caller (tests, `python -m app`) may hand over a URL; else DATABASE_URL, else alembic.ini.
    return (
        config.attributes.get("database_url")
        or Settings.from_env().database_url
        or config.get_main_option("sqlalchemy.url")
        or None
    )


def run_migrations_offline() -> None:
    url = _configured_url()
    context.configure(
        url=url,
        dialect_name=None if url else "postgresql",
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    # The migration hands AUTHENTICATOR_PASSWORD over as a bound parameter: never print it.
    engine = create_async_engine(async_url(url), hide_parameters=True)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
        return
    url = _configured_url()
    if url is None:
        from app.db import embedded

        url = embedded.start(Settings.from_env().data_dir).owner_url.render_as_string(
            hide_password=False
        )
    asyncio.run(_run_online(url))


def _one_line_failures(run: Callable[[], None]) -> None:
    """From the ``alembic`` command line, a bad DATABASE_URL or an unreachable server is one
    line and exit status 1, not a traceback. The application's own calls (``config.cmd_opts``
    unset) get the exception, and say it their way."""
    if config.cmd_opts is None:
        run()
        return
    try:
        run()
    except SettingsError as error:
        raise SystemExit(f"configuration error: {error}") from None
    except Exception as error:
        reason = connection_failure(error)
        if reason is None:
            raise
        url = _configured_url()
        where = f" at {describe(url)}" if url else ""
        raise SystemExit(
            f"database error: cannot connect to the database{where}: {reason}"
        ) from None


if context.is_offline_mode():
    _one_line_failures(run_migrations_offline)
else:
    _one_line_failures(run_migrations_online)
