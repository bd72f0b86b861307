"""The one place that opens a database transaction for a caller.

Every request (and every unit of engine work) runs in exactly one transaction
in which the caller's role and verified claims are set *transaction-locally*,
in one round trip, before anything else runs. Row level security then decides
what the caller sees. Because the settings are transaction-local, nothing of
one request survives into the next user of the pooled connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import URL, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause

from app.auth.claims import Claims
from app.settings import APP_ROLES

log = logging.getLogger(__name__)

# Bound parameters only: the role name never becomes part of the SQL text.
_SET_CALLER = text(
    "SELECT set_config('role', :role, true), set_config('request.jwt.claims', :claims, true)"
)
_SET_CALLER_SQL = "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)"
_SET_CALLER_READ_ONLY = text(
    "SELECT set_config('role', :role, true), set_config('request.jwt.claims', :claims, true),"
    " set_config('transaction_read_only', 'on', true)"
)

_LOGIN_ROLE_CHECK = text(
    """
    SELECT r.rolname, r.rolsuper, r.rolbypassrls,
           EXISTS (
               SELECT 1 FROM pg_class c
                WHERE c.relnamespace = 'public'::regnamespace
                  AND c.relname IN ('orders', 'fills', 'execution_logs')
                  AND pg_has_role(current_user, c.relowner, 'MEMBER')
           ) AS owns_tables
      FROM pg_roles r WHERE r.rolname = current_user
    """
)


class DatabaseUnavailable(Exception):
    """The database cannot be reached or the pool is exhausted; the caller may retry."""


class UnsafeLoginRole(RuntimeError):
    """The API's login role would bypass row level security; the server refuses to start."""


@dataclass(frozen=True)
class LoginRole:
    name: str
    superuser: bool
    bypass_rls: bool
    owns_tables: bool


def create_engine(
    url: URL, *, pool_size: int = 10, pool_timeout: float = 5.0, statement_timeout_ms: int = 5000
) -> AsyncEngine:
    # UTC: timestamps reach clients as PostgreSQL's to_json writes them (graphql/scalars.py).
    server_settings = {"application_name": "order-api", "TimeZone": "UTC"}
    if statement_timeout_ms:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        pool_pre_ping=False,
        connect_args={"server_settings": server_settings},
        # A failed statement's text would carry its parameters, the caller's claims among them
        # (set_config above), into every log line and traceback that prints the error.
        hide_parameters=True,
    )


class Tx:
    """The caller's open transaction, shared by every resolver of one request.

    GraphQL resolves sibling fields concurrently, but a connection runs one
    statement at a time: the lock queues them instead of letting asyncpg fail.
    """

    def __init__(self, conn: AsyncConnection, claims: Claims) -> None:
        self.conn = conn
        self.claims = claims
        self._lock = asyncio.Lock()

    async def all(
        self, statement: TextClause, params: Mapping[str, Any] | None = None
    ) -> Sequence[RowMapping]:
        async with self._lock:
            return (await self.conn.execute(statement, params or {})).mappings().all()

    async def first(
        self, statement: TextClause, params: Mapping[str, Any] | None = None
    ) -> RowMapping | None:
        async with self._lock:
            return (await self.conn.execute(statement, params or {})).mappings().first()

    async def scalar(self, statement: TextClause, params: Mapping[str, Any] | None = None) -> Any:
        async with self._lock:
            return (await self.conn.execute(statement, params or {})).scalar()


class Database:
    """The pool of ``authenticator`` connections and the per-caller transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def transaction(self, claims: Claims, *, read_only: bool = False) -> AsyncIterator[Tx]:
        """One transaction as ``claims.role`` with ``claims`` visible to the policies.

        Commits when the block ends normally, rolls back on any exception.
        """
        if claims.role not in APP_ROLES:
            # Token verification already refuses these; this keeps the invariant local.
            raise ValueError(f"role {claims.role!r} is not an application role")
        try:
            async with self.engine.connect() as conn, conn.begin():
                await conn.execute(
                    _SET_CALLER_READ_ONLY if read_only else _SET_CALLER,
                    {"role": claims.role, "claims": claims.to_json()},
                )
                yield Tx(conn, claims)
        except (sa_exc.TimeoutError, OSError, sa_exc.InterfaceError) as error:
            raise DatabaseUnavailable(str(error)) from error
        except sa_exc.DBAPIError as error:
            if error.connection_invalidated:
                raise DatabaseUnavailable(str(error)) from error
            raise

    async def read_json(self, claims: Claims, sql: str, args: Sequence[Any]) -> str:
        """One read-only statement answering JSON text, as ``claims.role`` with ``claims`` set.

        The hot path of compiled queries (graphql/compiled.py): the same transaction and
        the same transaction-local role and claims as ``transaction``, on the same pool,
        but straight on the asyncpg connection, because each layer in between costs
        more CPU than the statement does in PostgreSQL.
        """
        if claims.role not in APP_ROLES:
            raise ValueError(f"role {claims.role!r} is not an application role")
        try:
            proxied = await self.engine.raw_connection()
        except (sa_exc.TimeoutError, OSError, sa_exc.InterfaceError) as error:
            raise DatabaseUnavailable(str(error)) from error
        try:
            conn = proxied.driver_connection
            assert conn is not None
            async with conn.transaction(readonly=True):
                await conn.execute(_SET_CALLER_SQL, claims.role, claims.to_json())
                raw: str = await conn.fetchval(sql, *args)
            return raw
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as error:
            proxied.invalidate()
            raise DatabaseUnavailable(str(error)) from error
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
