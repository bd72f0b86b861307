"""Pre-trade risk checks: pure functions of an order, the limits and a reference price.

The limits are the database's (orders/limits.py), which submitOrder and the database
already applied when the order was written; the engine applies them again because they
may have been tightened since, and because only it knows a MARKET order's price.
The engine runs them once per order, before approving it; an order that fails
is rejected with the rejection's ``code`` (``orders.error_code``) and
``reason`` (``orders.status_reason``) and never reaches a venue.

Checks, in this order (the first failure wins, so the code names the most
basic problem):

* ``RISK_SYMBOL_NOT_ALLOWED``: the symbol is not on the allow-list
  (``order_limits.symbols``; empty allows every symbol);
* ``RISK_MAX_QUANTITY``: more shares than ``order_limits.max_quantity``;
* ``RISK_MAX_NOTIONAL``: quantity x price above ``order_limits.max_notional``.
  LIMIT orders use their limit and STOP orders their trigger (the price they
  start executing at); MARKET orders use the venue's reference price when the
  venue offers one, and otherwise skip this check rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.orders.limits import OrderLimits

RiskLimits = OrderLimits
"""The limits of orders/limits.py: the engine applies the same ones as submitOrder."""

__all__ = [
    "RISK_MAX_NOTIONAL",
    "RISK_MAX_QUANTITY",
    "RISK_SYMBOL_NOT_ALLOWED",
    "RiskLimits",
    "RiskRejection",
    "check_order",
]

RISK_SYMBOL_NOT_ALLOWED = "RISK_SYMBOL_NOT_ALLOWED"
RISK_MAX_QUANTITY = "RISK_MAX_QUANTITY"
RISK_MAX_NOTIONAL = "RISK_MAX_NOTIONAL"


@dataclass(frozen=True, slots=True)
class RiskRejection:
    code: str
    """Machine-readable, stored in ``orders.error_code`` (at most 50 characters)."""
    reason: str
    """For the trader, stored in ``orders.status_reason`` and the REJECTED log row."""


def check_order(
    *,
    symbol: str,
    quantity: int,
    order_type: str,
    price: Decimal | None,
    limits: RiskLimits,
    reference_price: Decimal | None = None,
) -> RiskRejection | None:
    """None when the order may be approved, else why it must be rejected.

    ``reference_price`` is only used for MARKET orders (they carry no price).
    """
    if limits.symbols and symbol.upper() not in limits.symbols:
        return RiskRejection(
            RISK_SYMBOL_NOT_ALLOWED, f"{symbol} is not on the list of tradable symbols"
        )
    if quantity > limits.max_quantity:
        return RiskRejection(
            RISK_MAX_QUANTITY,
            f"quantity {quantity} exceeds the maximum of {limits.max_quantity} per order",
        )
    unit_price = reference_price if order_type == "MARKET" else price
    if unit_price is not None and limits.max_notional is not None:
        notional = unit_price * quantity
        if notional > limits.max_notional:
            basis = "at the current market price" if order_type == "MARKET" else f"at {unit_price}"
            return RiskRejection(
                RISK_MAX_NOTIONAL,
                f"order value {notional:.2f} {basis} exceeds the maximum of "
                f"{limits.max_notional:.2f} per order",
            )
    return None
