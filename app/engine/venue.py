"""The contract between the execution engine and a trading venue.

The engine only ever talks to a ``Venue``; the paper venue (``app.engine.paper``)
is one implementation and a real broker adapter is another, so adding a broker
never touches the engine.

Delivery model: the engine ``submit``\\ s an order, then ``poll``\\ s for it. A poll
returns *every* execution of the order so far, each with a venue-stable
``execution_id``; the engine records fills keyed by that id, so re-reporting an
execution is harmless and a report lost to a crash is simply read again. The
order id is the idempotency key toward the venue: submitting a known order id
again never creates a second order.

Errors raised by venue calls::

    Exception
    └── VenueError                 code + message; never raised bare
        ├── TransientVenueError    not done, try again later (busy, throttled, timed out)
        └── PermanentVenueError    the order is refused for good (unknown symbol, bad price...)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable
from uuid import UUID

__all__ = [
    "Execution",
    "ExecutionReport",
    "PermanentVenueError",
    "TransientVenueError",
    "Venue",
    "VenueError",
    "VenueOrder",
    "VenueRejection",
]


@dataclass(frozen=True)
class VenueOrder:
    """What the venue needs to work an order.

    ``side`` is ``BUY``/``SELL``; ``order_type`` is ``MARKET``/``LIMIT``/``STOP``/
    ``STOP_LIMIT``; ``price`` is the limit price for LIMIT and STOP_LIMIT, the trigger for
    STOP and None for MARKET; ``stop_price`` is STOP_LIMIT's trigger (None otherwise).
    ``time_in_force``: ``GTC`` and ``DAY`` work until filled or cancelled (the engine
    cancels them at their expiry); ``IOC`` fills what the venue can fill at once and the
    venue cancels the rest at once; ``FOK`` fills the whole quantity at once or nothing
    (then the venue cancels it at once). Either way an IOC/FOK order is done (``poll``)
    right after it was accepted.
    Validation is the venue's job: it answers with ``PermanentVenueError``.
    """

    order_id: UUID
    symbol: str
    side: str
    quantity: int
    order_type: str
    price: Decimal | None
    stop_price: Decimal | None = None
    time_in_force: str = "GTC"


@dataclass(frozen=True)
class Execution:
    """One (possibly partial) fill. ``execution_id`` is stable across reports."""

    execution_id: UUID
    order_id: UUID
    quantity: int
    price: Decimal
    commission: Decimal
    venue: str
    timestamp: datetime
    """Timezone-aware, UTC."""


@dataclass(frozen=True)
class VenueRejection:
    """Why the venue refused an order; ``code`` is machine-readable."""

    code: str
    message: str


@dataclass(frozen=True)
class ExecutionReport:
    """The venue's whole view of one order at poll time.

    ``done`` means the venue will send nothing more for the order: it is fully
    filled, cancelled or rejected.
    """

    order_id: UUID
    executions: tuple[Execution, ...]
    rejected: VenueRejection | None
    done: bool
    market_price: Decimal | None = None
    """The venue's latest price of the order's symbol, when it reports one (the paper venue:
    the current tick's). The engine stores it for positions (migration 012's market_prices)."""


class VenueError(Exception):
    """A venue call failed; ``code`` is machine-readable, ``message`` is for humans."""

    code: str
    message: str

    def __init__(self, code: str, message: str = "") -> None:
        # Both go to Exception.args so that the error survives pickling (process pools).
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


class TransientVenueError(VenueError):
    """The call did not go through now; the same call may succeed later."""


class PermanentVenueError(VenueError):
    """The venue refuses the order for good; retrying gives the same answer."""

    def rejection(self) -> VenueRejection:
        return VenueRejection(code=self.code, message=self.message)


@runtime_checkable
class Venue(Protocol):
    """A place orders are sent to. Every method may be retried safely."""

    name: str
    """Recorded on every execution (``Execution.venue``)."""

    async def submit(self, order: VenueOrder) -> None:
        """Hand the order to the venue.

        Idempotent by ``order.order_id``: a known order id is not accepted a second
        time (and its fills are not reset). Raises ``TransientVenueError`` when the
        order was not taken and the call should be retried, ``PermanentVenueError``
        when the order is refused (and will be again on every re-submit).
        """
        ...

    async def cancel(self, order_id: UUID) -> bool:
        """Stop further executions of the order.

        True when nothing more will execute because of this or an earlier cancel;
        False when the order was already complete (filled or rejected). Idempotent.
        Executions that happened before the cancel are still reported by ``poll``.
        """
        ...

    async def poll(self, order_ids: Sequence[UUID]) -> list[ExecutionReport]:
        """Report on the given orders: one report per order id the venue knows
        (unknown ids are left out), each with ALL executions so far. The venue does
        whatever work is due before answering; the caller needs nothing else.
        """
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...


async def report_of(venue: Venue, order_id: UUID) -> ExecutionReport | None:
    """The venue's report on one order; None when it has no record of it."""
    reports = await venue.poll([order_id])
    return next((report for report in reports if report.order_id == order_id), None)
