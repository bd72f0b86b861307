"""A failure to reach or log in to PostgreSQL, said in one line for the person at the terminal.

The command line (``python -m app``) and Alembic's environment meet these at start, before
anything is served: a closed port, an unknown host, a wrong password, a missing role or
database. The driver reports them as an exception wrapped in SQLAlchemy's, with a traceback
of a hundred lines; what the operator needs is what failed and where. ``connection_failure``
finds that in the exception's chain, or returns None for anything else (a bug keeps its
traceback).
"""

from __future__ import annotations

import os
import socket

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

# Errors PostgreSQL (or the way to it) answers a connection attempt with.
_CONNECT_ERRORS = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,  # role missing, or no pg_hba entry
    asyncpg.InvalidCatalogNameError,  # database missing
    asyncpg.CannotConnectNowError,  # starting up / shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
)


def connection_failure(error: BaseException) -> str | None:
    """The reason a connection could not be made, in one line; None if ``error`` is not that."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _CONNECT_ERRORS):
            return _first_line(str(current)) or type(current).__name__
        if isinstance(current, OSError):
            # ConnectionRefusedError, socket.gaierror (unknown host), TimeoutError, ...
            if current.errno and not isinstance(current, socket.gaierror):
                return os.strerror(current.errno).lower()
            return _first_line(current.strerror or str(current)) or type(current).__name__
        if isinstance(current, sa_exc.TimeoutError):
            return "timed out waiting for a connection"
        # Follow what Python would show: the cause, else the context unless suppressed.
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return None


def describe(url: str | URL) -> str:
    """The URL without its password, for messages and logs."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""
