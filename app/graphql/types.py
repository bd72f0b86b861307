"""GraphQL types of the public contract (../shared/contract/schema.graphql).

The entities' annotations mirror the field registry (orders/fields.py), which maps rows onto
them (``from_row``); tests/test_field_registry.py holds the two together. They stay written
out because Strawberry and mypy read them statically, and they carry the descriptions.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import strawberry
from sqlalchemy import DefaultClause
from sqlalchemy.engine import RowMapping
from strawberry.types import Info

from app.graphql.context import Context
from app.models.order import (
    ActionEnum,
    OrderLimitsRow,
    OrderSideEnum,
    OrderStatusEnum,
    OrderTypeEnum,
    TimeInForceEnum,
)
from app.orders import fields, validation

# The database's enums, under the contract's names: one list of values, not two.
strawberry.enum(OrderSideEnum, name="OrderSide")
strawberry.enum(OrderTypeEnum, name="OrderType")
strawberry.enum(OrderStatusEnum, name="OrderStatus")
strawberry.enum(ActionEnum, name="ExecutionAction")
strawberry.enum(TimeInForceEnum, name="TimeInForce", description="How long an order keeps working.")


def _describe_values(enum_class: type[enum.Enum], described: dict[str, str]) -> None:
    """Descriptions of an enum's values, which ``strawberry.enum`` only takes from
    ``strawberry.enum_value`` members: the enums are the database's (app/models), not ours."""
    for value in enum_class.__strawberry_definition__.values:  # type: ignore[attr-defined]
        value.description = described[value.name]


_describe_values(
    TimeInForceEnum,
    {
        "DAY": "Until the close of the trading day it was accepted on; then EXPIRED.",
        "GTC": "Until filled or cancelled (or its expiresAt, when given; then EXPIRED).",
        "IOC": "Fill what can be filled at once; the rest is CANCELLED at once.",
        "FOK": "Fill the whole quantity at once, or nothing: otherwise CANCELLED at once.",
    },
)
OrderSide = OrderSideEnum
OrderType = OrderTypeEnum
OrderStatus = OrderStatusEnum
ExecutionAction = ActionEnum
TimeInForce = TimeInForceEnum


@strawberry.type
class Fill:
    id: UUID
    order_id: UUID
    timestamp: datetime
    quantity_filled: int
    price_at_fill: Decimal
    venue: str
    commission: Decimal

    @classmethod
    def from_row(cls, row: RowMapping) -> Fill:
        return cls(**fields.FILL.from_row(row))


@strawberry.type
class ExecutionLog:
    id: UUID
    order_id: UUID
    trader_id: UUID
    action: ExecutionAction
    status: OrderStatus | None = strawberry.field(
        description="Order status right after the action."
    )
    timestamp: datetime
    reason: str | None
    retry_attempt: int | None
    error_code: str | None
    hash: str = strawberry.field(
        description="Lowercase hex SHA-256 of this row in the audit chain's canonical form."
    )
    prev_hash: str | None = strawberry.field(
        description="The hash of the previous row of the same order's chain; null for the"
        " order's first row."
    )

    @classmethod
    def from_row(cls, row: RowMapping) -> ExecutionLog:
        return cls(**fields.LOG.from_row(row))


@strawberry.type
class Order:
    id: UUID
    trader_id: UUID
    client_order_id: str | None = strawberry.field(
        description="Caller-chosen idempotency key, unique per trader."
    )
    symbol: str
    side: OrderSide
    quantity: int
    order_type: OrderType
    price: Decimal | None = strawberry.field(
        description="Limit price for LIMIT and STOP_LIMIT, trigger price for STOP, null for MARKET."
    )
    stop_price: Decimal | None = strawberry.field(
        description="Trigger price of a STOP_LIMIT order; null otherwise."
    )
    time_in_force: TimeInForce
    replaces_id: UUID | None = strawberry.field(description="The order this one replaced, if any.")
    replaced_by_id: UUID | None = strawberry.field(
        description="The order that replaced this one (status REPLACED), if any."
    )
    stop_loss: Decimal | None
    take_profit: Decimal | None
    status: OrderStatus
    filled_quantity: int
    average_fill_price: Decimal | None = strawberry.field(
        description="The fills' prices weighted by their quantities, rounded to 6 decimals;"
        " written like a price when it is whole cents (10.25, not 10.250000); null unfilled."
    )
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None

    @strawberry.field(description="Oldest first.")
    async def fills(self, info: Info[Context, None]) -> list[Fill]:
        return [Fill.from_row(row) for row in await info.context.fills.load(self.id)]

    @strawberry.field(description="The order's audit trail, oldest first.")
    async def execution_logs(self, info: Info[Context, None]) -> list[ExecutionLog]:
        return [ExecutionLog.from_row(row) for row in await info.context.logs.load(self.id)]

    @classmethod
    def from_row(cls, row: RowMapping) -> Order:
        return cls(**fields.ORDER.from_row(row))


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class OrderEdge:
    cursor: str
    node: Order


@strawberry.type
class OrderConnection:
    edges: list[OrderEdge]
    page_info: PageInfo


@strawberry.type
class ExecutionLogEdge:
    cursor: str
    node: ExecutionLog


@strawberry.type
class ExecutionLogConnection:
    edges: list[ExecutionLogEdge]
    page_info: PageInfo


@strawberry.type(
    description="Who the server thinks is calling: the verified token's subject and the"
    " database role it runs as."
)
class Viewer:
    trader_id: UUID | None
    role: str

    @classmethod
    def from_row(cls, row: RowMapping) -> Viewer:
        return cls(**fields.VIEWER.from_row(row))


# Input rules, as GraphiQL shows them. The bounds come from where they are enforced
# (orders/validation.py, settings.py), so a description cannot drift from the check.
_MONEY = f"Decimal string, greater than 0, at most {validation.MAX_PRICE}, at most 2 decimal places"
_TIMESTAMP = "ISO 8601 with a UTC offset (e.g. 2030-01-01T00:00:00Z)"
_EXPIRES_AT = (
    f"Optional; in the future, {_TIMESTAMP}. Unfilled by then: EXPIRED. Not for IOC or FOK;"
    " for DAY at most the session close (the default)."
)
_TIME_IN_FORCE = (
    "DAY, GTC, IOC or FOK (see TimeInForce); IOC and FOK not for STOP or STOP_LIMIT orders."
)


def _limit(column: str) -> str:
    """A bound from the order limits (orders/limits.py): its column and the migration's default
    (the operator may have changed it)."""
    default = OrderLimitsRow.__table__.c[column].server_default
    shown = default.arg.text if isinstance(default, DefaultClause) else "unset"  # type: ignore[union-attr]
    if shown.isdigit():
        shown = f"{int(shown):,}"
    return f"order_limits.{column} (default {shown})"


@strawberry.input(description="Which orders to list; every field given must match.")
class OrderFilter:
    trader_id: UUID | None = strawberry.field(
        default=None,
        description="Only meaningful for roles that see more than one trader"
        " (service_role, compliance_auditor).",
    )
    status: list[OrderStatus] | None = strawberry.field(
        default=None, description="Any of these statuses."
    )
    symbol: str | None = strawberry.field(
        default=None, description="Exact symbol, same format as SubmitOrderInput.symbol."
    )
    side: OrderSide | None = strawberry.field(default=None, description="Only this side.")


@strawberry.input(
    description="A new order. Which fields an order type takes: MARKET takes no price;"
    " LIMIT and STOP need a price (the limit price; the stop's trigger price); STOP_LIMIT"
    " needs a price (the limit) and a stopPrice (the trigger)."
)
class SubmitOrderInput:
    symbol: str = strawberry.field(
        description="1 to 10 characters of A-Z, 0-9, '.' and '-' (lower case is upper-cased,"
        " surrounding spaces are trimmed), e.g. AAPL, BRK.B."
    )
    side: OrderSide = strawberry.field(description="BUY or SELL.")
    quantity: int = strawberry.field(
        description="Whole shares, 1 to "
        + _limit("max_quantity")
        + "; for LIMIT and STOP orders, quantity x price at most "
        + _limit("max_notional")
        + " (checked here, by the database, and again by the engine before approval)."
    )
    order_type: OrderType = strawberry.field(
        description="MARKET: no price. LIMIT, STOP: price required. STOP_LIMIT: price and"
        " stopPrice required."
    )
    price: Decimal | None = strawberry.field(
        default=None,
        description="LIMIT, STOP and STOP_LIMIT only (required there; refused for MARKET)."
        f" {_MONEY}.",
    )
    stop_loss: Decimal | None = strawberry.field(
        default=None,
        description=f"Optional. {_MONEY}. For a BUY below the price and below takeProfit;"
        " for a SELL above them.",
    )
    take_profit: Decimal | None = strawberry.field(
        default=None,
        description=f"Optional. {_MONEY}. For a BUY above the price and above stopLoss;"
        " for a SELL below them.",
    )
    expires_at: datetime | None = strawberry.field(default=None, description=_EXPIRES_AT)
    client_order_id: str | None = strawberry.field(
        default=None,
        description="Optional idempotency key: 1 to 64 printable ASCII characters, unique per"
        " trader. Submitting the same key with the same content returns the existing order;"
        " with different content it is a CONFLICT.",
    )
    stop_price: Decimal | None = strawberry.field(
        default=None, description=f"Required for STOP_LIMIT, refused otherwise. {_MONEY}."
    )
    time_in_force: TimeInForce | None = strawberry.field(
        default=TimeInForce.GTC, description=f"{_TIME_IN_FORCE} Default GTC; not null."
    )


@strawberry.input(
    description="What a replacement changes; anything left out is copied from the order it"
    " replaces."
)
class ReplaceOrderInput:
    quantity: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="The TOTAL wanted, shares already filled on the replaced order (and the"
        " orders it replaced) included: above what is filled; the new order gets the rest."
        " Left out: the total that leaves exactly the old order's unfilled rest. Same bounds"
        " as SubmitOrderInput.quantity.",
    )
    price: Decimal | None = strawberry.field(
        default=strawberry.UNSET,
        description=f"As in SubmitOrderInput (the order type stays the old order's). {_MONEY}.",
    )
    stop_price: Decimal | None = strawberry.field(
        default=strawberry.UNSET,
        description=f"STOP_LIMIT only, as in SubmitOrderInput. {_MONEY}.",
    )
    time_in_force: TimeInForce | None = strawberry.field(
        default=strawberry.UNSET, description=f"{_TIME_IN_FORCE} May be left out, not null."
    )
    expires_at: datetime | None = strawberry.field(
        default=strawberry.UNSET,
        description=f"{_EXPIRES_AT} Null: none. Left out: the old order's when the time in"
        " force stays the same, else the new time in force's default.",
    )
    client_order_id: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="The new order's idempotency key (never copied), as in SubmitOrderInput:"
        " the same replacement again returns the same new order; different content, CONFLICT.",
    )


@strawberry.input(description="A fill reported by the venue (execution engine only).")
class RecordFillInput:
    order_id: UUID = strawberry.field(description="An approved order that is not final.")
    quantity_filled: int = strawberry.field(
        description="Whole shares, at least 1, at most what is left of the order."
    )
    price_at_fill: Decimal = strawberry.field(description=f"{_MONEY}.")
    venue: str = strawberry.field(
        description=f"1 to {validation.MAX_VENUE_LENGTH} characters (trimmed)."
    )
    commission: Decimal | None = strawberry.field(
        default=None,
        description=f"Optional, default 0. Decimal string, 0 to {validation.MAX_PRICE},"
        " at most 2 decimal places.",
    )
    timestamp: datetime | None = strawberry.field(
        default=None, description=f"Optional, default now; not in the future, {_TIMESTAMP}."
    )
