"""The orders a worker holds, stepped each pass from the state the database gives them.

    final, cancelled by the trader or expired -> cancelled at the venue, late fills
        recorded (``app.engine.cancel_sweep``), and let go;
    approval not committed -> let go, to go through admission again;
    expiry reached -> cancelled at the venue, executions recorded, EXPIRED
        (``app.engine.time_in_force``, ``Closing.finish_at_venue``);
    not routed -> submitted to the venue (``app.engine.routing``), unless backing off;
    routed -> polled with the others of the pass (``app.engine.execution_reports``).

Which orders a pass steps (all in flight, a rotating batch of the resting ones) is
``app.engine.holdings``'s.
"""

from __future__ import annotations

import logging
from uuid import UUID

from app.db.session import Database
from app.engine import order_rows
from app.engine.cancel_sweep import CancelSweep
from app.engine.closing import Closing
from app.engine.execution_reports import ExecutionReports
from app.engine.holdings import Holdings
from app.engine.leases import Leases
from app.engine.order_rows import OrderRow
from app.engine.routing import Routing
from app.engine.time_in_force import EXPIRED
from app.models.order import OrderStatusEnum as Status
from app.orders import lifecycle

__all__ = ["InFlight"]

log = logging.getLogger(__name__)


class InFlight:
    """One worker's stage for the orders it holds; see the module docstring."""

    def __init__(
        self,
        database: Database,
        *,
        retry_base: float,
        batch_size: int,
        holdings: Holdings,
        leases: Leases,
        cancels: CancelSweep,
        closing: Closing,
        routing: Routing,
        reports: ExecutionReports,
    ) -> None:
        self.database = database
        self.retry_base = retry_base
        self.batch_size = batch_size
        self.holdings = holdings
        self.leases = leases
        self.cancels = cancels
        self.closing = closing
        self.routing = routing
        self.reports = reports

    async def advance(self) -> int:
        """Step every order in flight and the next batch of resting ones."""
        ids = self.holdings.to_step(self.batch_size)
        if not ids:
            return 0
        async with order_rows.transaction(self.database, read_only=True) as tx:
            rows = (
                await tx.conn.execute(
                    order_rows.READ_MANY, order_rows.row_params(self.retry_base, ids=list(ids))
                )
            ).all()
        orders = [OrderRow.from_row(row) for row in rows]
        for missing in ids - {order.id for order in orders}:
            await self.closing.disown(missing)
        work = 0
        to_poll: dict[UUID, OrderRow] = {}
        for order in orders:
            if not self.leases.connected:
                break  # leases lost mid-pass: the next pass starts over
            try:
                work += await self._step(order, to_poll)
            except Exception:
                log.exception("order %s: step failed; will retry", order.id)
        if to_poll and self.leases.connected:
            work += await self.reports.poll(to_poll)
        return work

    async def _step(self, order: OrderRow, to_poll: dict[UUID, OrderRow]) -> int:
        if order.final:
            work = 0
            if order.status in lifecycle.STOPPED:
                # Cancelled by the trader (or by this worker, after cancelling at the venue),
                # or expired: stopped at the venue, late fills recorded.
                work = await self.cancels.cancel_at_venue(
                    order.id, order.updated_at, order.filled_quantity
                )
            await self.closing.disown(order.id)
            return work
        if order.approved_at is None:
            # The approval did not commit; the order goes through admission again.
            await self.closing.disown(order.id)
            return 0
        if order.expiry_reached:
            return await self.closing.finish_at_venue(order, Status.EXPIRED, EXPIRED, None)
        if order.routed_at is None:
            if order.retry_attempt and not order.retry_due:
                return 0  # backing off
            return await self.routing.submit(order, to_poll)
        self.holdings.rests(order.id)
        to_poll[order.id] = order
        return 0
