"""How an order's time in force ends it, as the engine records it.

* GTC and DAY orders work until filled, cancelled or their ``expires_at`` (a DAY order's is
  the session close, set by the database: migration 006's ``session_close``). An order
  reaching it, in the database's clock (``OrderRow.expiry_reached``), is stopped at the
  venue first if it may be there, then becomes EXPIRED (its own audit action); executions
  the venue made before the cancel landed are recorded, and later ones still count (late
  fills, ``app.engine.cancel_sweep``).
* IOC and FOK orders are over at once: the venue matches them when it accepts them (the
  paper venue: on the acceptance tick, ``app.engine.paper.matching``) and reports them
  done; what it did not fill is then CANCELLED, with a reason that says so.
"""

from __future__ import annotations

from typing import Final

from app.engine.order_rows import OrderRow
from app.models.order import OrderStatusEnum as Status

__all__ = ["EXPIRED", "UNFILLED_AT_ONCE", "VENUE_CANCELLED", "ended_by_venue"]

EXPIRED: Final = "expired"
"""The ``status_reason`` of an order the engine expires."""
VENUE_CANCELLED: Final = "cancelled at the venue"
UNFILLED_AT_ONCE: Final = {
    "IOC": "IOC: the venue cancelled what it could not fill at once",
    "FOK": "FOK: the venue could not fill the whole quantity at once",
}
"""The reason an IOC/FOK order the venue ended unfilled (or partly filled) is cancelled."""


def ended_by_venue(order: OrderRow) -> tuple[Status, str]:
    """The final status and reason of an open order the venue stopped working."""
    if order.expiry_reached:
        return Status.EXPIRED, EXPIRED
    return Status.CANCELLED, UNFILLED_AT_ONCE.get(order.time_in_force, VENUE_CANCELLED)
