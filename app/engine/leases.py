"""Who owns an order in flight: advisory-lock leases, and the recovery rule they give.

Ownership and recovery (the rule)
    An order in flight is *owned* by exactly one live worker: the worker holds a
    session-level PostgreSQL advisory lock on it (key: ``LEASE_NAMESPACE`` and the
    order id's first 31 bits, see ``lease_key``) on a dedicated *lease
    connection*. The lock is taken before the approval commits and released only
    once the order is final (or was found not to be in flight), so it covers the
    whole window in which a venue call may be outstanding. A session lock dies
    with its session: when a worker process is killed, its connection closes and
    its leases are free.

    Therefore: **an approved, non-final order whose lease is free has been
    abandoned** (``FIND_ABANDONED``). Each pass, a worker looks for such orders
    (``pg_locks``), takes the lease, re-reads the order under its row lock and, if
    it is still in flight, sets ``recovered_at`` (one RECOVERED log row per
    takeover) and carries on from the order's state: re-submit if not routed (the
    venue deduplicates), else poll (fills deduplicate). A RECOVERED row thus means
    the order changed hands while in flight: its previous worker crashed, was
    killed, lost its lease connection or shut down.

    If the lease connection itself breaks, the worker forgets every order it
    owned (another worker may adopt them meanwhile) and re-adopts them, with a
    RECOVERED row, like any other abandoned order. Two workers briefly acting on
    one order is safe by the engine's exactly-once rules (``app.engine.worker``);
    the leases only keep it rare. Lease keys are 31 bits, so two orders can share
    one: that only delays the adoption of an abandoned order until the other order
    is final.

    The lease connection runs only ``pg_try_advisory_lock``/``pg_advisory_unlock``
    and reads no table.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Final
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.orders import lifecycle

__all__ = ["FIND_ABANDONED", "LEASE_NAMESPACE", "Leases", "lease_key"]

log = logging.getLogger(__name__)

LEASE_NAMESPACE: Final = 0x6F_65_6E_67
"""First key of the two-key advisory locks ("oeng"), so that the leases cannot collide with
other users of single-key advisory locks in the same database."""


def lease_key(order_id: UUID) -> int:
    """The second advisory lock key of an order: its first 31 bits (``_LEASE_KEY_SQL``)."""
    return int.from_bytes(order_id.bytes[:4], "big") & 0x7FFF_FFFF


# The same value computed in SQL from orders.id (its text starts with the first 4 bytes in hex).
_LEASE_KEY_SQL: Final = (
    "((('x' || left(replace(o.id::text, '-', ''), 8))::bit(32)::int) & 2147483647)"
)

FIND_ABANDONED: Final = text(
    f"""
    WITH leased AS (
        SELECT l.objid FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.classid = CAST({LEASE_NAMESPACE} AS oid)
           AND l.database = (SELECT d.oid FROM pg_database d
                              WHERE d.datname = current_database())
    )
    SELECT o.id FROM orders o
     WHERE o.status IN {lifecycle.sql_list(lifecycle.OPEN)} AND o.approved_at IS NOT NULL
       AND NOT (o.id = ANY(:owned))
       AND NOT EXISTS (
           SELECT 1 FROM leased WHERE leased.objid = CAST({_LEASE_KEY_SQL} AS oid)
       )
     ORDER BY o.updated_at, o.id
     LIMIT :limit
    """
)
"""The rule as a query: ids of approved, non-final orders whose lease nobody holds, oldest
first, leaving out ``:owned`` (this worker's own)."""


class Leases:
    """Session-level advisory locks on one dedicated connection (see the module docstring).

    The connection is outside the ``Database`` pool (so it never starves request
    work) and in autocommit mode, so that no transaction is ever left open on it.
    """

    def __init__(self, url: URL, worker_id: str) -> None:
        self._engine: AsyncEngine = create_async_engine(
            url,
            poolclass=NullPool,
            connect_args={"server_settings": {"application_name": f"order-engine {worker_id}"}},
        )
        self._conn: AsyncConnection | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def ensure(self) -> bool:
        """Make sure the lease connection is up; True when it is new (all leases were lost)."""
        if self._conn is not None:
            try:
                await self._conn.execute(text("SELECT 1"))
                return False
            except Exception:
                log.warning("lease connection lost; reconnecting", exc_info=True)
                await self._discard()
        conn = await self._engine.connect()
        self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return True

    async def acquire(self, order_id: UUID) -> bool:
        value = await self._scalar(
            f"SELECT pg_try_advisory_lock({LEASE_NAMESPACE}, :key)", lease_key(order_id)
        )
        return bool(value)

    async def release(self, order_id: UUID) -> None:
        await self._scalar(
            f"SELECT pg_advisory_unlock({LEASE_NAMESPACE}, :key)", lease_key(order_id)
        )

    async def _scalar(self, sql: str, key: int) -> Any:
        if self._conn is None:
            raise RuntimeError("the lease connection is not open")
        try:
            return (await self._conn.execute(text(sql), {"key": key})).scalar()
        except Exception:
            # Whatever was held on this session is gone or unknowable: drop it, so that the
            # next pass reconnects and the worker forgets what it owned.
            await self._discard()
            raise

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        """Closing the session releases every lease at once (a graceful hand-over)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.warning("closing the lease connection failed", exc_info=True)
        await self._engine.dispose()
