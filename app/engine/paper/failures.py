"""Which submits the paper venue refuses: invalid orders, and failures injected on purpose.

In the order checked on submit:

* invalid orders are refused: ``UNKNOWN_SYMBOL`` (checked by the venue against its prices),
  ``INVALID_SIDE``, ``INVALID_ORDER_TYPE``, ``INVALID_QUANTITY``, ``INVALID_PRICE``,
  ``INVALID_STOP_PRICE``, ``INVALID_TIME_IN_FORCE``;
* ``reject_symbols``: symbol -> code, every order for it is refused with that code;
* ``fail_transient_times``: symbol -> n, each order for it fails its first n
  submit attempts with ``VENUE_BUSY``;
* random: with probability ``transient_failure_rate`` a submit fails with
  ``VENUE_BUSY``, with ``permanent_failure_rate`` the order is refused with
  ``VENUE_REJECTED``; the draw is keyed by ``(seed, order_id, attempt number)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from app.engine.draws import unit_draw
from app.engine.paper.prices import CENT
from app.engine.venue import PermanentVenueError, TransientVenueError, VenueError, VenueOrder

__all__ = ["FailureInjection", "invalid"]

_SIDES: Final = frozenset({"BUY", "SELL"})
_ORDER_TYPES: Final = frozenset({"MARKET", "LIMIT", "STOP", "STOP_LIMIT"})
_TIMES_IN_FORCE: Final = frozenset({"DAY", "GTC", "IOC", "FOK"})


def invalid(order: VenueOrder) -> PermanentVenueError | None:
    """Why the order cannot be traded as given (symbol aside), or None."""
    if order.side not in _SIDES:
        return PermanentVenueError("INVALID_SIDE", f"side must be BUY or SELL: {order.side!r}")
    if order.order_type not in _ORDER_TYPES:
        return PermanentVenueError(
            "INVALID_ORDER_TYPE", f"unsupported order type {order.order_type!r}"
        )
    if isinstance(order.quantity, bool) or not isinstance(order.quantity, int):
        return PermanentVenueError("INVALID_QUANTITY", "quantity must be an integer")
    if order.quantity <= 0:
        return PermanentVenueError("INVALID_QUANTITY", "quantity must be positive")
    if order.time_in_force not in _TIMES_IN_FORCE:
        return PermanentVenueError(
            "INVALID_TIME_IN_FORCE", f"unsupported time in force {order.time_in_force!r}"
        )
    if order.time_in_force in ("IOC", "FOK") and order.order_type in ("STOP", "STOP_LIMIT"):
        return PermanentVenueError(
            "INVALID_TIME_IN_FORCE",
            f"a {order.order_type} order waits for its trigger: it cannot be {order.time_in_force}",
        )
    if order.order_type == "STOP_LIMIT":
        if not _is_cents(order.stop_price):
            return PermanentVenueError(
                "INVALID_STOP_PRICE",
                f"a STOP_LIMIT order needs a positive stop price in cents, got {order.stop_price}",
            )
    elif order.stop_price is not None:
        return PermanentVenueError(
            "INVALID_STOP_PRICE", f"a {order.order_type} order takes no stop price"
        )
    price = order.price
    if order.order_type == "MARKET":
        if price is not None:
            return PermanentVenueError("INVALID_PRICE", "a MARKET order takes no price")
        return None
    if not _is_cents(price):
        return PermanentVenueError(
            "INVALID_PRICE",
            f"a {order.order_type} order needs a positive price in cents, got {price}",
        )
    return None


def _is_cents(price: object) -> bool:
    return (
        isinstance(price, Decimal)
        and price.is_finite()
        and price > 0
        and price == price.quantize(CENT)
    )


@dataclass(frozen=True)
class FailureInjection:
    """Failures on purpose, for tests and chaos runs (see the module docstring)."""

    seed: int
    transient_failure_rate: float = 0.0
    permanent_failure_rate: float = 0.0
    fail_transient_times: Mapping[str, int] = field(default_factory=dict)
    reject_symbols: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, rate in (
            ("transient_failure_rate", self.transient_failure_rate),
            ("permanent_failure_rate", self.permanent_failure_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{label} must be within 0..1, got {rate}")
        if self.transient_failure_rate + self.permanent_failure_rate > 1.0:
            raise ValueError("failure rates must not add up to more than 1")
        if any(times < 0 for times in self.fail_transient_times.values()):
            raise ValueError("fail_transient_times must not be negative")

    def refusal(self, order: VenueOrder, attempt: int) -> VenueError | None:
        """The failure the ``attempt``-th submit (1-based) of a valid order meets, or None."""
        if order.symbol in self.reject_symbols:
            return PermanentVenueError(
                self.reject_symbols[order.symbol], f"orders for {order.symbol} are refused"
            )
        if attempt <= self.fail_transient_times.get(order.symbol, 0):
            return TransientVenueError("VENUE_BUSY", f"forced failure, attempt {attempt}")
        draw = unit_draw("submit", self.seed, order.order_id, attempt)
        if draw < self.transient_failure_rate:
            return TransientVenueError("VENUE_BUSY", "the venue is busy, try again later")
        if draw < self.transient_failure_rate + self.permanent_failure_rate:
            return PermanentVenueError("VENUE_REJECTED", "the venue rejected the order")
        return None
