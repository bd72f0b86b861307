"""Matching, pure: an order's state and the fills its due ticks give, from prices and time.

One tick at a time from the order's next unmatched tick up to ``now`` (at most
``max_catch_up_ticks`` of them: older ticks are skipped, as if the venue had been closed):

* MARKET fills at the tick's reference price.
* LIMIT BUY fills on ticks with price <= limit, LIMIT SELL on price >= limit, at
  the reference price (the limit or better).
* STOP BUY triggers on the first tick with price >= trigger, STOP SELL with
  price <= trigger, and from that tick on fills as MARKET.
* At most ``liquidity`` shares per order per tick, so large orders fill in parts.

Nothing here reads a clock or a file: the same state, ``now`` and terms give the same fills
in every process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from uuid import UUID, uuid5

__all__ = ["Fill", "MatchingTerms", "OrderState", "execution_id_for", "simulate"]


def execution_id_for(order_id: UUID, seq: int) -> UUID:
    """The id of an order's ``seq``-th execution (1-based), the same in every process."""
    return uuid5(order_id, f"execution:{seq}")


@dataclass(frozen=True)
class OrderState:
    """An open order as the venue stores it (storage.py reads and writes these)."""

    order_id: UUID
    symbol: str
    side: str
    quantity: int
    order_type: str
    price: Decimal | None
    status: str
    filled: int
    triggered: bool
    next_tick: int
    exec_count: int
    accepted_at: datetime


@dataclass(frozen=True)
class Fill:
    seq: int
    tick: int
    quantity: int
    price: Decimal
    commission: Decimal
    timestamp: datetime


@dataclass(frozen=True)
class MatchingTerms:
    """What a venue's matching depends on besides the order (the same in every process)."""

    price_at: Callable[[str, int], Decimal]
    """The reference price of a symbol at a tick."""
    tick_start: Callable[[int], datetime]
    commission: Callable[[int], Decimal]
    """Commission of one execution of that many shares."""
    liquidity: int
    max_catch_up_ticks: int


def simulate(state: OrderState, now: int, terms: MatchingTerms) -> tuple[OrderState, list[Fill]]:
    """The order's state and new fills after matching its ticks up to ``now``."""
    filled, triggered, seq = state.filled, state.triggered, state.exec_count
    fills: list[Fill] = []
    tick = max(state.next_tick, now - terms.max_catch_up_ticks + 1)
    limit = state.price
    buying = state.side == "BUY"
    while tick <= now and filled < state.quantity:
        price = terms.price_at(state.symbol, tick)
        if state.order_type == "MARKET":
            executes = True
        elif state.order_type == "LIMIT":
            assert limit is not None
            executes = price <= limit if buying else price >= limit
        else:
            assert limit is not None
            triggered = triggered or (price >= limit if buying else price <= limit)
            executes = triggered
        if executes:
            quantity = min(terms.liquidity, state.quantity - filled)
            filled += quantity
            seq += 1
            fills.append(
                Fill(
                    seq=seq,
                    tick=tick,
                    quantity=quantity,
                    price=price,
                    commission=terms.commission(quantity),
                    timestamp=max(terms.tick_start(tick), state.accepted_at),
                )
            )
        tick += 1
    after = replace(
        state,
        status="filled" if filled >= state.quantity else "open",
        filled=filled,
        triggered=triggered,
        next_tick=max(tick, state.next_tick),
        exec_count=seq,
    )
    return after, fills
