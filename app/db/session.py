"""The one place that runs SQL as a caller: role, claims, timeout, statement, commit.

Every request (and every unit of engine work) runs in exactly one transaction
in which the caller's role and verified claims are set *transaction-locally*,
in one round trip, before anything else runs. Row level security then decides
what the caller sees. Because the settings are transaction-local, nothing of
one request survives into the next user of the pooled connection.

Three shapes, one pool, one statement that sets the caller (``_caller_settings``):

- ``transaction``: a SQLAlchemy connection shared by the resolvers of one request (``Tx``);
- ``read_json`` (``read_rows``): the hot path of compiled queries (of orderEvents' reads),
  the same transaction straight on the asyncpg connection;
- ``autocommit_row``: the hot path of compiled writes, one statement that sets the caller
  itself (migration 007's functions), bounded by the client's timeout, which asyncpg
  turns into a cancel on the server.

Failures are classified by app/db/failures.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql.elements import TextClause

from app.auth.claims import Claims
from app.db.failures import (
    CONNECTION_LOST,
    DatabaseUnavailable,
    hint_at_a_transaction_pooler,
    unavailable_if_away,
    unavailable_reason,
)
from app.db.login_role import LoginRole, UnsafeLoginRole, login_role, refuse_unsafe
from app.db.pool import FairQueuePool
from app.settings import APP_ROLES, PoolerMode, Settings

__all__ = ["Database", "DatabaseUnavailable", "LoginRole", "Tx", "UnsafeLoginRole"]
# DatabaseUnavailable is app/db/failures.py's, LoginRole and UnsafeLoginRole
# app/db/login_role.py's; named here too because every caller of Database meets them.

log = logging.getLogger(__name__)


def _caller_settings(role: str, claims: str, timeout: str, *, read_only: bool) -> str:
    """The statement that makes a transaction the caller's, with placeholders for the values.

    The caller's role and claims (and UTC) are set by migration 007's
    ``order_api_private.become``, the one definition of them: the compiled writes' functions
    call it too, in their one round trip. It refuses any role but the four API roles.
    Bound parameters only: the role name never becomes part of the SQL text. The statement
    timeout is set here too, per transaction, because a transaction pooler may refuse it as
    a startup parameter and would not keep a session-level one; it costs no extra round trip.
    """
    read_only_setting = ", set_config('transaction_read_only', 'on', true)" if read_only else ""
    return (
        f"SELECT order_api_private.become({role}, {claims}),"
        f" set_config('statement_timeout', {timeout}, true)" + read_only_setting
    )


# SQLAlchemy's named parameters (transaction), asyncpg's positional ones (read_json, which
# begins its transaction READ ONLY).
_SET_CALLER = {
    read_only: text(_caller_settings(":role", ":claims", ":timeout", read_only=read_only))
    for read_only in (False, True)
}
_SET_CALLER_SQL = _caller_settings("$1", "$2", "$3", read_only=False)

_CLOSE_TIMEOUT = 1.0
"""Seconds a failed raw connection may take to close: long enough for a statement the client
timed out to be cancelled on the server before the request is answered."""


def create_engine(
    url: URL,
    *,
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: float = 3.0,
    command_timeout: float | None = None,
    pooler: PoolerMode = "none",
) -> AsyncEngine:
    """The pool. ``command_timeout`` bounds each statement on the client side too (a server
    that stopped answering); ``pooler="transaction"`` turns prepared statements unnamed
    and uncached, since the next transaction may run on another server session."""
    # Only application_name, which every pooler passes on; TimeZone (UTC, so that timestamps
    # reach clients as PostgreSQL's to_json writes them) is set per transaction, with the role.
    connect_args: dict[str, Any] = {
        "server_settings": {"application_name": "order-api"},
        "timeout": connect_timeout,
        "command_timeout": command_timeout,
    }
    if pooler == "transaction":
        # asyncpg then uses the unnamed statement and re-parses it with each execution;
        # SQLAlchemy's own cache would keep named statements across transactions.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
    engine = create_async_engine(
        url,
        poolclass=FairQueuePool,  # connections in arrival order (app/db/pool.py)
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        pool_pre_ping=False,
        connect_args=connect_args,
        # A failed statement's text would carry its parameters, the caller's claims among them
        # (set_config above), into every log line and traceback that prints the error.
        hide_parameters=True,
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(
    dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    """Replace a pooled connection the server already closed (a restart while it sat idle).

    asyncpg notices the server's goodbye as soon as it arrives, so this costs no round trip,
    unlike a pre-ping; the pool then connects afresh for this checkout.
    """
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise sa_exc.DisconnectionError("connection closed by the server while idle")


COMMAND_TIMEOUT_MARGIN = 1.0
"""Seconds past ``STATEMENT_TIMEOUT_MS`` after which the client gives up on a statement
itself: the server should have cancelled it by then, so it is gone or not answering."""


def open_database(url: URL, settings: Settings, *, pooler: PoolerMode) -> Database:
    """The pool and transactions the settings describe, on ``url``."""
    timeout_ms = settings.statement_timeout_ms
    return Database(
        create_engine(
            url,
            pool_size=settings.db_pool_size,
            pool_timeout=settings.db_pool_timeout,
            connect_timeout=settings.db_connect_timeout,
            command_timeout=timeout_ms / 1000 + COMMAND_TIMEOUT_MARGIN if timeout_ms else None,
            pooler=pooler,
        ),
        statement_timeout_ms=timeout_ms,
    )


class Tx:
    """The caller's open transaction, shared by every resolver of one request.

    GraphQL resolves sibling fields concurrently, but a connection runs one
    statement at a time: the lock queues them instead of letting asyncpg fail.
    A statement failing because the database went away (or timed out) raises
    ``DatabaseUnavailable``, so every caller answers it the same retryable way.
    """

    def __init__(self, conn: AsyncConnection, claims: Claims) -> None:
        self.conn = conn
        self.claims = claims
        self._lock = asyncio.Lock()

    async def all(
        self, statement: TextClause, params: Mapping[str, Any] | None = None
    ) -> Sequence[RowMapping]:
        async with self._lock, unavailable_if_away():
            return (await self.conn.execute(statement, params or {})).mappings().all()

    async def first(
        self, statement: TextClause, params: Mapping[str, Any] | None = None
    ) -> RowMapping | None:
        async with self._lock, unavailable_if_away():
            return (await self.conn.execute(statement, params or {})).mappings().first()

    async def scalar(self, statement: TextClause, params: Mapping[str, Any] | None = None) -> Any:
        async with self._lock, unavailable_if_away():
            return (await self.conn.execute(statement, params or {})).scalar()


async def _begin(
    conn: AsyncConnection, statement: TextClause, params: Mapping[str, str], *, may_retry: bool
) -> bool:
    """Begin the transaction with the caller's role, claims and timeout; False when the
    connection broke doing so and may be replaced.

    A connection that breaks here has run nothing of the request yet, so it is
    replaced once (a connection the server dropped while it sat in the pool);
    nothing after this point is ever retried, because a write may have been sent.
    """
    try:
        await conn.begin()
        await conn.execute(statement, params)
        return True
    except Exception as error:
        await _end_after_failure(conn, error)
        reason = unavailable_reason(error, connecting=False)
        if reason == CONNECTION_LOST and may_retry:
            log.info("a pooled connection was broken; retrying on a new one")
            return False
        if reason is None:
            raise  # transaction's unavailable_if_away hints at a transaction pooler
        raise DatabaseUnavailable(reason, str(error)) from error


def _caller_values(claims: Claims) -> tuple[str, str]:
    """The role and claims to set: ``claims.role`` must be an application role."""
    if claims.role not in APP_ROLES:
        # Token verification already refuses these; this keeps the invariant local.
        raise ValueError(f"role {claims.role!r} is not an application role")
    return claims.role, claims.to_json()


async def _end_after_failure(conn: AsyncConnection, error: BaseException) -> None:
    """Roll back; but a connection that failed because the database went away (or did not
    answer in time) is discarded instead: its state is unknown, so it must not be reused."""
    with contextlib.suppress(Exception):
        if isinstance(error, Exception) and unavailable_reason(error, connecting=False):
            await conn.invalidate()
        else:
            await conn.rollback()


class Database:
    """The pool of ``authenticator`` connections and the per-caller transaction."""

    def __init__(
        self, engine: AsyncEngine, *, statement_timeout_ms: int = 5000, hint_pooler: bool = True
    ) -> None:
        self.engine = engine
        pool = engine.sync_engine.pool
        assert isinstance(pool, FairQueuePool), "create_engine's pool"
        self._pool = pool
        self.hint_pooler = hint_pooler
        """Log the hint at a transaction pooler (app/db/failures.py) on the failures it
        explains; off for a caller that explains them itself (the audit commands)."""
        self.statement_timeout = str(statement_timeout_ms)
        """Per transaction (``_caller_settings``); "0" means none."""
        self._autocommit_timeout = statement_timeout_ms / 1000 if statement_timeout_ms else None
        """An autocommit statement's bound, on the client: no transaction to set it in, and
        a session setting would outlive the request on a pooled connection."""

    @asynccontextmanager
    async def transaction(
        self, claims: Claims, *, read_only: bool = False, isolation: str | None = None
    ) -> AsyncIterator[Tx]:
        """One transaction as ``claims.role`` with ``claims`` visible to the policies.

        Commits when the block ends normally, rolls back on any exception. A database
        that is away (or a statement timeout) raises ``DatabaseUnavailable``.
        ``isolation``: SQLAlchemy's isolation level, for a reader that needs one snapshot
        (the audit trail); READ COMMITTED otherwise.
        """
        role, claims_json = _caller_values(claims)
        params = {"role": role, "claims": claims_json, "timeout": self.statement_timeout}
        async with unavailable_if_away(hint_pooler=self.hint_pooler):
            for attempt in (1, 2):
                # The connection's own context manager returns it to the pool in a task of
                # its own: safe from cancellation, and a request waiting for a connection
                # gets it before this task can take it back for its next request.
                async with contextlib.AsyncExitStack() as stack:
                    async with unavailable_if_away(connecting=True, hint_pooler=self.hint_pooler):
                        conn = await stack.enter_async_context(self.engine.connect())
                    if isolation is not None:
                        conn = await conn.execution_options(isolation_level=isolation)
                    statement = _SET_CALLER[read_only]
                    if not await _begin(conn, statement, params, may_retry=attempt == 1):
                        continue
                    try:
                        yield Tx(conn, claims)
                        await conn.commit()
                    except BaseException as error:
                        await _end_after_failure(conn, error)
                        raise
                    return

    async def read_json(self, claims: Claims, sql: str, args: Sequence[Any]) -> str:
        """One read-only statement answering JSON text, as ``claims.role`` with ``claims`` set.

        The hot path of compiled queries (graphql/compiled/): the same transaction and
        the same transaction-local role, claims and timeout as ``transaction``, on the same
        pool, but straight on the asyncpg connection, because each layer in between costs
        more CPU than the statement does in PostgreSQL. Read-only, so a connection that
        breaks is replaced and the statement sent again, once.

        Written out, without context managers of its own: each generator-based one cost
        about 10 µs per request here (bench/figures/stage-profile-issue19.md).
        """
        raw: str = await self._read_only(claims, _SET_CALLER_SQL, sql, args, rows=False)
        return raw

    async def read_rows(
        self, claims: Claims, sql: str, args: Sequence[Any], *, settings: str = ""
    ) -> list[Any]:
        """``read_json``'s transaction answering all rows (asyncpg Records) of ``sql``.

        ``settings``: more ``, set_config(..., true)`` calls of constants, sent in the
        caller's statement (no round trip of their own), for the planner of ``sql``.
        """
        rows: list[Any] = await self._read_only(
            claims, _SET_CALLER_SQL + settings, sql, args, rows=True
        )
        return rows

    async def _read_only(
        self, claims: Claims, caller_sql: str, sql: str, args: Sequence[Any], *, rows: bool
    ) -> Any:
        role, claims_json = _caller_values(claims)
        for attempt in (1, 2):
            proxied = await self._checkout()
            conn: Any = proxied.driver_connection  # asyncpg's, which ships no types
            try:
                # The round trips asyncpg's transaction() sends, with less Python around
                # them (bench/pool_checkout.py); READ ONLY here instead of in the settings.
                await conn.execute("BEGIN READ ONLY")
                try:
                    await conn.execute(caller_sql, role, claims_json, self.statement_timeout)
                    answer = await (conn.fetch(sql, *args) if rows else conn.fetchval(sql, *args))
                except BaseException:
                    if not conn.is_closed():
                        await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
                return answer
            except Exception as error:
                unavailable = await self._discard_if_away(proxied, error)
                if unavailable is None:
                    raise
                if unavailable.reason != CONNECTION_LOST or attempt == 2:
                    raise unavailable from error
                log.info("a pooled connection was broken; reading again on a new one")
            finally:
                proxied.close()
        raise AssertionError("unreachable")

    async def autocommit_row(self, sql: str, args: Sequence[Any]) -> Any:
        """One statement in autocommit, its own implicit transaction, on a pooled connection:
        the first row it returns (an asyncpg Record), or None.

        The hot path of compiled mutations (graphql/compiled/mutations.py): one round trip,
        no BEGIN or COMMIT. The statement sets the caller's role and claims itself (migration
        007's functions). It is bounded by ``STATEMENT_TIMEOUT_MS`` on the client, which
        cancels it on the server (directly or through a pooler) before answering
        STATEMENT_TIMEOUT. A write: never sent twice, and a connection that broke is
        discarded.
        """
        proxied = await self._checkout()
        conn: Any = proxied.driver_connection
        try:
            return await conn.fetchrow(sql, *args, timeout=self._autocommit_timeout)
        except Exception as error:
            unavailable = await self._discard_if_away(proxied, error)
            if unavailable is None:
                raise
            raise unavailable from error
        finally:
            proxied.close()

    async def _checkout(self) -> PoolProxiedConnection:
        """A pooled connection for the hot paths; the caller gives it back with ``close()``.

        SQLAlchemy's pool runs in a greenlet so that it can await a turn in the queue, a new
        connection, or the replacement of one the server closed; that round trip was about
        two thirds of a checkout and checkin (bench/figures/stage-profile-issue19.md). When
        the next idle connection can be taken as it is (``FairQueuePool.idle``), the pool's
        own checkout awaits nothing and runs here directly: the same pool, queue, events
        and wait metric. ``MissingGreenlet`` would mean it tried to await after all (a
        SQLAlchemy whose checkout changed): it then put the connection back, and the
        checkout starts again the awaiting way, logged because ``idle`` needs fixing.
        """
        pool = self._pool
        try:
            if pool.idle:
                try:
                    return pool.connect()
                except sa_exc.MissingGreenlet:
                    log.warning("an idle connection's checkout had to await", exc_info=True)
            return await self.engine.raw_connection()
        except Exception as error:
            reason = unavailable_reason(error, connecting=True)
            if reason is None:
                raise
            raise DatabaseUnavailable(reason, str(error)) from error

    async def _discard_if_away(
        self, proxied: PoolProxiedConnection, error: Exception
    ) -> DatabaseUnavailable | None:
        """``error`` as ``DatabaseUnavailable`` when it means the database is away, else None.

        Such a connection is discarded (its state is unknown), after a graceful close: that
        waits for a statement the client timed out to be cancelled on the server, so that
        "nothing was written" is true when the caller answers.
        """
        reason = unavailable_reason(error, connecting=False)
        if reason is None:
            if self.hint_pooler:
                hint_at_a_transaction_pooler(error)
            return None
        conn: Any = proxied.driver_connection
        with contextlib.suppress(Exception):
            await conn.close(timeout=_CLOSE_TIMEOUT)
        proxied.invalidate()  # never hand it out again
        return DatabaseUnavailable(reason, str(error))

    async def login_role(self) -> LoginRole:
        return await login_role(self.engine)

    async def check_login_role(self) -> LoginRole:
        """Refuse a login role for which row level security would not apply."""
        return refuse_unsafe(await self.login_role())

    async def dispose(self) -> None:
        await self.engine.dispose()
