"""The orders one worker owns, and which of them count against its admission limit.

A worker holds the lease (``app.engine.leases``) of every order it approved until the
order is final: that is what lets another worker tell a crashed owner's orders from a
live one's, and adopt them with a RECOVERED row. But most of those orders need nothing
from their owner but an occasional poll: a LIMIT order priced far from the market rests
at the venue for as long as its trader wants. Counting those against ``max_in_flight``
let one trader's 1,000 resting orders stop admission for everyone (issue 18).

So the owned orders are of two kinds:

* **in flight**: approved, not yet accepted by the venue (a submit is due, outstanding
  or backing off), or adopted and not yet read. Only these count against
  ``max_in_flight``; they are stepped on every pass, and leave this kind within a pass
  or a few once the venue accepts them.
* **resting**: the venue accepted them (``routed_at`` is set) and they are not final.
  They keep their lease (so a crash still hands them over, with a RECOVERED row), but
  they take no admission capacity; each pass steps the next ``batch`` of them, in
  rotation, so the work of a pass, and hence how long a new order waits for admission
  and routing, does not grow with how many orders rest. A resting order is polled,
  expired or let go when its turn comes: with R resting orders and batches of B, every
  R/B passes. A trader's cancel does not wait for that turn: the cancel sweep
  (``app.engine.cancel_sweep``) stops any recently cancelled order at the venue.

What bounds the resting orders is the database: ``order_limits.max_open_orders``, each
trader's cap on open orders (migration 010). Their leases are advisory locks in
PostgreSQL's shared lock table (``max_locks_per_transaction`` x ``max_connections`` slots,
6,400 by default), which the operator sizes for the open orders the cap allows.

When admission stops (in flight at the limit) and when it resumes is logged once each, not
on every pass, and the ``order_api_engine_*`` gauges show the counts (``app.metrics``).
"""

from __future__ import annotations

import itertools
import logging
from uuid import UUID

from app import metrics

__all__ = ["Holdings"]

log = logging.getLogger(__name__)


class Holdings:
    """The orders whose lease one worker holds, split into in flight and resting."""

    def __init__(self, worker_id: str, max_in_flight: int) -> None:
        self.worker_id = worker_id
        self.max_in_flight = max_in_flight
        self._owned: set[UUID] = set()
        self._resting: dict[UUID, None] = {}
        """Owned orders the venue accepted, in the order their turn to be stepped comes."""
        self._saturated = False

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._owned

    def __len__(self) -> int:
        return len(self._owned)

    @property
    def owned(self) -> frozenset[UUID]:
        return frozenset(self._owned)

    @property
    def in_flight(self) -> int:
        """Owned orders that count against ``max_in_flight`` (not resting)."""
        return len(self._owned) - len(self._resting)

    @property
    def room(self) -> int:
        """How many more orders may be taken in flight now."""
        return self.max_in_flight - self.in_flight

    def add(self, order_id: UUID) -> None:
        """Owned from now on, and in flight until seen resting."""
        self._owned.add(order_id)

    def rests(self, order_id: UUID) -> None:
        """The venue accepted this owned order: it rests and no longer counts."""
        if order_id in self._owned and order_id not in self._resting:
            self._resting[order_id] = None

    def discard(self, order_id: UUID) -> None:
        self._owned.discard(order_id)
        self._resting.pop(order_id, None)

    def clear(self) -> None:
        self._owned.clear()
        self._resting.clear()

    def to_step(self, batch: int) -> set[UUID]:
        """The orders to step in this pass: every one in flight, and the next ``batch``
        resting ones, which go to the back of the rotation."""
        turn = list(itertools.islice(self._resting, batch))
        for order_id in turn:
            del self._resting[order_id]
            self._resting[order_id] = None
        return self._owned.difference(self._resting).union(turn)

    def admitting(self) -> bool:
        """Whether there is room to admit; logs when admission stops and when it resumes,
        and sets the gauges."""
        saturated = self.room <= 0
        if saturated and not self._saturated:
            log.warning(
                "worker %s stops admitting: %d orders in flight, its limit (max_in_flight);"
                " new orders wait until some reach the venue, or for another worker",
                self.worker_id,
                self.in_flight,
            )
        elif self._saturated and not saturated:
            log.info(
                "worker %s admits again: %d orders in flight of %d",
                self.worker_id,
                self.in_flight,
                self.max_in_flight,
            )
        self._saturated = saturated
        self.report()
        return not saturated

    def report(self) -> None:
        metrics.ENGINE_IN_FLIGHT.set(self.in_flight)
        metrics.ENGINE_IN_FLIGHT_LIMIT.set(self.max_in_flight)
        metrics.ENGINE_RESTING.set(len(self._resting))
        metrics.ENGINE_ADMISSION_SATURATED.set(1 if self._saturated else 0)
