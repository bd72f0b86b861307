"""Matching, pure: an order's state and the fills its due ticks give, from prices and time.

One tick at a time from the order's next unmatched tick up to ``now`` (at most
``max_catch_up_ticks`` of them: older ticks are skipped, as if the venue had been closed):

* MARKET fills at the tick's reference price.
* LIMIT BUY fills on ticks with price <= limit, LIMIT SELL on price >= limit, at
  the reference price (the limit or better).
* STOP BUY triggers on the first tick with price >= trigger, STOP SELL with
  price <= trigger, and from that tick on fills as MARKET.
* STOP_LIMIT triggers like STOP at its ``stop_price``, and from that tick on fills as
  LIMIT at its ``price``.
* At most ``liquidity`` shares per order per tick, so large orders fill in parts.
* "At once", for IOC and FOK, is one matching pass: the tick the venue accepted the order
  in, at that tick's price and liquidity. IOC fills what that tick gives (at most
  ``liquidity``) and is then cancelled; FOK fills its whole quantity on that tick when
  it executes there and the liquidity covers it, else nothing, and is then cancelled.

Nothing here reads a clock or a file: the same state, ``now`` and terms give the same fills
in every process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Final
from uuid import UUID, uuid5

__all__ = ["AT_ONCE", "Fill", "MatchingTerms", "OrderState", "execution_id_for", "simulate"]

AT_ONCE: Final = frozenset({"IOC", "FOK"})
"""Times in force matched in one pass, on the acceptance tick, then done."""
_STOPS: Final = frozenset({"STOP", "STOP_LIMIT"})


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
    stop_price: Decimal | None
    time_in_force: str
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
    if state.time_in_force in AT_ONCE:
        return _at_once(state, now, terms)
    filled, triggered, seq = state.filled, state.triggered, state.exec_count
    fills: list[Fill] = []
    tick = max(state.next_tick, now - terms.max_catch_up_ticks + 1)
    while tick <= now and filled < state.quantity:
        price = terms.price_at(state.symbol, tick)
        triggered = triggered or _triggers(state, price)
        if (triggered or state.order_type not in _STOPS) and _executes(state, price):
            quantity = min(terms.liquidity, state.quantity - filled)
            filled += quantity
            seq += 1
            fills.append(_fill(state, terms, seq, tick, quantity, price))
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


def _at_once(state: OrderState, now: int, terms: MatchingTerms) -> tuple[OrderState, list[Fill]]:
    """IOC and FOK: the acceptance tick (``next_tick`` as accepted) decides, then done."""
    tick = state.next_tick
    if tick > now:
        return state, []
    price = terms.price_at(state.symbol, tick)
    wanted = state.quantity - state.filled
    quantity = min(terms.liquidity, wanted) if _executes(state, price) else 0
    if state.time_in_force == "FOK" and quantity < wanted:
        quantity = 0  # all or nothing
    fills = [_fill(state, terms, state.exec_count + 1, tick, quantity, price)] if quantity else []
    filled = state.filled + quantity
    after = replace(
        state,
        status="filled" if filled >= state.quantity else "cancelled",
        filled=filled,
        next_tick=tick + 1,
        exec_count=state.exec_count + len(fills),
    )
    return after, fills


def _triggers(state: OrderState, price: Decimal) -> bool:
    """Whether ``price`` triggers a stop order (never true of other orders: they need none)."""
    if state.order_type == "STOP":
        trigger = state.price
    elif state.order_type == "STOP_LIMIT":
        trigger = state.stop_price
    else:
        return False
    assert trigger is not None
    return price >= trigger if state.side == "BUY" else price <= trigger


def _executes(state: OrderState, price: Decimal) -> bool:
    """Whether a triggered order executes at ``price``: at any price but for a limit."""
    if state.order_type not in ("LIMIT", "STOP_LIMIT"):
        return True
    limit = state.price
    assert limit is not None
    return price <= limit if state.side == "BUY" else price >= limit


def _fill(
    state: OrderState, terms: MatchingTerms, seq: int, tick: int, quantity: int, price: Decimal
) -> Fill:
    return Fill(
        seq=seq,
        tick=tick,
        quantity=quantity,
        price=price,
        commission=terms.commission(quantity),
        timestamp=max(terms.tick_start(tick), state.accepted_at),
    )
