"""The one place that opens a database transaction for a caller.

Every request (and every unit of engine work) runs in exactly one transaction
in which the caller's role and verified claims are set *transaction-locally*,
in one round trip, before anything else runs. Row level security then decides
what the caller sees. Because the settings are transaction-local, nothing of
one request survives into the next user of the pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql.elements import TextClause

from app.auth.claims import Claims
from app.db.pool import FairQueuePool
from app.settings import APP_ROLES, PoolerMode, Settings

log = logging.getLogger(__name__)

# Bound parameters only: the role name never becomes part of the SQL text. The statement
# timeout and the time zone are set here too, per transaction, because a transaction pooler
# may refuse them as startup parameters and would not keep session-level ones; it costs no
# extra round trip.
_CALLER_SETTINGS = (
    "set_config('role', {role}, true), set_config('request.jwt.claims', {claims}, true),"
    " set_config('statement_timeout', {timeout}, true), set_config('TimeZone', 'UTC', true)"
)
_SET_CALLER = text(
    "SELECT " + _CALLER_SETTINGS.format(role=":role", claims=":claims", timeout=":timeout")
)
_SET_CALLER_READ_ONLY = text(
    "SELECT "
    + _CALLER_SETTINGS.format(role=":role", claims=":claims", timeout=":timeout")
    + ", set_config('transaction_read_only', 'on', true)"
)
_SESSION_TIMEOUT = "SELECT set_config('statement_timeout', $1, false)"
_SET_CALLER_SQL = "SELECT " + _CALLER_SETTINGS.format(role="$1", claims="$2", timeout="$3")

_LOGIN_ROLE_CHECK = text(
    """
    SELECT r.rolname, r.rolsuper, r.rolbypassrls,
           EXISTS (
               SELECT 1 FROM pg_class c
                WHERE c.relnamespace = 'public'::regnamespace
                  AND c.relname IN ('orders', 'fills', 'execution_logs')
                  AND pg_has_role(current_user, c.relowner, 'MEMBER')
           ) AS owns_tables,
           -- Migration 007's compiled writes (on Supabase a login role of one's own needs
           -- the grants of README's step 3); the schema first: without USAGE its functions
           -- cannot even be looked up.
           CASE WHEN coalesce(
                    has_schema_privilege(to_regnamespace('order_api_private')::oid, 'USAGE'), false)
                THEN coalesce(
                    has_function_privilege(
                        to_regprocedure('order_api_private.submit_order(text,text,jsonb)')::oid,
                        'EXECUTE')
                    AND has_function_privilege(
                        to_regprocedure(
                            'order_api_private.cancel_order(text,text,uuid,text,text[])')::oid,
                        'EXECUTE'),
                    false)
                ELSE false END AS compiled_writes
      FROM pg_roles r WHERE r.rolname = current_user
    """
)

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


class UnsafeLoginRole(RuntimeError):
    """The API's login role would bypass row level security; the server refuses to start."""


@dataclass(frozen=True)
class LoginRole:
    name: str
    superuser: bool
    bypass_rls: bool
    owns_tables: bool
    compiled_writes: bool = False
    """May call migration 007's functions (graphql/compiled/mutations.py)."""


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
        session_timeout=pooler == "none",
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
        async with self._lock, _unavailable_if_away():
            return (await self.conn.execute(statement, params or {})).mappings().all()

    async def first(
        self, statement: TextClause, params: Mapping[str, Any] | None = None
    ) -> RowMapping | None:
        async with self._lock, _unavailable_if_away():
            return (await self.conn.execute(statement, params or {})).mappings().first()

    async def scalar(self, statement: TextClause, params: Mapping[str, Any] | None = None) -> Any:
        async with self._lock, _unavailable_if_away():
            return (await self.conn.execute(statement, params or {})).scalar()


@asynccontextmanager
async def _unavailable_if_away(*, connecting: bool = False) -> AsyncIterator[None]:
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as error:
        reason = unavailable_reason(error, connecting=connecting)
        if reason is None:
            _hint_at_a_transaction_pooler(error)
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


def _hint_at_a_transaction_pooler(error: Exception) -> None:
    if prepared_statements_lost(error):
        _log_pooler_hint()


@functools.cache  # once per process: the cause is the configuration, not the request
def _log_pooler_hint() -> None:
    log.error(
        "prepared statements are failing: API_DATABASE_URL looks like a transaction"
        " pooler (PgBouncer pool_mode=transaction, Supavisor on 6543); set"
        " DB_POOLER=transaction"
    )


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
        self, engine: AsyncEngine, *, statement_timeout_ms: int = 5000, session_timeout: bool = True
    ) -> None:
        self.engine = engine
        self.statement_timeout = str(statement_timeout_ms)
        """Per transaction (``_SET_CALLER``); "0" means none."""
        self.session_timeout = session_timeout
        """Give each connection the timeout for its autocommit statements too (no pooler:
        the session is this connection's own)."""
        self._timed: weakref.WeakSet[Any] = weakref.WeakSet()
        """Connections that have it."""

    @asynccontextmanager
    async def transaction(self, claims: Claims, *, read_only: bool = False) -> AsyncIterator[Tx]:
        """One transaction as ``claims.role`` with ``claims`` visible to the policies.

        Commits when the block ends normally, rolls back on any exception. A database
        that is away (or a statement timeout) raises ``DatabaseUnavailable``.
        """
        if claims.role not in APP_ROLES:
            # Token verification already refuses these; this keeps the invariant local.
            raise ValueError(f"role {claims.role!r} is not an application role")
        async with _unavailable_if_away():
            for attempt in (1, 2):
                # The connection's own context manager returns it to the pool in a task of
                # its own: safe from cancellation, and a request waiting for a connection
                # gets it before this task can take it back for its next request.
                async with contextlib.AsyncExitStack() as stack:
                    async with _unavailable_if_away(connecting=True):
                        conn = await stack.enter_async_context(self.engine.connect())
                    if not await self._set_caller(conn, claims, read_only, may_retry=attempt == 1):
                        continue
                    try:
                        yield Tx(conn, claims)
                        await conn.commit()
                    except BaseException as error:
                        await _end_after_failure(conn, error)
                        raise
                    return

    async def _set_caller(
        self, conn: AsyncConnection, claims: Claims, read_only: bool, *, may_retry: bool
    ) -> bool:
        """Begin the transaction with the caller's role, claims and timeout; False when the
        connection broke doing so and may be replaced.

        A connection that breaks here has run nothing of the request yet, so it is
        replaced once (a connection the server dropped while it sat in the pool);
        nothing after this point is ever retried, because a write may have been sent.
        """
        params = {
            "role": claims.role,
            "claims": claims.to_json(),
            "timeout": self.statement_timeout,
        }
        try:
            await conn.begin()
            await conn.execute(_SET_CALLER_READ_ONLY if read_only else _SET_CALLER, params)
            return True
        except Exception as error:
            await _end_after_failure(conn, error)
            reason = unavailable_reason(error, connecting=False)
            if reason == CONNECTION_LOST and may_retry:
                log.info("a pooled connection was broken; retrying on a new one")
                return False
            if reason is None:
                _hint_at_a_transaction_pooler(error)
                raise
            raise DatabaseUnavailable(reason, str(error)) from error

    async def read_json(self, claims: Claims, sql: str, args: Sequence[Any]) -> str:
        """One read-only statement answering JSON text, as ``claims.role`` with ``claims`` set.

        The hot path of compiled queries (graphql/compiled/): the same transaction and
        the same transaction-local role, claims and timeout as ``transaction``, on the same
        pool, but straight on the asyncpg connection, because each layer in between costs
        more CPU than the statement does in PostgreSQL. Read-only, so a connection that
        breaks is replaced and the statement sent again, once.
        """
        if claims.role not in APP_ROLES:
            raise ValueError(f"role {claims.role!r} is not an application role")
        for attempt in (1, 2):
            try:
                return await self._read_json_once(claims, sql, args)
            except DatabaseUnavailable as error:
                if error.reason != CONNECTION_LOST or attempt == 2:
                    raise
                log.info("a pooled connection was broken; reading again on a new one")
        raise AssertionError("unreachable")

    async def _read_json_once(self, claims: Claims, sql: str, args: Sequence[Any]) -> str:
        async with _unavailable_if_away(connecting=True):
            proxied = await self.engine.raw_connection()
        try:
            conn = proxied.driver_connection
            assert conn is not None
            async with _unavailable_if_away(), conn.transaction(readonly=True):
                await conn.execute(
                    _SET_CALLER_SQL, claims.role, claims.to_json(), self.statement_timeout
                )
                raw: str = await conn.fetchval(sql, *args)
            return raw
        except DatabaseUnavailable:
            proxied.invalidate()  # its state is unknown: never hand it out again
            raise
        finally:
            proxied.close()

    async def autocommit_row(self, sql: str, args: Sequence[Any]) -> Any:
        """One statement in autocommit, its own implicit transaction, on a pooled connection:
        the first row it returns (an asyncpg Record), or None.

        The hot path of compiled mutations (graphql/compiled/mutations.py): one round trip,
        no BEGIN or COMMIT. The statement sets the caller's role and claims itself (migration
        007's functions); the statement timeout is the connection's session setting, or
        through a pooler the client's command timeout. A write: never sent twice,
        and a connection that broke is discarded.
        """
        async with _unavailable_if_away(connecting=True):
            proxied = await self.engine.raw_connection()
        try:
            conn = proxied.driver_connection
            assert conn is not None
            async with _unavailable_if_away():
                if self.session_timeout and conn not in self._timed:
                    # Once per connection: an autocommit statement has no transaction to set
                    # it in. Not through a pooler (the session is not ours there): the
                    # client's command timeout bounds the statement instead.
                    await conn.execute(_SESSION_TIMEOUT, self.statement_timeout)
                    self._timed.add(conn)
                return await conn.fetchrow(sql, *args)
        except DatabaseUnavailable:
            proxied.invalidate()  # its state is unknown: never hand it out again
            raise
        finally:
            proxied.close()

    async def login_role(self) -> LoginRole:
        async with self.engine.connect() as conn:
            row = (await conn.execute(_LOGIN_ROLE_CHECK)).one()
        return LoginRole(
            name=row.rolname,
            superuser=row.rolsuper,
            bypass_rls=row.rolbypassrls,
            owns_tables=row.owns_tables,
            compiled_writes=row.compiled_writes,
        )

    async def check_login_role(self) -> LoginRole:
        """Refuse a login role for which row level security would not apply."""
        role = await self.login_role()
        problems = [
            reason
            for flag, reason in (
                (role.superuser, "is a superuser"),
                (role.bypass_rls, "has BYPASSRLS"),
                (role.owns_tables, "owns the order tables (or is a member of their owner)"),
            )
            if flag
        ]
        if problems:
            raise UnsafeLoginRole(
                f"refusing to serve: the database login role {role.name!r} "
                + " and ".join(problems)
                + "; row level security would not protect traders. Connect as 'authenticator'"
                " (API_DATABASE_URL)."
            )
        return role

    async def dispose(self) -> None:
        await self.engine.dispose()
