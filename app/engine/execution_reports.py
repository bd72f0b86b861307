"""Polling the venue for the orders resting there, and recording what it reports.

Every execution becomes a fill whose id is the venue's ``execution_id``; a venue rejection
rejects the order; a venue that stopped working it without a full fill cancels it (an IOC
or FOK order is done at once: what the venue did not fill is cancelled,
``app.engine.time_in_force``), unless a replacement waits (``app.engine.replace`` settles
both). An order the venue has no record of is sent again (``Routing.resend_unknown``).

Exactly once
    A fill is recorded once: its primary key is the venue's execution id
    (``order_rows.record_fills`` inserts only those not recorded yet), and a poll reports
    every execution again, so a crash between poll and insert is healed by the next poll.
"""

from __future__ import annotations

import logging
from uuid import UUID

from app.db.session import Database
from app.engine import order_rows
from app.engine.closing import Closing, refusal_reason
from app.engine.market_prices import MarketPrices
from app.engine.order_rows import OrderRow, close_order
from app.engine.routing import Routing
from app.engine.time_in_force import ended_by_venue
from app.engine.venue import ExecutionReport, Venue
from app.models.order import OrderStatusEnum as Status

__all__ = ["ExecutionReports"]

log = logging.getLogger(__name__)


class ExecutionReports:
    """One worker's polls of the venue; see the module docstring."""

    def __init__(
        self,
        database: Database,
        venue: Venue,
        *,
        retry_base: float,
        closing: Closing,
        routing: Routing,
    ) -> None:
        self.database = database
        self.venue = venue
        self.retry_base = retry_base
        self.closing = closing
        self.routing = routing
        self.prices = MarketPrices(database)

    async def poll(self, orders: dict[UUID, OrderRow]) -> int:
        """Poll the venue for these routed orders and record what it reports."""
        try:
            reports = await self.venue.poll(list(orders))
        except Exception:
            log.exception("polling the venue for %d orders failed", len(orders))
            return 0
        by_id = {report.order_id: report for report in reports}
        await self.prices.record(
            {
                orders[report.order_id].symbol: report.market_price
                for report in reports
                if report.market_price is not None and report.order_id in orders
            }
        )
        work = 0
        for order_id, order in orders.items():
            report = by_id.get(order_id)
            if report is None:
                work += await self.routing.resend_unknown(order)
                continue
            try:
                work += await self._apply(order, report)
            except Exception:
                log.exception("order %s: recording the venue's report failed", order_id)
        return work

    async def _apply(self, order: OrderRow, report: ExecutionReport) -> int:
        reported = sum(execution.quantity for execution in report.executions)
        if reported == order.filled_quantity and not report.done:
            return 0  # nothing new; no transaction
        async with order_rows.transaction(self.database) as tx:
            current = await order_rows.lock(tx, order.id, self.retry_base)
            if current is None or current.final:
                return 0  # the next pass reads it final and lets it go
            current, work = await order_rows.record_fills(
                tx, current, report.executions, self.retry_base
            )
            if current.final:
                outcome = current.status.lower()
            elif report.rejected is not None:
                rejection = report.rejected
                reason = refusal_reason(rejection)
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
        await self.closing.disown(order.id)
        return work
