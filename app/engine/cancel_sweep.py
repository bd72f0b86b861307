"""Stopping cancelled and expired orders at the venue, including those stopped while unowned.

The owner of an order cancelled by its trader cancels it at the venue on its
next pass (``app.engine.in_flight`` calls ``CancelSweep.cancel_at_venue``). For the case where
no live worker owns it, every worker sweeps recently stopped approved orders
(``lifecycle.STOPPED``: cancelled or expired; at startup: the last
``CANCEL_SWEEP_LOOKBACK``) and cancels them at the venue (idempotent). Executions the
venue made before such a cancel are late fills: the database takes them on a routed
cancelled or expired order (``app.orders.lifecycle``).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

from app.db.session import Database
from app.engine import order_rows
from app.engine.venue import Venue, report_of

__all__ = ["CANCEL_SWEEP_LOOKBACK", "CancelSweep"]

log = logging.getLogger(__name__)

CANCEL_SWEEP_LOOKBACK: Final = timedelta(hours=1)
"""How far back a starting worker looks for cancelled orders to cancel at the venue."""

# Cancellations committed by a transaction that started before the previous sweep carry an
# updated_at before it (now() is the transaction start); the overlap catches them.
_CANCEL_SWEEP_OVERLAP: Final = timedelta(seconds=60)


class CancelSweep:
    """One worker's record of the orders it stopped at the venue, and its sweep."""

    def __init__(
        self,
        database: Database,
        venue: Venue,
        *,
        retry_base: float,
        batch_size: int,
        interval_seconds: float,
    ) -> None:
        self.database = database
        self.venue = venue
        self.retry_base = retry_base
        self.batch_size = batch_size
        self.interval_seconds = interval_seconds
        self._last_sweep = -float("inf")
        self._since: datetime | None = None
        self._venue_cancelled: dict[UUID, datetime] = {}
        """Final orders cancelled at the venue by this process (and their updated_at)."""

    def stopped(self, order_id: UUID, updated_at: datetime) -> None:
        """The worker stopped this order at the venue itself: the sweep need not again."""
        self._venue_cancelled[order_id] = updated_at

    async def cancel_at_venue(self, order_id: UUID, updated_at: datetime, filled: int) -> int:
        """Stop a cancelled or expired order at the venue, once per process."""
        if order_id in self._venue_cancelled:
            return 0
        await self.venue.cancel(order_id)
        self._venue_cancelled[order_id] = updated_at
        report = await report_of(self.venue, order_id)
        executed = sum(e.quantity for e in report.executions) if report is not None else 0
        if report is not None and executed > filled:
            # Executions the venue made before the cancel reached it: the database takes
            # them on a routed, stopped order (the order turns FILLED if they complete it).
            async with order_rows.transaction(self.database) as tx:
                current = await order_rows.lock(tx, order_id, self.retry_base)
                if current is not None:
                    current, late = await order_rows.record_fills(
                        tx, current, report.executions, self.retry_base
                    )
                    log.warning(
                        "order %s: recorded %d late execution(s) made before the cancel"
                        " reached the venue; the order is %s",
                        order_id,
                        late,
                        current.status,
                    )
        log.info("order %s: cancelled at the venue", order_id)
        return 1

    async def now_and_then(self) -> int:
        """``sweep``, at most once every ``interval_seconds``."""
        now = time.monotonic()
        if now - self._last_sweep < self.interval_seconds:
            return 0
        self._last_sweep = now
        return await self.sweep()

    async def sweep(self) -> int:
        """Cancel at the venue the orders stopped while no live worker owned them."""
        async with order_rows.transaction(self.database, read_only=True) as tx:
            db_now: datetime = (await tx.conn.execute(order_rows.NOW)).scalar_one()
            since = self._since or db_now - CANCEL_SWEEP_LOOKBACK
            rows = (
                await tx.conn.execute(
                    order_rows.STOPPED_SINCE,
                    {"since": since, "seen": list(self._venue_cancelled), "limit": self.batch_size},
                )
            ).all()
        work = 0
        for row in rows:
            try:
                work += await self.cancel_at_venue(row.id, row.updated_at, row.filled_quantity)
            except Exception:
                log.exception("order %s: cancelling at the venue failed; will retry", row.id)
        if len(rows) < self.batch_size:
            # All caught up: move the window, keeping an overlap for late commits.
            self._since = db_now - _CANCEL_SWEEP_OVERLAP
            self._venue_cancelled = {
                order_id: at for order_id, at in self._venue_cancelled.items() if at >= self._since
            }
        return work
