"""Pure validation of what callers send, before anything is written.

Each rule raises InvalidInput naming the contract's input field, so the
frontend can put the message next to the right control. The database checks
the same invariants again (constraints, triggers); these give the clear error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from app.models.order import OrderTypeEnum, TimeInForceEnum
from app.orders.errors import InvalidInput
from app.orders.limits import OrderLimits

SYMBOL = re.compile(r"[A-Z0-9.\-]{1,10}")
PRINTABLE = re.compile(r"[\x20-\x7E]{1,64}")
MAX_PRICE = Decimal("99999999.99")  # numeric(10, 2)
CENT = Decimal("0.01")
HORIZON = timedelta(days=3653)
"""How far from now a timestamp a caller sets may lie, either way (ten years): expiresAt
ahead, a fill's timestamp back, the engine's approved/routed/recovered times. Far beyond any
expiry a venue honours (brokers end GTC orders within months to a year), so no honest order
is refused, and every stored timestamp stays some 7,900 years inside Python's datetime
(years 1 to 9999), which every reader of a row decodes to. The database's
public.timestamp_horizon() (migration 009) is the same span, for every writer;
tests/test_input_horizons.py holds the two equal."""
MAX_REASON_LENGTH = 500
MAX_ERROR_CODE_LENGTH = 50
MAX_VENUE_LENGTH = 50


@dataclass(frozen=True, kw_only=True)
class NewOrder:
    symbol: str
    side: str
    quantity: int
    order_type: OrderTypeEnum
    price: Decimal | None
    stop_loss: Decimal | None
    take_profit: Decimal | None
    expires_at: datetime | None
    client_order_id: str | None
    stop_price: Decimal | None
    time_in_force: TimeInForceEnum


@dataclass(frozen=True, kw_only=True)
class NewFill:
    order_id: UUID
    quantity_filled: int
    price_at_fill: Decimal
    venue: str
    commission: Decimal
    timestamp: datetime | None


def money(field: str, value: Decimal | None, *, allow_zero: bool = False) -> Decimal | None:
    """A price as stored, or InvalidInput; checked in the order of the database's
    orders_checked_money (migration 003). Nothing here rounds before the maximum is checked:
    quantize raises InvalidOperation past the context's 28 digits."""
    if value is None:
        return None
    if not value.is_finite():
        raise InvalidInput(field, f"{field} must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "greater than 0"
        raise InvalidInput(field, f"{field} must be {bound}")
    if _decimal_places(value) > 2:
        raise InvalidInput(field, f"{field} may have at most 2 decimal places")
    if value > MAX_PRICE:
        raise InvalidInput(field, f"{field} must be at most {MAX_PRICE}")
    return value.quantize(CENT)


def _decimal_places(value: Decimal) -> int:
    """The places ``value`` needs (trailing zeros do not count), exactly: no context rounds."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    significant = len("".join(map(str, digits)).rstrip("0"))
    if significant == 0:
        return 0
    return max(0, -(exponent + len(digits) - significant))


def aware(field: str, value: datetime | None) -> datetime | None:
    """``value`` in UTC, or InvalidInput: it needs an offset, and a UTC equivalent that
    Python can hold ("9999-12-31T23:59:59-14:00" is in the year 10000 UTC)."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            field, f"{field} needs a UTC offset (ISO 8601, e.g. 2030-01-01T00:00:00Z)"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, beyond_horizon(field)) from None


def beyond_horizon(field: str) -> str:
    return f"{field} must be within {HORIZON.days} days of the current time"


def within_horizon(field: str, value: datetime | None, now: datetime) -> None:
    """The database's public.checked_timestamp (migration 009), for the same words."""
    if value is not None and not now - HORIZON <= value <= now + HORIZON:
        raise InvalidInput(field, beyond_horizon(field))


def bounded_text(field: str, value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    if len(value) > limit:
        raise InvalidInput(field, f"{field} may have at most {limit} characters")
    return value


def normalized(symbol: str) -> str:
    """A symbol as stored: 1 to 10 characters of A-Z, 0-9, '.' and '-' once spaces around it
    are trimmed and a-z upper-cased: exactly the database's ``upper(btrim(symbol))``
    (migration 003), which trims spaces only and, for any character outside ASCII (refused
    by migration 009's orders_check_input before the locale's upper() sees it), is never
    asked. Python's own strip() and upper() would take "aapl\n" and "ß" (as "SS")."""
    value = symbol.strip(" ")
    if not (value.isascii() and SYMBOL.fullmatch(value.upper())):
        raise InvalidInput("symbol", "symbol must be 1 to 10 characters of A-Z, 0-9, '.' and '-'")
    return value.upper()


def new_order(
    *,
    symbol: str,
    side: str,
    quantity: int,
    order_type: OrderTypeEnum,
    price: Decimal | None,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
    expires_at: datetime | None,
    client_order_id: str | None,
    stop_price: Decimal | None,
    time_in_force: TimeInForceEnum | None,
    now: datetime,
    limits: OrderLimits,
    session_close: datetime | None,
) -> NewOrder:
    """The order as it will be stored, or InvalidInput for the first rule it breaks.

    The database's orders_check_rules and orders_check_terms triggers (migrations 003,
    006) apply the same rules to every writer; keep the two in step
    (tests/test_order_rules.py checks each rule through both; tests/test_api_replace.py
    the replacements). ``session_close`` is the close a DAY order ends at, read from the
    database (``public.session_close``) in the caller's transaction; None for the other
    times in force. ``expires_at`` stays None for a DAY order without one: the database
    sets it to that close."""
    if time_in_force is None:  # nullable in the contract, for its default only
        raise InvalidInput("timeInForce", "timeInForce may be left out (GTC), not null")
    normalized_symbol = normalized(symbol)
    if limits.symbols and normalized_symbol not in limits.symbols:
        raise InvalidInput(
            "symbol", f"symbol {normalized_symbol} is not on the list of tradable symbols"
        )
    if not 1 <= quantity <= limits.max_quantity:
        raise InvalidInput("quantity", f"quantity must be between 1 and {limits.max_quantity}")
    if order_type is OrderTypeEnum.MARKET:
        if price is not None:
            raise InvalidInput("price", "a MARKET order takes no price")
    elif price is None:
        raise InvalidInput("price", f"a {order_type.value} order needs a price")
    price = money("price", price)
    stop_price = _checked_stop_price(order_type, stop_price)
    stop_loss = money("stopLoss", stop_loss)
    take_profit = money("takeProfit", take_profit)
    _check_protective_prices(side, price, stop_loss, take_profit)
    if price is not None and limits.max_notional is not None:
        value = price * quantity
        if value > limits.max_notional:
            raise InvalidInput(
                "quantity",
                f"order value {value:.2f} exceeds the maximum of {limits.max_notional:.2f}"
                " per order",
            )
    expires_at = aware("expiresAt", expires_at)
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expiresAt", "expiresAt must be in the future")
    within_horizon("expiresAt", expires_at, now)
    _check_time_in_force(order_type, time_in_force, expires_at, session_close)
    if client_order_id is not None and not PRINTABLE.fullmatch(client_order_id):
        raise InvalidInput(
            "clientOrderId", "clientOrderId must be 1 to 64 printable ASCII characters"
        )
    return NewOrder(
        symbol=normalized_symbol,
        side=side,
        quantity=quantity,
        order_type=order_type,
        price=price,
        stop_loss=stop_loss,
        take_profit=take_profit,
        expires_at=expires_at,
        client_order_id=client_order_id,
        stop_price=stop_price,
        time_in_force=time_in_force,
    )


def _checked_stop_price(order_type: OrderTypeEnum, stop_price: Decimal | None) -> Decimal | None:
    if order_type is OrderTypeEnum.STOP_LIMIT:
        if stop_price is None:
            raise InvalidInput("stopPrice", "a STOP_LIMIT order needs a stopPrice")
    elif stop_price is not None:
        raise InvalidInput(
            "stopPrice", f"stopPrice is for STOP_LIMIT orders only, not {order_type.value}"
        )
    return money("stopPrice", stop_price)


_AT_ONCE = frozenset({TimeInForceEnum.IOC, TimeInForceEnum.FOK})
_TRIGGERED = frozenset({OrderTypeEnum.STOP, OrderTypeEnum.STOP_LIMIT})


def _check_time_in_force(
    order_type: OrderTypeEnum,
    time_in_force: TimeInForceEnum,
    expires_at: datetime | None,
    session_close: datetime | None,
) -> None:
    if time_in_force in _AT_ONCE and order_type in _TRIGGERED:
        raise InvalidInput(
            "timeInForce",
            f"a {order_type.value} order waits for its trigger price:"
            f" it cannot be {time_in_force.value}",
        )
    if time_in_force in _AT_ONCE and expires_at is not None:
        raise InvalidInput(
            "expiresAt", f"an {time_in_force.value} order is over at once: it takes no expiresAt"
        )
    if time_in_force is TimeInForceEnum.DAY:
        assert session_close is not None, "a DAY order is validated against the session close"
        if expires_at is not None and expires_at > session_close:
            raise InvalidInput(
                "expiresAt",
                f"a DAY order ends at the session close ({session_close.isoformat()}):"
                " expiresAt may not be later",
            )


def _check_protective_prices(
    side: str, price: Decimal | None, stop_loss: Decimal | None, take_profit: Decimal | None
) -> None:
    # A stop loss limits the loss: below the entry for a buy, above it for a sell;
    # a take profit sits on the other side.
    buying = side == "BUY"
    if price is not None:
        if stop_loss is not None and (stop_loss >= price if buying else stop_loss <= price):
            where = "below" if buying else "above"
            raise InvalidInput("stopLoss", f"stopLoss must be {where} the price for a {side} order")
        if take_profit is not None and (take_profit <= price if buying else take_profit >= price):
            where = "above" if buying else "below"
            raise InvalidInput(
                "takeProfit", f"takeProfit must be {where} the price for a {side} order"
            )
    if (
        stop_loss is not None
        and take_profit is not None
        and (stop_loss >= take_profit if buying else stop_loss <= take_profit)
    ):
        where = "below" if buying else "above"
        raise InvalidInput("stopLoss", f"stopLoss must be {where} takeProfit for a {side} order")


def new_fill(
    *,
    order_id: UUID,
    quantity_filled: int,
    price_at_fill: Decimal,
    venue: str,
    commission: Decimal | None,
    timestamp: datetime | None,
    now: datetime,
) -> NewFill:
    if quantity_filled < 1:
        raise InvalidInput("quantityFilled", "quantityFilled must be at least 1")
    price = money("priceAtFill", price_at_fill)
    assert price is not None
    venue = venue.strip()
    if not venue or len(venue) > MAX_VENUE_LENGTH:
        raise InvalidInput("venue", f"venue must be 1 to {MAX_VENUE_LENGTH} characters")
    fee = money("commission", commission if commission is not None else Decimal(0), allow_zero=True)
    assert fee is not None
    timestamp = aware("timestamp", timestamp)
    if timestamp is not None and timestamp > now:
        raise InvalidInput("timestamp", "timestamp cannot be in the future")
    within_horizon("timestamp", timestamp, now)
    return NewFill(
        order_id=order_id,
        quantity_filled=quantity_filled,
        price_at_fill=price,
        venue=venue,
        commission=fee,
        timestamp=timestamp,
    )
