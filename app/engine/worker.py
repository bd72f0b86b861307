"""The execution engine: moves orders from PENDING to a final state, through the database.

A ``Worker`` polls the ``orders`` table every ``settings.engine_poll_seconds``
and works as ``service_role`` through
``Database.transaction``, exactly like the API: it writes ``orders`` columns
and inserts ``fills`` (the statements are ``app.orders.ledger``'s, the API's own;
``app.engine.order_rows`` reads orders for the engine); the
migration's triggers derive fill state and statuses and write every
``execution_logs`` row. Several workers (processes) may run against one
database at once.

Lifecycle, per order
    new (PENDING, not approved)
        expiry reached -> EXPIRED; else the pre-trade risk check
        (``app.engine.risk``) -> REJECTED with its code, or approved.
        An unconfirmed replacement is settled first (``app.engine.replace``).
    in flight (approved, not final)
        expiry reached -> cancelled at the venue, executions recorded, EXPIRED
            (``app.engine.time_in_force``);
        not routed -> submitted to the venue (idempotent by order id):
            accepted -> ``routed_at`` (EXECUTED "sent to venue");
            transient error -> ``retry_attempt`` + 1 with the venue's code (EXECUTED),
                retried no earlier than ``engine_retry_base_seconds * 2**retry_attempt``
                after ``updated_at``; the failure after ``engine_max_retries`` retries
                rejects the order with the venue's code;
            permanent error -> REJECTED with the venue's code;
        routed -> polled: every execution becomes a fill whose id is the venue's
            ``execution_id`` (``ON CONFLICT DO NOTHING``); a venue rejection rejects
            the order, a venue that stopped working it without a full fill cancels it
            (an IOC or FOK order is done at once: what the venue did not fill is
            cancelled), unless a replacement waits (``app.engine.replace`` settles it).
    final, cancelled by the trader or expired -> cancelled at the venue (late fills
        recorded).

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

Ownership and recovery
    An order in flight is owned by exactly one live worker, which holds its
    advisory-lock lease; an approved, non-final order whose lease is free has been
    abandoned, and any worker adopts it (a RECOVERED row) and carries on from its
    state. The rule and its consequences are set out in ``app.engine.leases``.

Admission capacity
    Of the orders a worker owns, only those not yet accepted by the venue count against
    ``max_in_flight``; orders resting at the venue keep their lease but are stepped in
    rotating batches, so how long a new order waits does not depend on how many rest
    (``app.engine.holdings``).

Orders cancelled while their owner was gone
    See ``app.engine.cancel_sweep``. The process around a worker (database,
    venue, signals) is ``app.engine.run``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Protocol, runtime_checkable
from uuid import UUID

from sqlalchemy import exc as sa_exc

from app import metrics
from app.db import migrations, readiness
from app.db.session import Database, DatabaseUnavailable, Tx
from app.engine import order_rows
from app.engine.cancel_sweep import CancelSweep
from app.engine.holdings import Holdings
from app.engine.leases import FIND_ABANDONED, Leases, lease_key
from app.engine.order_rows import OrderRow, close_order
from app.engine.replace import Replacements
from app.engine.risk import RiskLimits, check_order
from app.engine.time_in_force import EXPIRED, ended_by_venue
from app.engine.venue import (
    Execution,
    ExecutionReport,
    PermanentVenueError,
    TransientVenueError,
    Venue,
    VenueError,
    VenueRejection,
    report_of,
)
from app.models.order import OrderStatusEnum as Status
from app.orders import ledger as writes
from app.orders import lifecycle
from app.orders import limits as order_limits
from app.orders.lifecycle import Change
from app.settings import Settings

__all__ = ["Worker", "lease_key"]

log = logging.getLogger(__name__)

SENT_TO_VENUE: Final = "sent to venue"
VENUE_UNAVAILABLE: Final = "VENUE_UNAVAILABLE"
"""Recorded when a submit fails with something other than a ``VenueError``."""
UNREADABLE_ORDER: Final = "UNREADABLE_ORDER"
"""The error code of an order rejected because a value of its row is out of this engine's
range (``order_rows.UNREADABLE``)."""
RESENT_UNKNOWN: Final = "venue had no record of the order; re-sent the remaining quantity"

_MAX_FAILURE_DELAY_SECONDS: Final = 10.0


@runtime_checkable
class PriceSource(Protocol):
    """A venue that can quote a reference price (the paper venue can); used by the
    notional check of MARKET orders."""

    def reference_price(self, symbol: str) -> Decimal: ...


class DatabaseNotReady(Exception):
    """The database answers but is not at the revision this code expects."""

    def __init__(self, state: readiness.Readiness) -> None:
        super().__init__(state.describe())
        self.state = state


def _database_state(error: Exception) -> readiness.Readiness | None:
    """What a failed pass says of the database; None when it says nothing (a bug)."""
    if isinstance(error, DatabaseNotReady):
        return error.state
    reason = readiness.is_unreachable(error)
    return None if reason is None else readiness.Readiness("unreachable", detail=reason)


@runtime_checkable
class RecordKeeper(Protocol):
    """A venue that knows since when it keeps records (the paper venue does): an order
    routed before then was never known to it, which is no sign of a lost order."""

    records_since: datetime


def _refusal_reason(refusal: VenueError | VenueRejection) -> str:
    """The ``status_reason`` recorded for a venue's refusal: its message, else its code."""
    return refusal.message or refusal.code


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
        ``max_in_flight``: most orders in flight at once, approved but not yet accepted by the
        venue (``app.engine.holdings``: orders resting at the venue do not count); a worker at
        the limit admits no new orders and leaves them to others.
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
        self._leases = Leases(database.engine.url, worker_id)
        self._owned = Holdings(worker_id, max_in_flight)
        """Orders whose lease this worker holds: it sees them through until they are final."""
        self._backlog = False
        self._cancels = CancelSweep(
            database,
            venue,
            retry_base=settings.engine_retry_base_seconds,
            batch_size=batch_size,
            interval_seconds=cancel_sweep_seconds,
        )
        self._replacements = Replacements(
            database, venue, retry_base=settings.engine_retry_base_seconds, batch_size=batch_size
        )
        self._head = migrations.head_revision()
        self._left_before_start: set[UUID] = set()
        self._looked_for_left = False
        """In-flight orders no live worker owned when this one started (see ``_adopt``)."""
        self._database_state = readiness.StateLog(log, f"worker {worker_id}")

    @property
    def owned(self) -> frozenset[UUID]:
        """The orders this worker currently owns (holds the lease of)."""
        return self._owned.owned

    # --- loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; in-flight orders are then left to other workers.

        A failing pass (database unreachable or not migrated, a bug) is retried with
        exponential backoff up to ``_MAX_FAILURE_DELAY_SECONDS``. The database's state is
        logged when it changes, not on every retry; a bug keeps its traceback.
        """
        log.info("worker %s started", self.worker_id)
        failures = 0
        try:
            while not stop.is_set():
                delay = self.settings.engine_poll_seconds
                try:
                    await self.run_once()
                    failures = 0
                    self._database_state.report(readiness.Readiness("ready"))
                except Exception as error:
                    # Nothing is lost (the state is in the database): back off and try again
                    # rather than die.
                    failures += 1
                    delay = min(delay * 2**failures, _MAX_FAILURE_DELAY_SECONDS)
                    metrics.ENGINE_PASS_FAILURES.inc()
                    state = _database_state(error)
                    if state is not None:
                        self._database_state.report(state)
                    else:
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
            self._note_left_before_start,
            self._replacements.settle_waiting,
            self._admit_new,
            self._adopt_abandoned,
            self._advance_owned,
            self._cancels.now_and_then,
        ):
            try:
                work += await stage()
            except DatabaseUnavailable:
                raise  # every later stage would fail the same way
            except sa_exc.DBAPIError:
                # The database refused a statement: if it is not at the revision this code
                # expects (tables missing, say), every stage would fail the same way too.
                state = await readiness.check(self.database.engine, self._head)
                if not state.ready:
                    raise DatabaseNotReady(state) from None
                log.exception("worker %s: %s failed", self.worker_id, stage.__name__)
            except Exception:
                # One stage failing (a bug, a venue outage) must not stall the others.
                log.exception("worker %s: %s failed", self.worker_id, stage.__name__)
        self._owned.report()
        return work

    async def _note_left_before_start(self) -> int:
        """Once, before this worker takes its first lease: every in-flight order without a
        live owner then was left by workers that stopped before this one started."""
        if not self._looked_for_left:
            async with self._transaction(read_only=True) as tx:
                found = await tx.conn.execute(FIND_ABANDONED, {"owned": [], "limit": 1_000_000})
                self._left_before_start = set(found.scalars())
            self._looked_for_left = True
        return 0

    async def close(self) -> None:
        """Release every lease (by closing the lease connection); idempotent."""
        self._owned.clear()
        await self._leases.close()

    # --- new orders: risk check, approval ----------------------------------------------------

    async def _admit_new(self) -> int:
        if not self._owned.admitting():
            return 0  # at capacity: leave new orders unlocked for other workers
        work = 0
        async with self._transaction() as tx:
            rows = (
                await tx.conn.execute(order_rows.CLAIM_NEW, self._params(limit=self.batch_size))
            ).all()
            orders = [OrderRow.from_row(row) for row in rows]
            if orders:
                # Read per batch: a limit the owner changes applies from the next batch on.
                limits = RiskLimits.from_row(
                    (await tx.conn.execute(order_limits.READ)).mappings().first()
                )
            for order in orders:
                try:
                    # A savepoint per order: a failure rolls back this order's changes only.
                    async with tx.conn.begin_nested():
                        work += await self._admit(tx, order, limits)
                except Exception:
                    log.exception("order %s: admission failed; will retry", order.id)
        # A full batch that made progress: there is probably more, so skip the pause.
        self._backlog = len(orders) >= self.batch_size and work > 0
        return work

    async def _admit(self, tx: Tx, order: OrderRow, limits: RiskLimits) -> int:
        if order.unreadable is not None:
            # Every write would read the row back and fail, pass after pass: refuse it once.
            reason = f"the engine cannot represent {order.unreadable}: outside the years 1 to 9999"
            await writes.reject_unreadable(tx, order.id, reason=reason, code=UNREADABLE_ORDER)
            log.warning("order %s: rejected: %s", order.id, reason)
            return 1
        if order.expiry_reached:
            await close_order(tx, order, Status.EXPIRED, EXPIRED, None)
            log.info("order %s: expired before approval", order.id)
            return 1
        rejection = check_order(
            symbol=order.symbol,
            quantity=order.quantity,
            order_type=order.order_type,
            price=order.price,
            limits=limits,
            reference_price=self._reference_price(order) if order.order_type == "MARKET" else None,
        )
        if rejection is not None:
            await close_order(tx, order, Status.REJECTED, rejection.reason, rejection.code)
            log.info("order %s: rejected by risk check: %s", order.id, rejection.code)
            return 1
        # The lease before the approval commits: from then on the order is in flight and a
        # worker without the lease would take it for abandoned.
        # Advisory locks stack, so an order still owned from an approval that did not commit
        # must not be locked a second time (one release would then leave it held).
        if order.id not in self._owned:
            if (
                not self._leases.connected
                or self._owned.room <= 0
                or not await self._leases.acquire(order.id)
            ):
                return 0
            self._owned.add(order.id)
        await writes.approve(tx, order.id)
        log.info("order %s: approved", order.id)
        return 1

    def _reference_price(self, order: OrderRow) -> Decimal | None:
        if not isinstance(self.venue, PriceSource):
            return None
        try:
            return self.venue.reference_price(order.symbol)
        except Exception:
            # Unknown symbol and the like: the venue itself refuses the order on submit.
            return None

    # --- recovery ------------------------------------------------------------------------------

    async def _adopt_abandoned(self) -> int:
        room = min(self.batch_size, self._owned.room)
        if room <= 0:
            return 0
        async with self._transaction(read_only=True) as tx:
            ids: list[UUID] = list(
                (
                    await tx.conn.execute(
                        FIND_ABANDONED, {"owned": list(self._owned.owned), "limit": room}
                    )
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
            async with self._transaction() as tx:
                order = await self._lock(tx, order_id)
                recover = order is not None and order.in_flight
                if order is not None and recover:
                    where = "at the venue" if order.routed_at else "in flight"
                    reason = (
                        f"resumed by worker {self.worker_id}: the previous worker stopped"
                        f" while the order was {where}"
                    )
                    await writes.recover(tx, order_id, reason=reason)
            adopted = recover  # only now is the RECOVERED row committed
        finally:
            # Owned only once the RECOVERED row is committed, so every takeover is logged.
            if adopted:
                self._owned.add(order_id)
            elif self._leases.connected:
                await self._leases.release(order_id)
        if adopted:
            if order_id in self._left_before_start:
                # Left in flight before this worker started (a restart, a deploy, the dev
                # seed): resuming them is a starting worker's routine; the RECOVERED row
                # records the takeover all the same.
                log.info("order %s: resumed (left in flight before this worker started)", order_id)
            else:
                # A worker stopped while this one ran: a peer crashed or lost its connection.
                log.warning("order %s: recovered from an interrupted worker", order_id)
            self._left_before_start.discard(order_id)
            return 1
        return 0

    # --- orders in flight ----------------------------------------------------------------------

    async def _advance_owned(self) -> int:
        # Every order in flight, and the next batch of resting ones (app.engine.holdings).
        ids = self._owned.to_step(self.batch_size)
        if not ids:
            return 0
        async with self._transaction(read_only=True) as tx:
            rows = (await tx.conn.execute(order_rows.READ_MANY, self._params(ids=list(ids)))).all()
        orders = [OrderRow.from_row(row) for row in rows]
        for missing in ids - {order.id for order in orders}:
            await self._disown(missing)
        work = 0
        to_poll: dict[UUID, OrderRow] = {}
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

    async def _step(self, order: OrderRow, to_poll: dict[UUID, OrderRow]) -> int:
        if order.final:
            work = 0
            if order.status in lifecycle.STOPPED:
                # Cancelled by the trader (or by this worker, after cancelling at the venue),
                # or expired: stopped at the venue, late fills recorded.
                work = await self._cancels.cancel_at_venue(
                    order.id, order.updated_at, order.filled_quantity
                )
            await self._disown(order.id)
            return work
        if order.approved_at is None:
            # The approval did not commit; the order goes through admission again.
            await self._disown(order.id)
            return 0
        if order.expiry_reached:
            return await self._finish_at_venue(order, Status.EXPIRED, EXPIRED, None)
        if order.routed_at is None:
            if order.retry_attempt and not order.retry_due:
                return 0  # backing off
            return await self._submit(order, to_poll)
        self._owned.rests(order.id)
        to_poll[order.id] = order
        return 0

    async def _submit(self, order: OrderRow, to_poll: dict[UUID, OrderRow]) -> int:
        try:
            await self.venue.submit(order.venue_order())
        except PermanentVenueError as error:
            log.warning("order %s: refused by the venue: %s", order.id, error)
            return await self._close_locked(
                order.id, Status.REJECTED, _refusal_reason(error), error.code
            )
        except Exception as error:
            if isinstance(error, VenueError):
                code, reason = error.code, _refusal_reason(error)
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
                return await self._finish_at_venue(order, Status.REJECTED, reason, code, failed=1)
            return await self._record_retry(order, code, reason)
        async with self._transaction() as tx:
            current = await self._lock(tx, order.id)
            if current is None or not lifecycle.allows(current.state, Change.ROUTE):
                # Cancelled meanwhile: the next pass sees it final and cancels at the venue.
                return 0
            await writes.route(tx, order.id, reason=SENT_TO_VENUE)
        log.info("order %s: sent to venue %s", order.id, self.venue.name)
        self._owned.rests(order.id)  # accepted: no longer takes admission capacity
        to_poll[order.id] = order
        return 1

    async def _record_retry(self, order: OrderRow, code: str, reason: str) -> int:
        async with self._transaction() as tx:
            current = await self._lock(tx, order.id)
            if current is None or not current.in_flight or current.routed_at is not None:
                return 0
            await writes.retry(tx, order.id, code=code, reason=reason)
        metrics.ENGINE_RETRIES.labels(code).inc()
        log.warning(
            "order %s: venue attempt %d failed (%s); will retry",
            order.id,
            order.retry_attempt + 1,
            code,
        )
        return 1

    async def _poll(self, orders: dict[UUID, OrderRow]) -> int:
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

    async def _resend_unknown(self, order: OrderRow) -> int:
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
                return await self._finish_at_venue(
                    order, Status.REJECTED, _refusal_reason(error), error.code
                )
            return 0
        async with self._transaction() as tx:
            current = await self._lock(tx, order.id)
            if current is None or current.final:
                return 0
            await writes.recover(tx, order.id, reason=RESENT_UNKNOWN)
        if (
            isinstance(self.venue, RecordKeeper)
            and order.routed_at is not None
            and order.routed_at < self.venue.records_since
        ):
            # Routed before this venue existed (the dev seed's orders): nothing was lost.
            log.info(
                "order %s: routed before venue %s kept records; sent the remaining %d to it",
                order.id,
                self.venue.name,
                remaining,
            )
        else:
            log.warning(
                "order %s: venue %s had no record; re-sent %d remaining",
                order.id,
                self.venue.name,
                remaining,
            )
        return 1

    async def _apply_report(self, order: OrderRow, report: ExecutionReport) -> int:
        reported = sum(execution.quantity for execution in report.executions)
        if reported == order.filled_quantity and not report.done:
            return 0  # nothing new; no transaction
        async with self._transaction() as tx:
            current = await self._lock(tx, order.id)
            if current is None or current.final:
                return 0  # the next pass reads it final and lets it go
            current, work = await self._record_fills(tx, current, report.executions)
            if current.final:
                outcome = current.status.lower()
            elif report.rejected is not None:
                rejection = report.rejected
                reason = _refusal_reason(rejection)
                await close_order(tx, current, Status.REJECTED, reason, rejection.code)
                outcome, work = f"rejected by the venue ({rejection.code})", work + 1
            elif report.done and current.replacement_id is not None:
                # Stopped at the venue for its replacement: app.engine.replace settles both.
                return work
            elif report.done:
                status, outcome = ended_by_venue(current)
                await close_order(tx, current, status, outcome, None)
                work += 1
            else:
                return work
        # Final and committed: only now may another worker see the lease free.
        log.info("order %s: %s", order.id, outcome)
        await self._disown(order.id)
        return work

    async def _finish_at_venue(
        self, order: OrderRow, status: Status, reason: str, code: str | None, *, failed: int = 0
    ) -> int:
        """End an order in flight: stop it at the venue first, record what it executed
        meanwhile, then set the final state (unless those executions filled it).

        The venue comes first so that a crash in between leaves an order that is still in
        flight in the database, and the next owner repeats the (idempotent) cancel; the
        other way round, a venue order could keep executing for a final database order.
        """
        await self.venue.cancel(order.id)
        report = await report_of(self.venue, order.id)
        async with self._transaction() as tx:
            current = await self._lock(tx, order.id)
            if current is None or current.final:
                return 0
            work = 0
            if report is not None and report.executions:
                if lifecycle.allows(current.state, Change.ROUTE):
                    # The venue worked it (an earlier submit got through unnoticed).
                    await writes.route(tx, order.id, reason=SENT_TO_VENUE)
                    work += 1
                current, recorded = await self._record_fills(tx, current, report.executions)
                work += recorded
            if current.final:
                reason = current.status.lower()
            else:
                if report is not None and report.rejected is not None:
                    status, reason = Status.REJECTED, _refusal_reason(report.rejected)
                    code = report.rejected.code
                closed_at = await close_order(tx, current, status, reason, code, failed=failed)
                # Already stopped at the venue above: the cancel sweep need not do it again.
                self._cancels.stopped(order.id, closed_at)
                work += 1
        log.info("order %s: %s", order.id, reason)
        await self._disown(order.id)
        return work

    # --- database helpers -------------------------------------------------------------------

    def _transaction(
        self, *, read_only: bool = False
    ) -> contextlib.AbstractAsyncContextManager[Tx]:
        return order_rows.transaction(self.database, read_only=read_only)

    def _params(self, **params: Any) -> dict[str, Any]:
        return order_rows.row_params(self.settings.engine_retry_base_seconds, **params)

    async def _lock(self, tx: Tx, order_id: UUID) -> OrderRow | None:
        return await order_rows.lock(tx, order_id, self.settings.engine_retry_base_seconds)

    async def _close_locked(
        self, order_id: UUID, status: Status, reason: str, code: str | None
    ) -> int:
        async with self._transaction() as tx:
            current = await self._lock(tx, order_id)
            if current is None or current.final:
                return 0
            await close_order(tx, current, status, reason, code)
        await self._disown(order_id)
        return 1

    async def _record_fills(
        self, tx: Tx, order: OrderRow, executions: Sequence[Execution]
    ) -> tuple[OrderRow, int]:
        return await order_rows.record_fills(
            tx, order, executions, self.settings.engine_retry_base_seconds
        )

    async def _disown(self, order_id: UUID) -> None:
        self._owned.discard(order_id)
        if self._leases.connected:
            await self._leases.release(order_id)
