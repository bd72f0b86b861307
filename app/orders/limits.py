"""The order limits: one row of ``order_limits`` (migration 003), the one definition.

submitOrder checks a new order against them (a clear BAD_USER_INPUT naming the field),
the database's ``orders_check_rules`` trigger refuses the same orders from any other
writer, and the engine's pre-trade check (engine/risk.py) applies them again before
approval, with the venue's price for MARKET orders. The owner changes them with SQL:
``UPDATE order_limits SET max_quantity = 50000``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import RowMapping

READ = text("SELECT max_quantity, max_notional, symbols FROM order_limits")
IN_FORCE = text(
    "SELECT max_quantity, max_notional, symbols, public.session_close(now()) AS session_close"
    " FROM order_limits"
)
"""The limits, and the close a DAY order submitted now ends at (migration 006's
trading_session, at the transaction's now()), in one round trip: what a refusal is phrased
with."""


class LimitsMissing(RuntimeError):
    """order_limits has no row: the database was not migrated to head, or the row was deleted."""


@dataclass(frozen=True, slots=True)
class OrderLimits:
    max_quantity: int
    max_notional: Decimal | None
    """Largest quantity x price of one order; None: no limit."""
    symbols: frozenset[str] = frozenset()
    """Tradable symbols (upper case); empty: every symbol."""

    @classmethod
    def of(
        cls,
        *,
        max_quantity: int,
        max_notional: Decimal | None,
        symbols: Iterable[str] = (),
    ) -> OrderLimits:
        return cls(
            max_quantity=max_quantity,
            max_notional=max_notional,
            symbols=frozenset(symbol.upper() for symbol in symbols),
        )

    @classmethod
    def from_row(cls, row: RowMapping | None) -> OrderLimits:
        if row is None:
            raise LimitsMissing(
                "order_limits has no row; run the migrations (alembic upgrade head)"
            )
        return cls.of(
            max_quantity=row["max_quantity"],
            max_notional=row["max_notional"],
            symbols=row["symbols"] or (),
        )


OPEN = OrderLimits.of(max_quantity=sys.maxsize, max_notional=None)
"""Every limit left open. A limit only ever adds a refusal: an order this lets through may
still break one (the database's trigger then refuses it, and the order is validated again
with the limits in force for the words), and one it refuses breaks a rule anyway."""
