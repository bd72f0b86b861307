"""What failed when the database failed: for the person at the terminal, and for a request.

Two audiences, two questions:

- At start (the command line, ``python -m app``, and Alembic's environment): a closed port,
  an unknown host, a wrong password, a missing role or database. The driver reports them as
  an exception wrapped in SQLAlchemy's, with a traceback of a hundred lines; what the
  operator needs is what failed and where. ``connection_failure`` finds that in the
  exception's chain, or returns None for anything else (a bug keeps its traceback).
- While serving (app/db/session.py): whether a failure means "the database is away, retry"
  (``unavailable_reason``), raised as ``DatabaseUnavailable`` with one of the reasons below,
  which clients see as ``extensions.reason`` of a 503; and whether it is the mark of a
  transaction pooler the connection was not told about (``prepared_statements_lost``).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

log = logging.getLogger(__name__)

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


# --- while serving: is the database away? ------------------------------------------------------

# Why a request could not be served although nothing is wrong with it (extensions.reason).
POOL_EXHAUSTED = "POOL_EXHAUSTED"
"""Every pooled connection stayed busy for ``DB_POOL_TIMEOUT``."""
DATABASE_UNREACHABLE = "DATABASE_UNREACHABLE"
"""No new connection: refused, timed out, or the server is starting up or shutting down."""
CONNECTION_LOST = "CONNECTION_LOST"
"""The connection broke during the request; it was rolled back unless its commit had been
sent, so a retried write must be idempotent (``clientOrderId``)."""
STATEMENT_TIMEOUT = "STATEMENT_TIMEOUT"
"""A statement ran longer than ``STATEMENT_TIMEOUT_MS`` and was cancelled; nothing was written."""

# SQLSTATEs that say the server, not the request, is the problem.
_SERVER_GOING_AWAY = {"57P01", "57P02", "57P03", "53300"}  # admin/crash shutdown, starting, full
_QUERY_CANCELED = "57014"  # statement_timeout (or an operator's pg_cancel_backend)


class DatabaseUnavailable(Exception):
    """The request could not be served by the database for now; the caller may retry.

    ``reason`` is one of the constants above.
    """

    def __init__(self, reason: str = DATABASE_UNREACHABLE, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: SQLAlchemy's ``orig``, then the ``__cause__`` chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__


def unavailable_reason(error: BaseException, *, connecting: bool) -> str | None:
    """Why ``error`` means "the database is away, retry" (a reason above), or None.

    ``connecting``: raised while getting a connection (before anything was sent).
    """
    lost = DATABASE_UNREACHABLE if connecting else CONNECTION_LOST
    for cause in _chain(error):
        if isinstance(cause, DatabaseUnavailable):
            return cause.reason
        if isinstance(cause, sa_exc.TimeoutError):
            return POOL_EXHAUSTED
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return lost
        if isinstance(cause, asyncpg.PostgresError):
            state = cause.sqlstate or ""
            if state == _QUERY_CANCELED:
                return STATEMENT_TIMEOUT
            if state in _SERVER_GOING_AWAY or state.startswith("08"):
                return lost
        if isinstance(cause, asyncpg.ConnectionDoesNotExistError) or (
            isinstance(cause, asyncpg.InterfaceError) and "connection is closed" in str(cause)
        ):
            return lost
        if isinstance(cause, asyncpg.InternalClientError) and "in progress" in str(cause):
            # "cannot switch to state ...; another operation is in progress": seen when an
            # immediate shutdown's goodbye reached an idle pooled connection (one statement
            # at a time is the rule here, see Tx). The connection is unusable.
            return lost
        if isinstance(cause, TimeoutError):
            # asyncpg's connect timeout, or its command timeout: the server did not answer.
            return DATABASE_UNREACHABLE if connecting else STATEMENT_TIMEOUT
        if isinstance(cause, OSError):
            return lost
    return None


@asynccontextmanager
async def unavailable_if_away(
    *, connecting: bool = False, hint_pooler: bool = True
) -> AsyncIterator[None]:
    """Raise a failure that means "the database is away" as ``DatabaseUnavailable``.

    ``connecting``: the block gets a connection (nothing of the request was sent yet).
    ``hint_pooler``: log the hint at a transaction pooler (once per process) when another
    failure looks like one; off for a caller that says so itself.
    """
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as error:
        reason = unavailable_reason(error, connecting=connecting)
        if reason is None:
            if hint_pooler:
                hint_at_a_transaction_pooler(error)
            raise
        raise DatabaseUnavailable(reason, str(error)) from error


# Named prepared statements that vanish or collide: a transaction pooler handed the
# connection's next transaction to another server session.
_PREPARED_STATEMENT_STATES = {"26000", "42P05"}


def prepared_statements_lost(error: BaseException) -> bool:
    """Whether ``error`` is a named prepared statement missing or already there: the mark of a
    transaction pooler in front of a connection that was not told so (``DB_POOLER``)."""
    return any(
        isinstance(cause, asyncpg.PostgresError) and cause.sqlstate in _PREPARED_STATEMENT_STATES
        for cause in _chain(error)
    )


def hint_at_a_transaction_pooler(error: Exception) -> None:
    if prepared_statements_lost(error):
        _log_pooler_hint()


@functools.cache  # once per process: the cause is the configuration, not the request
def _log_pooler_hint() -> None:
    log.error(
        "prepared statements are failing: API_DATABASE_URL looks like a transaction"
        " pooler (PgBouncer pool_mode=transaction, Supavisor on 6543); set"
        " DB_POOLER=transaction"
    )
