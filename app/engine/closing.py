"""Ending an order a worker holds: stopped at the venue first where it may work there, made
final in the database, and let go (its lease released).

Every stage of the worker that ends an order in flight (``app.engine.in_flight``: an expiry;
``app.engine.routing``: a refusal, retries used up; ``app.engine.execution_reports``: a
venue that stopped working it) ends it here, so the order of those three steps, which is
what makes a crash in between harmless, is written once.
"""

from __future__ import annotations

import logging
from typing import Final
from uuid import UUID

from app.db.session import Database
from app.engine import order_rows
from app.engine.cancel_sweep import CancelSweep
from app.engine.holdings import Holdings
from app.engine.leases import Leases
from app.engine.order_rows import OrderRow, close_order
from app.engine.venue import Venue, VenueError, VenueRejection, report_of
from app.models.order import OrderStatusEnum as Status
from app.orders import ledger as writes
from app.orders import lifecycle
from app.orders.lifecycle import Change

__all__ = ["SENT_TO_VENUE", "Closing", "refusal_reason"]

log = logging.getLogger(__name__)

SENT_TO_VENUE: Final = "sent to venue"
"""The reason of an order's one EXECUTED row for its routing (``app.engine.routing``)."""


def refusal_reason(refusal: VenueError | VenueRejection) -> str:
    """The ``status_reason`` recorded for a venue's refusal: its message, else its code."""
    return refusal.message or refusal.code


class Closing:
    """How one worker ends the orders it holds; see the module docstring."""

    def __init__(
        self,
        database: Database,
        venue: Venue,
        *,
        retry_base: float,
        holdings: Holdings,
        leases: Leases,
        cancels: CancelSweep,
    ) -> None:
        self.database = database
        self.venue = venue
        self.retry_base = retry_base
        self.holdings = holdings
        self.leases = leases
        self.cancels = cancels

    async def disown(self, order_id: UUID) -> None:
        """Let the order go: no longer held, its lease free for any worker."""
        self.holdings.discard(order_id)
        if self.leases.connected:
            await self.leases.release(order_id)

    async def close_locked(
        self, order_id: UUID, status: Status, reason: str, code: str | None
    ) -> int:
        """Make the order final under its row lock, unless it already is, and let it go."""
        async with order_rows.transaction(self.database) as tx:
            current = await order_rows.lock(tx, order_id, self.retry_base)
            if current is None or current.final:
                return 0
            await close_order(tx, current, status, reason, code)
        await self.disown(order_id)
        return 1

    async def finish_at_venue(
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
        async with order_rows.transaction(self.database) as tx:
            current = await order_rows.lock(tx, order.id, self.retry_base)
            if current is None or current.final:
                return 0
            work = 0
            if report is not None and report.executions:
                if lifecycle.allows(current.state, Change.ROUTE):
                    # The venue worked it (an earlier submit got through unnoticed).
                    await writes.route(tx, order.id, reason=SENT_TO_VENUE)
                    work += 1
                current, recorded = await order_rows.record_fills(
                    tx, current, report.executions, self.retry_base
                )
                work += recorded
            if current.final:
                reason = current.status.lower()
            else:
                if report is not None and report.rejected is not None:
                    status, reason = Status.REJECTED, refusal_reason(report.rejected)
                    code = report.rejected.code
                closed_at = await close_order(tx, current, status, reason, code, failed=failed)
                # Already stopped at the venue above: the cancel sweep need not do it again.
                self.cancels.stopped(order.id, closed_at)
                work += 1
        log.info("order %s: %s", order.id, reason)
        await self.disown(order.id)
        return work
