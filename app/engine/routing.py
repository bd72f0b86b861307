"""Routing: submitting an approved order to the venue, and again when the venue lost it.

    accepted -> ``routed_at`` (EXECUTED "sent to venue");
    transient error -> ``retry_attempt`` + 1 with the venue's code (EXECUTED), retried no
        earlier than ``engine_retry_base_seconds * 2**retry_attempt`` after ``updated_at``
        (``OrderRow.retry_due``); the failure after ``engine_max_retries`` retries rejects
        the order with the venue's code;
    permanent error -> REJECTED with the venue's code.

Exactly once
    * An order is accepted by the venue once: the venue deduplicates by order id, so
      re-submitting after a crash (or a resend of what the venue lost, by two workers
      at once) is harmless.
    * ``routed_at`` is set once (the lifecycle trigger refuses a second time), so each
      order has exactly one EXECUTED "sent to venue" row, written only after the venue
      accepted it.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Final, Protocol, runtime_checkable
from uuid import UUID

from app import metrics
from app.db.session import Database
from app.engine import order_rows
from app.engine.closing import SENT_TO_VENUE, Closing, refusal_reason
from app.engine.holdings import Holdings
from app.engine.order_rows import OrderRow
from app.engine.venue import PermanentVenueError, TransientVenueError, Venue, VenueError
from app.models.order import OrderStatusEnum as Status
from app.orders import ledger as writes
from app.orders import lifecycle
from app.orders.lifecycle import Change

__all__ = ["RESENT_UNKNOWN", "VENUE_UNAVAILABLE", "RecordKeeper", "Routing"]

log = logging.getLogger(__name__)

VENUE_UNAVAILABLE: Final = "VENUE_UNAVAILABLE"
"""Recorded when a submit fails with something other than a ``VenueError``."""
RESENT_UNKNOWN: Final = "venue had no record of the order; re-sent the remaining quantity"


@runtime_checkable
class RecordKeeper(Protocol):
    """A venue that knows since when it keeps records (the paper venue does): an order
    routed before then was never known to it, which is no sign of a lost order."""

    records_since: datetime


class Routing:
    """One worker's submissions to the venue; see the module docstring."""

    def __init__(
        self,
        database: Database,
        venue: Venue,
        *,
        retry_base: float,
        max_retries: int,
        holdings: Holdings,
        closing: Closing,
    ) -> None:
        self.database = database
        self.venue = venue
        self.retry_base = retry_base
        self.max_retries = max_retries
        self.holdings = holdings
        self.closing = closing

    async def submit(self, order: OrderRow, to_poll: dict[UUID, OrderRow]) -> int:
        """Submit an approved, unrouted order; once accepted, it goes into ``to_poll``."""
        try:
            await self.venue.submit(order.venue_order())
        except PermanentVenueError as error:
            log.warning("order %s: refused by the venue: %s", order.id, error)
            return await self.closing.close_locked(
                order.id, Status.REJECTED, refusal_reason(error), error.code
            )
        except Exception as error:
            if isinstance(error, VenueError):
                code, reason = error.code, refusal_reason(error)
                if not isinstance(error, TransientVenueError):
                    log.warning("order %s: unclassified venue error, retrying: %s", order.id, error)
            else:
                # Not the venue's answer but a failure to get one: the order may or may not
                # have arrived, which the retry (idempotent) or the final cancel settles.
                log.exception("order %s: submit failed", order.id)
                code, reason = VENUE_UNAVAILABLE, f"venue call failed: {type(error).__name__}"
            if order.retry_attempt + 1 > self.max_retries:
                log.warning(
                    "order %s: giving up after %d attempts", order.id, order.retry_attempt + 1
                )
                return await self.closing.finish_at_venue(
                    order, Status.REJECTED, reason, code, failed=1
                )
            return await self._record_retry(order, code, reason)
        async with order_rows.transaction(self.database) as tx:
            current = await order_rows.lock(tx, order.id, self.retry_base)
            if current is None or not lifecycle.allows(current.state, Change.ROUTE):
                # Cancelled meanwhile: the next pass sees it final and cancels at the venue.
                return 0
            await writes.route(tx, order.id, reason=SENT_TO_VENUE)
        log.info("order %s: sent to venue %s", order.id, self.venue.name)
        self.holdings.rests(order.id)  # accepted: no longer takes admission capacity
        to_poll[order.id] = order
        return 1

    async def _record_retry(self, order: OrderRow, code: str, reason: str) -> int:
        async with order_rows.transaction(self.database) as tx:
            current = await order_rows.lock(tx, order.id, self.retry_base)
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

    async def resend_unknown(self, order: OrderRow) -> int:
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
                return await self.closing.finish_at_venue(
                    order, Status.REJECTED, refusal_reason(error), error.code
                )
            return 0
        async with order_rows.transaction(self.database) as tx:
            current = await order_rows.lock(tx, order.id, self.retry_base)
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
