"""Admission: new orders claimed, checked and approved, or ended before they reach the venue.

    new (PENDING, not approved)
        unreadable (a value outside Python's range) -> REJECTED, once (``UNREADABLE_ORDER``);
        expiry reached -> EXPIRED;
        else the pre-trade risk check (``app.engine.risk``) -> REJECTED with its code, or
        approved, with its lease taken first: from then on the order is in flight.

Unconfirmed replacements, and orders whose replacement waits, are not claimed: the replace
stage settles them first (``app.engine.replace``). Only orders in flight count against the
worker's admission limit (``app.engine.holdings``); at the limit it claims nothing and
leaves new orders to other workers.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Final, Protocol, runtime_checkable

from app.db.session import Database, Tx
from app.engine import order_rows
from app.engine.holdings import Holdings
from app.engine.leases import Leases
from app.engine.order_rows import OrderRow, close_order
from app.engine.risk import RiskLimits, check_order
from app.engine.time_in_force import EXPIRED
from app.engine.venue import Venue
from app.models.order import OrderStatusEnum as Status
from app.orders import ledger as writes
from app.orders import limits as order_limits

__all__ = ["UNREADABLE_ORDER", "Admission", "PriceSource"]

log = logging.getLogger(__name__)

UNREADABLE_ORDER: Final = "UNREADABLE_ORDER"
"""The error code of an order rejected because a value of its row is out of this engine's
range (``order_rows.UNREADABLE``)."""


@runtime_checkable
class PriceSource(Protocol):
    """A venue that can quote a reference price (the paper venue can); used by the
    notional check of MARKET orders."""

    def reference_price(self, symbol: str) -> Decimal: ...


class Admission:
    """One worker's admission stage; see the module docstring."""

    def __init__(
        self,
        database: Database,
        venue: Venue,
        *,
        retry_base: float,
        batch_size: int,
        holdings: Holdings,
        leases: Leases,
    ) -> None:
        self.database = database
        self.venue = venue
        self.retry_base = retry_base
        self.batch_size = batch_size
        self.holdings = holdings
        self.leases = leases
        self.backlog = False
        """The last batch was full and made progress: more new orders are probably waiting."""

    async def admit_new(self) -> int:
        """Claim a batch of new orders and admit each; returns the orders changed."""
        self.backlog = False
        if not self.holdings.admitting():
            return 0  # at capacity: leave new orders unlocked for other workers
        work = 0
        async with order_rows.transaction(self.database) as tx:
            rows = (
                await tx.conn.execute(
                    order_rows.CLAIM_NEW,
                    order_rows.row_params(self.retry_base, limit=self.batch_size),
                )
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
        self.backlog = len(orders) >= self.batch_size and work > 0
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
        if order.id not in self.holdings:
            if (
                not self.leases.connected
                or self.holdings.room <= 0
                or not await self.leases.acquire(order.id)
            ):
                return 0
            self.holdings.add(order.id)
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
