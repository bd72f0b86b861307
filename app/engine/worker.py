"""The execution engine: moves orders from PENDING to a final state, through the database.

A ``Worker`` polls the ``orders`` table every ``settings.engine_poll_seconds``
(LISTEN/NOTIFY is not wired up yet) and works as ``service_role`` through
``Database.transaction``, exactly like the API: it writes ``orders`` columns
and inserts ``fills``; the migration's triggers derive fill state and statuses
and write every ``execution_logs`` row. Several workers (processes) may run
against one database at once.

Lifecycle, per order
    new (PENDING, not approved)
        expired -> CANCELLED "expired"; else the pre-trade risk check
        (``app.engine.risk``) -> REJECTED with its code, or approved.
    in flight (approved, not final)
        expired -> cancelled at the venue, executions recorded, CANCELLED "expired";
        not routed -> submitted to the venue (idempotent by order id):
            accepted -> ``routed_at`` (EXECUTED "sent to venue");
            transient error -> ``retry_attempt`` + 1 with the venue's code (EXECUTED),
                retried no earlier than ``engine_retry_base_seconds * 2**retry_attempt``
                after ``updated_at``; the failure after ``engine_max_retries`` retries
                rejects the order with the venue's code;
            permanent error -> REJECTED with the venue's code;
        routed -> polled: every execution becomes a fill whose id is the venue's
            ``execution_id`` (``ON CONFLICT DO NOTHING``); a venue rejection rejects
            the order, a venue that stopped working it without a full fill cancels it.
    final, cancelled by the trader -> cancelled at the venue.

The database is the source of truth; the venue call happens between short
transactions, never inside one that holds row locks.

Exactly once
    * A fill is recorded once: its primary key is the venue's execution id, and a
      poll reports every execution again, so a crash between poll and insert is
      healed by the next poll.
    * An order is accepted by the venue once: the venue deduplicates by order id,
      so re-submitting after a crash is harmless.
    * ``routed_at`` is set once (the lifecycle trigger refuses a second time), so
      each order has exactly one EXECUTED "sent to venue" row, written only after
      the venue accepted it.
    * Every state change re-reads the order under its row lock (``FOR UPDATE``)
      and checks it is still in the expected state, so a racing trader cancel or
      another worker never leads to a double transition.

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
    abandoned.** Each pass, a worker looks for such orders (``pg_locks``), takes
    the lease, re-reads the order under its row lock and, if it is still in
    flight, sets ``recovered_at`` (one RECOVERED log row per takeover) and
    carries on from the order's state: re-submit if not routed (the venue
    deduplicates), else poll (fills deduplicate). A RECOVERED row thus means the
    order changed hands while in flight: its previous worker crashed, was
    killed, lost its lease connection or shut down.

    If the lease connection itself breaks, the worker forgets every order it
    owned (another worker may adopt them meanwhile) and re-adopts them, with a
    RECOVERED row, like any other abandoned order. Two workers briefly acting on
    one order is safe by the exactly-once rules above; the leases only keep it
    rare. Lease keys are 31 bits, so two orders can share one: that only delays
    the adoption of an abandoned order until the other order is final.

    The lease connection runs only ``pg_try_advisory_lock``/``pg_advisory_unlock``
    and reads no table.

Orders cancelled while their owner was gone
    The owner of an order cancelled by its trader cancels it at the venue on
    its next pass. For the case where no live worker owns it, every worker
    sweeps recently cancelled approved orders (at startup: the last
    ``CANCEL_SWEEP_LOOKBACK``) and cancels them at the venue (idempotent).
    Executions the venue made before such a cancel cannot be recorded any more
    (the database freezes cancelled orders); they are logged as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, Protocol, runtime_checkable
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.auth.claims import Claims
from app.db.session import Database, DatabaseUnavailable, create_engine
from app.db.urls import async_url
from app.engine.paper import PaperVenue
from app.engine.risk import RiskLimits, check_order
from app.engine.venue import (
    Execution,
    ExecutionReport,
    PermanentVenueError,
    TransientVenueError,
    Venue,
    VenueError,
    VenueOrder,
)
from app.settings import Settings

__all__ = [
    "CANCEL_SWEEP_LOOKBACK",
    "LEASE_NAMESPACE",
    "SERVICE_CLAIMS",
    "Worker",
    "lease_key",
    "run_worker",
]

log = logging.getLogger(__name__)

SERVICE_CLAIMS: Final = Claims(
    role="service_role", sub=None, raw=MappingProxyType({"role": "service_role"}), expires_at=None
)

LEASE_NAMESPACE: Final = 0x6F_65_6E_67
"""First key of the two-key advisory locks ("oeng"), so that the leases cannot collide with
other users of single-key advisory locks in the same database."""

CANCEL_SWEEP_LOOKBACK: Final = timedelta(hours=1)
"""How far back a starting worker looks for cancelled orders to cancel at the venue."""

# Cancellations committed by a transaction that started before the previous sweep carry an
# updated_at before it (now() is the transaction start); the overlap catches them.
_CANCEL_SWEEP_OVERLAP: Final = timedelta(seconds=60)

EXPIRED: Final = "expired"
SENT_TO_VENUE: Final = "sent to venue"
VENUE_UNAVAILABLE: Final = "VENUE_UNAVAILABLE"
"""Recorded when a submit fails with something other than a ``VenueError``."""

_FINAL: Final = frozenset({"FILLED", "REJECTED", "CANCELLED"})
_MAX_BACKOFF_EXPONENT: Final = 20
_MAX_FAILURE_DELAY_SECONDS: Final = 10.0


def lease_key(order_id: UUID) -> int:
    """The second advisory lock key of an order: its first 31 bits (``_LEASE_KEY_SQL``)."""
    return int.from_bytes(order_id.bytes[:4], "big") & 0x7FFF_FFFF


# The same value computed in SQL from orders.id (its text starts with the first 4 bytes in hex).
_LEASE_KEY_SQL: Final = (
    "((('x' || left(replace(o.id::text, '-', ''), 8))::bit(32)::int) & 2147483647)"
)

_COLUMNS: Final = """
    o.id, o.symbol, o.side, o.quantity, o.order_type::text AS order_type, o.price,
    o.status::text AS status, o.filled_quantity, o.retry_attempt, o.approved_at, o.routed_at,
    o.updated_at,
    coalesce(o.expires_at < now(), false) AS expired,
    o.updated_at + make_interval(
        secs => CAST(:retry_base AS double precision)
                * power(2.0, least(o.retry_attempt, :max_exponent))
    ) <= now() AS retry_due
"""

_CLAIM_NEW: Final = text(
    f"""
    SELECT {_COLUMNS} FROM orders o
     WHERE o.status = 'PENDING' AND o.approved_at IS NULL
     ORDER BY o.created_at, o.id
     LIMIT :limit
     FOR UPDATE SKIP LOCKED
    """
)

_LOCK_ONE: Final = text(f"SELECT {_COLUMNS} FROM orders o WHERE o.id = :id FOR UPDATE")

_READ_MANY: Final = text(f"SELECT {_COLUMNS} FROM orders o WHERE o.id = ANY(:ids)")

_FIND_ABANDONED: Final = text(
    f"""
    WITH leased AS (
        SELECT l.objid FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.classid = CAST({LEASE_NAMESPACE} AS oid)
           AND l.database = (SELECT d.oid FROM pg_database d
                              WHERE d.datname = current_database())
    )
    SELECT o.id FROM orders o
     WHERE o.status IN ('PENDING', 'PARTIAL') AND o.approved_at IS NOT NULL
       AND NOT (o.id = ANY(:owned))
       AND NOT EXISTS (
           SELECT 1 FROM leased WHERE leased.objid = CAST({_LEASE_KEY_SQL} AS oid)
       )
     ORDER BY o.updated_at, o.id
     LIMIT :limit
    """
)

_CANCELLED_SINCE: Final = text(
    """
    SELECT o.id, o.updated_at, o.filled_quantity FROM orders o
     WHERE o.status = 'CANCELLED' AND o.approved_at IS NOT NULL AND o.updated_at >= :since
       AND NOT (o.id = ANY(:seen))
     ORDER BY o.updated_at, o.id
     LIMIT :limit
    """
)

_APPROVE: Final = text("UPDATE orders SET approved_at = now() WHERE id = :id")
_ROUTED: Final = text("UPDATE orders SET routed_at = now(), status_reason = :reason WHERE id = :id")
_RETRY: Final = text(
    "UPDATE orders SET retry_attempt = retry_attempt + 1, error_code = :code,"
    " status_reason = :reason WHERE id = :id"
)
RESENT_UNKNOWN: Final = "venue had no record of the order; re-sent the remaining quantity"
_RECOVERED: Final = text(
    "UPDATE orders SET recovered_at = now(), status_reason = :reason WHERE id = :id"
)
_CLOSE: Final = text(
    "UPDATE orders SET status = CAST(:status AS order_status_enum), status_reason = :reason,"
    " error_code = coalesce(:code, error_code), retry_attempt = retry_attempt + :failed"
    " WHERE id = :id RETURNING updated_at"
)
_FILL_IDS: Final = text("SELECT id FROM fills WHERE order_id = :id")
_INSERT_FILL: Final = text(
    """
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission, "timestamp")
    VALUES (:id, :order_id, :quantity, :price, :venue, :commission, :timestamp)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
)


@runtime_checkable
class PriceSource(Protocol):
    """A venue that can quote a reference price (the paper venue can); used by the
    notional check of MARKET orders."""

    def reference_price(self, symbol: str) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class _Order:
    id: UUID
    symbol: str
    side: str
    quantity: int
    order_type: str
    price: Decimal | None
    status: str
    filled_quantity: int
    retry_attempt: int
    approved_at: datetime | None
    routed_at: datetime | None
    updated_at: datetime
    expired: bool
    retry_due: bool

    @classmethod
    def from_row(cls, row: Any) -> _Order:
        return cls(**{field.name: getattr(row, field.name) for field in fields(cls)})

    @property
    def final(self) -> bool:
        return self.status in _FINAL

    @property
    def in_flight(self) -> bool:
        """Approved and not final: the venue may know it, so someone must see it through."""
        return self.approved_at is not None and not self.final

    def venue_order(self) -> VenueOrder:
        return VenueOrder(
            order_id=self.id,
            symbol=self.symbol,
            side=self.side,
            quantity=self.quantity,
            order_type=self.order_type,
            price=self.price,
        )


class _Leases:
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


class Worker:
    """One execution engine; see the module docstring. Not safe for concurrent ``run_once``."""

    def __init__(
        self,
        database: Database,
        venue: Venue,
        settings: Settings,
        worker_id: str,
        *,
        batch_size: int = 100,
        max_in_flight: int = 1000,
        cancel_sweep_seconds: float = 1.0,
    ) -> None:
        """``batch_size``: orders claimed (or adopted) per pass and stage.
        ``max_in_flight``: most orders owned at once; each holds an advisory lock, and those
        share PostgreSQL's lock table (``max_locks_per_transaction`` x connections), so a
        worker at the limit takes no new orders and leaves them to others.
        ``cancel_sweep_seconds``: how often to look for orders cancelled while unowned.
        """
        if batch_size < 1 or max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be at least 1")
        self.database = database
        self.venue = venue
        self.settings = settings
        self.worker_id = worker_id
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.cancel_sweep_seconds = cancel_sweep_seconds
        self._limits = RiskLimits.from_settings(settings)
        self._leases = _Leases(database.engine.url, worker_id)
        self._owned: set[UUID] = set()
        """Orders whose lease this worker holds: it sees them through until they are final."""
        self._backlog = False
        self._last_sweep = -float("inf")
        self._sweep_since: datetime | None = None
        self._venue_cancelled: dict[UUID, datetime] = {}
        """Final orders cancelled at the venue by this process (and their updated_at)."""

    @property
    def owned(self) -> frozenset[UUID]:
        """The orders this worker currently owns (holds the lease of)."""
        return frozenset(self._owned)

    # --- loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; in-flight orders are then left to other workers."""
        log.info("worker %s started", self.worker_id)
        failures = 0
        try:
            while not stop.is_set():
                delay = self.settings.engine_poll_seconds
                try:
                    await self.run_once()
                    failures = 0
                except Exception:
                    # The database is down, or a bug: nothing is lost (the state is in the
                    # database), so back off and try again rather than die.
                    failures += 1
                    delay = min(delay * 2**failures, _MAX_FAILURE_DELAY_SECONDS)
                    log.exception(
                        "worker %s: pass failed (%d in a row); next try in %.1fs",
                        self.worker_id,
                        failures,
                        delay,
                    )
                    self._backlog = False
                if self._backlog:
                    await asyncio.sleep(0)  # more new orders are waiting: no pause
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self.close()
            log.info("worker %s stopped", self.worker_id)

    async def run_once(self) -> int:
        """One pass over the queue; returns the number of actions taken (state changes
        written to the database and cancels sent to the venue)."""
        if await self._leases.ensure() and self._owned:
            log.warning(
                "worker %s lost its leases: %d orders in flight are left to recovery",
                self.worker_id,
                len(self._owned),
            )
            self._owned.clear()
        self._backlog = False
        work = 0
        for stage in (
            self._admit_new,
            self._adopt_abandoned,
            self._advance_owned,
            self._sweep_cancelled_now_and_then,
        ):
            try:
                work += await stage()
            except DatabaseUnavailable:
                raise  # every later stage would fail the same way
            except Exception:
                # One stage failing (a bug, a venue outage) must not stall the others.
                log.exception("worker %s: %s failed", self.worker_id, stage.__name__)
        return work

    async def close(self) -> None:
        """Release every lease (by closing the lease connection); idempotent."""
        self._owned.clear()
        await self._leases.close()

    # --- new orders: risk check, approval ----------------------------------------------------

    async def _admit_new(self) -> int:
        if len(self._owned) >= self.max_in_flight:
            return 0  # at capacity: leave new orders unlocked for other workers
        work = 0
        async with self._transaction() as conn:
            rows = (await conn.execute(_CLAIM_NEW, self._params(limit=self.batch_size))).all()
            orders = [_Order.from_row(row) for row in rows]
            for order in orders:
                try:
                    # A savepoint per order: a failure rolls back this order's changes only.
                    async with conn.begin_nested():
                        work += await self._admit(conn, order)
                except Exception:
                    log.exception("order %s: admission failed; will retry", order.id)
        # A full batch that made progress: there is probably more, so skip the pause.
        self._backlog = len(orders) >= self.batch_size and work > 0
        return work

    async def _admit(self, conn: AsyncConnection, order: _Order) -> int:
        if order.expired:
            await self._close(conn, order, "CANCELLED", EXPIRED, None)
            log.info("order %s: expired before approval", order.id)
            return 1
        rejection = check_order(
            symbol=order.symbol,
            quantity=order.quantity,
            order_type=order.order_type,
            price=order.price,
            limits=self._limits,
            reference_price=self._reference_price(order) if order.order_type == "MARKET" else None,
        )
        if rejection is not None:
            await self._close(conn, order, "REJECTED", rejection.reason, rejection.code)
            log.info("order %s: rejected by risk check: %s", order.id, rejection.code)
            return 1
        # The lease before the approval commits: from then on the order is in flight and a
        # worker without the lease would take it for abandoned.
        # Advisory locks stack, so an order still owned from an approval that did not commit
        # must not be locked a second time (one release would then leave it held).
        if order.id not in self._owned:
            if (
                not self._leases.connected
                or len(self._owned) >= self.max_in_flight
                or not await self._leases.acquire(order.id)
            ):
                return 0
            self._owned.add(order.id)
        await conn.execute(_APPROVE, {"id": order.id})
        log.info("order %s: approved", order.id)
        return 1

    def _reference_price(self, order: _Order) -> Decimal | None:
        if not isinstance(self.venue, PriceSource):
            return None
        try:
            return self.venue.reference_price(order.symbol)
        except Exception:
            # Unknown symbol and the like: the venue itself refuses the order on submit.
            return None

    # --- recovery ------------------------------------------------------------------------------

    async def _adopt_abandoned(self) -> int:
        room = min(self.batch_size, self.max_in_flight - len(self._owned))
        if room <= 0:
            return 0
        async with self._transaction(read_only=True) as conn:
            ids: list[UUID] = list(
                (
                    await conn.execute(_FIND_ABANDONED, {"owned": list(self._owned), "limit": room})
                ).scalars()
            )
        work = 0
        for order_id in ids:
            if not self._leases.connected:
                break  # leases lost mid-pass: the next pass starts over
            try:
                work += await self._adopt(order_id)
            except Exception:
                log.exception("order %s: recovery failed; will retry", order_id)
        return work

    async def _adopt(self, order_id: UUID) -> int:
        if not await self._leases.acquire(order_id):
            return 0  # its owner is alive after all (or shares the lease key)
        adopted = False
        try:
            async with self._transaction() as conn:
                order = await self._lock(conn, order_id)
                recover = order is not None and order.in_flight
                if order is not None and recover:
                    where = "at the venue" if order.routed_at else "in flight"
                    reason = (
                        f"resumed by worker {self.worker_id}: the previous worker stopped"
                        f" while the order was {where}"
                    )
                    await conn.execute(_RECOVERED, {"id": order_id, "reason": reason})
            adopted = recover  # only now is the RECOVERED row committed
        finally:
            # Owned only once the RECOVERED row is committed, so every takeover is logged.
            if adopted:
                self._owned.add(order_id)
            elif self._leases.connected:
                await self._leases.release(order_id)
        if adopted:
            log.warning("order %s: recovered from an interrupted worker", order_id)
            return 1
        return 0

    # --- orders in flight ----------------------------------------------------------------------

    async def _advance_owned(self) -> int:
        if not self._owned:
            return 0
        async with self._transaction(read_only=True) as conn:
            rows = (await conn.execute(_READ_MANY, self._params(ids=list(self._owned)))).all()
        orders = [_Order.from_row(row) for row in rows]
        for missing in self._owned - {order.id for order in orders}:
            await self._disown(missing)
        work = 0
        to_poll: dict[UUID, _Order] = {}
        for order in orders:
            if not self._leases.connected:
                break  # leases lost mid-pass: the next pass starts over
            try:
                work += await self._step(order, to_poll)
            except Exception:
                log.exception("order %s: step failed; will retry", order.id)
        if to_poll and self._leases.connected:
            work += await self._poll(to_poll)
        return work

    async def _step(self, order: _Order, to_poll: dict[UUID, _Order]) -> int:
        if order.final:
            work = 0
            if order.status == "CANCELLED":
                # Cancelled by the trader (or by this worker, after cancelling at the venue).
                work = await self._cancel_at_venue(
                    order.id, order.updated_at, order.filled_quantity
                )
            await self._disown(order.id)
            return work
        if order.approved_at is None:
            # The approval did not commit; the order goes through admission again.
            await self._disown(order.id)
            return 0
        if order.expired:
            return await self._finish_at_venue(order, "CANCELLED", EXPIRED, None)
        if order.routed_at is None:
            if order.retry_attempt and not order.retry_due:
                return 0  # backing off
            return await self._submit(order, to_poll)
        to_poll[order.id] = order
        return 0

    async def _submit(self, order: _Order, to_poll: dict[UUID, _Order]) -> int:
        try:
            await self.venue.submit(order.venue_order())
        except PermanentVenueError as error:
            log.warning("order %s: refused by the venue: %s", order.id, error)
            return await self._close_locked(
                order.id, "REJECTED", error.message or error.code, error.code
            )
        except Exception as error:
            if isinstance(error, VenueError):
                code, reason = error.code, error.message or error.code
                if not isinstance(error, TransientVenueError):
                    log.warning("order %s: unclassified venue error, retrying: %s", order.id, error)
            else:
                # Not the venue's answer but a failure to get one: the order may or may not
                # have arrived, which the retry (idempotent) or the final cancel settles.
                log.exception("order %s: submit failed", order.id)
                code, reason = VENUE_UNAVAILABLE, f"venue call failed: {type(error).__name__}"
            if order.retry_attempt + 1 > self.settings.engine_max_retries:
                log.warning(
                    "order %s: giving up after %d attempts", order.id, order.retry_attempt + 1
                )
                return await self._finish_at_venue(order, "REJECTED", reason, code, failed=1)
            return await self._record_retry(order, code, reason)
        async with self._transaction() as conn:
            current = await self._lock(conn, order.id)
            if current is None or current.status != "PENDING" or current.routed_at is not None:
                # Cancelled meanwhile: the next pass sees it final and cancels at the venue.
                return 0
            await conn.execute(_ROUTED, {"id": order.id, "reason": SENT_TO_VENUE})
        log.info("order %s: sent to venue %s", order.id, self.venue.name)
        to_poll[order.id] = order
        return 1

    async def _record_retry(self, order: _Order, code: str, reason: str) -> int:
        async with self._transaction() as conn:
            current = await self._lock(conn, order.id)
            if current is None or not current.in_flight or current.routed_at is not None:
                return 0
            await conn.execute(_RETRY, {"id": order.id, "code": code, "reason": reason})
        log.warning(
            "order %s: venue attempt %d failed (%s); will retry",
            order.id,
            order.retry_attempt + 1,
            code,
        )
        return 1

    async def _poll(self, orders: dict[UUID, _Order]) -> int:
        try:
            reports = await self.venue.poll(list(orders))
        except Exception:
            log.exception("polling the venue for %d orders failed", len(orders))
            return 0
        by_id = {report.order_id: report for report in reports}
        work = 0
        for order_id, order in orders.items():
            report = by_id.get(order_id)
            if report is None:
                work += await self._resend_unknown(order)
                continue
            try:
                work += await self._apply_report(order, report)
            except Exception:
                log.exception("order %s: recording the venue's report failed", order_id)
        return work

    async def _resend_unknown(self, order: _Order) -> int:
        """A routed order the venue has no record of: send what is left of it again.

        The venue lost it (or it was routed before this venue's state existed, as
        with seeded orders). The order id stays the idempotency key, so a second
        worker doing the same cannot double it; only the unfilled quantity goes.
        """
        remaining = order.quantity - order.filled_quantity
        try:
            await self.venue.submit(dataclasses.replace(order.venue_order(), quantity=remaining))
        except VenueError as error:
            log.warning("order %s: venue had no record and refused a resend: %s", order.id, error)
            if isinstance(error, PermanentVenueError):
                return await self._finish_at_venue(order, "REJECTED", error.message, error.code)
            return 0
        async with self._transaction() as conn:
            current = await self._lock(conn, order.id)
            if current is None or current.final:
                return 0
            await conn.execute(_RECOVERED, {"id": order.id, "reason": RESENT_UNKNOWN})
        log.warning(
            "order %s: venue %s had no record; re-sent %d remaining",
            order.id,
            self.venue.name,
            remaining,
        )
        return 1

    async def _apply_report(self, order: _Order, report: ExecutionReport) -> int:
        reported = sum(execution.quantity for execution in report.executions)
        if reported == order.filled_quantity and not report.done:
            return 0  # nothing new; no transaction
        async with self._transaction() as conn:
            current = await self._lock(conn, order.id)
            if current is None or current.final:
                return 0  # the next pass reads it final and lets it go
            work = await self._insert_fills(conn, order.id, report.executions)
            if work:
                current = await self._lock(conn, order.id)
                assert current is not None
            if current.final:
                outcome = current.status.lower()
            elif report.rejected is not None:
                rejection = report.rejected
                reason = rejection.message or rejection.code
                await self._close(conn, current, "REJECTED", reason, rejection.code)
                outcome, work = f"rejected by the venue ({rejection.code})", work + 1
            elif report.done:
                outcome = EXPIRED if current.expired else "cancelled at the venue"
                await self._close(conn, current, "CANCELLED", outcome, None)
                work += 1
            else:
                return work
        # Final and committed: only now may another worker see the lease free.
        log.info("order %s: %s", order.id, outcome)
        await self._disown(order.id)
        return work

    async def _finish_at_venue(
        self, order: _Order, status: str, reason: str, code: str | None, *, failed: int = 0
    ) -> int:
        """End an order in flight: stop it at the venue first, record what it executed
        meanwhile, then set the final state (unless those executions filled it).

        The venue comes first so that a crash in between leaves an order that is still in
        flight in the database, and the next owner repeats the (idempotent) cancel; the
        other way round, a venue order could keep executing for a final database order.
        """
        await self.venue.cancel(order.id)
        reports = [r for r in await self.venue.poll([order.id]) if r.order_id == order.id]
        report = reports[0] if reports else None
        async with self._transaction() as conn:
            current = await self._lock(conn, order.id)
            if current is None or current.final:
                return 0
            work = 0
            if report is not None and report.executions:
                if current.routed_at is None and current.status == "PENDING":
                    # The venue worked it (an earlier submit got through unnoticed).
                    await conn.execute(_ROUTED, {"id": order.id, "reason": SENT_TO_VENUE})
                    work += 1
                work += await self._insert_fills(conn, order.id, report.executions)
                current = await self._lock(conn, order.id)
                assert current is not None
            if current.final:
                reason = current.status.lower()
            else:
                if report is not None and report.rejected is not None:
                    status, reason = "REJECTED", report.rejected.message or report.rejected.code
                    code = report.rejected.code
                closed_at = await self._close(conn, current, status, reason, code, failed=failed)
                # Already stopped at the venue above: the cancel sweep need not do it again.
                self._venue_cancelled[order.id] = closed_at
                work += 1
        log.info("order %s: %s", order.id, reason)
        await self._disown(order.id)
        return work

    async def _cancel_at_venue(self, order_id: UUID, updated_at: datetime, filled: int) -> int:
        """Stop a cancelled order at the venue, once per process."""
        if order_id in self._venue_cancelled:
            return 0
        await self.venue.cancel(order_id)
        self._venue_cancelled[order_id] = updated_at
        reports = await self.venue.poll([order_id])
        executed = sum(e.quantity for r in reports if r.order_id == order_id for e in r.executions)
        if executed > filled:
            log.error(
                "order %s: the venue executed %d shares before the cancel reached it; the order"
                " is cancelled, so they cannot be recorded",
                order_id,
                executed - filled,
            )
        log.info("order %s: cancelled at the venue", order_id)
        return 1

    async def _sweep_cancelled_now_and_then(self) -> int:
        now = time.monotonic()
        if now - self._last_sweep < self.cancel_sweep_seconds:
            return 0
        self._last_sweep = now
        return await self._sweep_cancelled()

    async def _sweep_cancelled(self) -> int:
        """Cancel at the venue the orders cancelled while no live worker owned them."""
        async with self._transaction(read_only=True) as conn:
            db_now: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
            since = self._sweep_since or db_now - CANCEL_SWEEP_LOOKBACK
            rows = (
                await conn.execute(
                    _CANCELLED_SINCE,
                    {"since": since, "seen": list(self._venue_cancelled), "limit": self.batch_size},
                )
            ).all()
        work = 0
        for row in rows:
            try:
                work += await self._cancel_at_venue(row.id, row.updated_at, row.filled_quantity)
            except Exception:
                log.exception("order %s: cancelling at the venue failed; will retry", row.id)
        if len(rows) < self.batch_size:
            # All caught up: move the window, keeping an overlap for late commits.
            self._sweep_since = db_now - _CANCEL_SWEEP_OVERLAP
            self._venue_cancelled = {
                order_id: at
                for order_id, at in self._venue_cancelled.items()
                if at >= self._sweep_since
            }
        return work

    # --- database helpers -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction as service_role, through the same mechanism as the API's requests."""
        async with self.database.transaction(SERVICE_CLAIMS, read_only=read_only) as tx:
            # One statement at a time by construction here, so the plain connection will do.
            yield tx.conn

    def _params(self, **params: Any) -> dict[str, Any]:
        return {
            "retry_base": self.settings.engine_retry_base_seconds,
            "max_exponent": _MAX_BACKOFF_EXPONENT,
            **params,
        }

    async def _lock(self, conn: AsyncConnection, order_id: UUID) -> _Order | None:
        row = (await conn.execute(_LOCK_ONE, self._params(id=order_id))).first()
        return None if row is None else _Order.from_row(row)

    async def _close_locked(
        self, order_id: UUID, status: str, reason: str, code: str | None
    ) -> int:
        async with self._transaction() as conn:
            current = await self._lock(conn, order_id)
            if current is None or current.final:
                return 0
            await self._close(conn, current, status, reason, code)
        await self._disown(order_id)
        return 1

    @staticmethod
    async def _close(
        conn: AsyncConnection,
        order: _Order,
        status: str,
        reason: str,
        code: str | None,
        *,
        failed: int = 0,
    ) -> datetime:
        """Make a locked, non-final order final; returns its ``updated_at``.

        ``failed``: failed venue attempts to count on the way.
        """
        if status == "REJECTED" and order.status == "PARTIAL":
            # Part of it executed, and the lifecycle only lets a PARTIAL order be cancelled.
            status, reason = "CANCELLED", f"{reason} ({code})" if code else reason
        result = await conn.execute(
            _CLOSE,
            {"id": order.id, "status": status, "reason": reason, "code": code, "failed": failed},
        )
        closed_at: datetime = result.scalar_one()
        return closed_at

    @staticmethod
    async def _insert_fills(
        conn: AsyncConnection, order_id: UUID, executions: Sequence[Execution]
    ) -> int:
        """Record the executions not recorded yet, in the venue's order; returns how many."""
        known = set((await conn.execute(_FILL_IDS, {"id": order_id})).scalars())
        inserted = 0
        for execution in executions:
            if execution.execution_id in known:
                continue
            if execution.order_id != order_id:
                log.error("order %s: venue reported a foreign execution %s", order_id, execution)
                continue
            row = (
                await conn.execute(
                    _INSERT_FILL,
                    {
                        "id": execution.execution_id,
                        "order_id": order_id,
                        "quantity": execution.quantity,
                        "price": execution.price,
                        "venue": execution.venue,
                        "commission": execution.commission,
                        "timestamp": execution.timestamp,
                    },
                )
            ).first()
            inserted += row is not None
        return inserted

    async def _disown(self, order_id: UUID) -> None:
        self._owned.discard(order_id)
        if self._leases.connected:
            await self._leases.release(order_id)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _api_database_url(settings: Settings) -> URL:
    if settings.api_database_url is not None:
        return async_url(settings.api_database_url)
    from app.db import embedded

    server = await asyncio.to_thread(embedded.start, settings.data_dir)
    return async_url(server.url_for("authenticator").render_as_string(hide_password=False))


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    database: Database | None = None,
    venue: Venue | None = None,
    worker_id: str | None = None,
) -> None:
    """Run one worker until ``stop`` is set.

    Builds what is not given: the ``Database`` from ``settings.api_database_url``
    (the ``authenticator`` login; the embedded server when unset) and the paper
    venue from the venue settings; closes only what it built.
    """
    own_database = database is None
    if database is None:
        database = Database(
            create_engine(
                await _api_database_url(settings),
                pool_size=settings.db_pool_size,
                pool_timeout=settings.db_pool_timeout,
                statement_timeout_ms=settings.statement_timeout_ms,
            )
        )
    own_venue = venue is None
    try:
        # The engine must be held to the same row level security as the API.
        await database.check_login_role()
        if venue is None:
            venue = await asyncio.to_thread(PaperVenue.from_settings, settings)
        worker = Worker(database, venue, settings, worker_id or default_worker_id())
        await worker.run(stop)
    finally:
        try:
            if own_venue and venue is not None:
                await venue.close()
        finally:
            if own_database:
                await database.dispose()
