"""Query.positions and Subscription.positionUpdates: the Position type and its resolvers.

Both read what migration 012 keeps (app/positions/queries.py) as the caller, so row level
security decides what anyone sees: a trader its own positions, whatever ``traderId`` says;
service_role and compliance_auditor those of the trader they name (the database refuses
them without one: BAD_USER_INPUT, field ``traderId``); anon nothing.

positionUpdates rides the order change feed (db/change_feed.py), as orderUpdates does: each
fill writes its order's FILLED audit row, so the orders announced to a subscriber are those
whose positions may have moved. Their positions are re-read in one statement per batch,
under the subscriber's own claims, and a position is sent when more fills have moved it than
when it was last sent (or than when the subscription started): an approval or a cancel
announces the order too, but moves no position, and sends nothing.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from decimal import Decimal
from typing import cast
from uuid import UUID

import strawberry
from sqlalchemy.engine import RowMapping
from strawberry.types import Info

from app import metrics
from app.auth.claims import Claims
from app.db.change_feed import FeedStopped, Missed
from app.db.session import DatabaseUnavailable
from app.graphql import subscriptions
from app.graphql.context import Context
from app.graphql.types import _describe_values
from app.models.position import CostBasisMethodEnum
from app.orders import fields, validation
from app.orders.errors import Unauthenticated
from app.positions import queries

strawberry.enum(
    CostBasisMethodEnum,
    name="CostBasisMethod",
    description="How a position's entry price and realized profit are computed from its fills.",
)
_describe_values(
    CostBasisMethodEnum,
    {
        "FIFO": "Each sell closes the oldest open buy lots first (each buy, the oldest short"
        " lots).",
        "AVERAGE_COST": "Every fill that adds to a position moves one average entry price;"
        " closing quantity is priced at it.",
    },
)
CostBasisMethod = CostBasisMethodEnum

POSITIONS_DESCRIPTION = (
    "The caller's positions, one per symbol with a fill, by symbol. service_role and"
    " compliance_auditor: those of traderId (required for them)."
)
UPDATES_DESCRIPTION = (
    "The caller's position in a symbol (or in every symbol) after each fill that changes it."
)


@strawberry.type(
    description="A trader's holding in one symbol, derived from the fills of its orders."
)
class Position:
    trader_id: UUID
    symbol: str
    quantity: int = strawberry.field(
        description="Shares held: positive long, negative short, 0 once closed (a closed"
        " position keeps its realized P&L)."
    )
    average_entry_price: Decimal | None = strawberry.field(
        description="Entry price of the open quantity by the method (at most 6 decimals,"
        " half-even); null when flat."
    )
    cost_basis: Decimal = strawberry.field(
        description="What the open quantity cost by the method, in cents (half-even):"
        " averageEntryPrice x |quantity| before rounding; 0 when flat."
    )
    realized_pnl: Decimal = strawberry.field(
        description="Profit or loss of all closed quantity by the method, before commissions,"
        " in cents (half-even)."
    )
    commissions: Decimal = strawberry.field(
        description="Sum of the commissions of the symbol's fills."
    )
    market_price: Decimal | None = strawberry.field(
        description="Latest price the execution engine's venue reported for the symbol; null"
        " if none yet."
    )
    market_value: Decimal | None = strawberry.field(
        description="marketPrice x quantity, in cents; null without a market price."
    )
    unrealized_pnl: Decimal | None = strawberry.field(
        description="(marketPrice - averageEntryPrice) x quantity, in cents; null without a"
        " market price."
    )
    updated_at: datetime = strawberry.field(description="Time of the symbol's latest fill.")

    @classmethod
    def from_row(cls, row: RowMapping) -> Position:
        return cls(**fields.POSITION.from_row(row))


async def resolve_positions(
    info: Info[Context, None],
    trader_id: UUID | None = None,
    method: CostBasisMethod | None = CostBasisMethod.FIFO,
) -> list[Position]:
    rows = await queries.positions(
        info.context.tx, trader_id=trader_id, method=method or CostBasisMethod.FIFO
    )
    return [Position.from_row(row) for row in rows]


READ_BATCH = 100
"""Announced orders whose positions one re-read covers at most."""


async def _updates(
    info: Info[Context, None], claims: Claims, symbol: str | None, method: CostBasisMethod
) -> AsyncGenerator[Position, None]:
    context = info.context
    feed = subscriptions._feed(context)
    # Only saves work; the re-read under the subscriber's own claims isolates traders.
    trader_id = claims.sub if claims.role == "authenticated" else None
    with feed.changes.subscribe(trader_id=trader_id) as subscriber:
        # Read once subscribed: a fill committed meanwhile is counted here or announced
        # after, never neither (a query made after subscribing shows it).
        async with feed.database.transaction(claims, read_only=True) as tx:
            sent = await queries.fills_seen(tx, method=method, symbol=symbol)
        while True:
            try:
                event = await subscriber.take(READ_BATCH)
            except FeedStopped:
                return
            if claims.expired(datetime.now(UTC), context.settings.jwt_leeway_seconds):
                raise Unauthenticated("the token expired")
            if isinstance(event, Missed):
                metrics.SUBSCRIPTION_GAPS.labels(event.reason).inc()
                yield cast(
                    Position, subscriptions.UpdatesMissed()
                )  # re-query positions, as orderUpdates
                continue
            order_ids = [change.order_id for change in event]
            try:
                async with feed.database.transaction(claims, read_only=True) as tx:
                    rows = await queries.of_orders(tx, order_ids, method=method, symbol=symbol)
            except DatabaseUnavailable:
                for change in event:
                    subscriber.retry_later(change.order_id, change.tick)
                await subscriptions._until_answering(feed.changes)
                continue
            for row in sorted(rows, key=lambda r: (str(r["trader_id"]), r["symbol"])):
                key = (row["trader_id"], row["symbol"])
                if row["fills"] <= sent.get(key, 0):
                    continue
                sent[key] = row["fills"]
                yield Position.from_row(row)


async def position_updates(
    info: Info[Context, None],
    symbol: str | None = None,
    method: CostBasisMethod | None = CostBasisMethod.FIFO,
) -> AsyncGenerator[Position, None]:
    # A coroutine returning the stream (as orderUpdates): a refusal raised here reaches the
    # client as the protocol's "error" message before the stream starts.
    claims = info.context.claims
    if claims.role == "anon" or claims.expired(
        datetime.now(UTC), info.context.settings.jwt_leeway_seconds
    ):
        raise Unauthenticated("subscriptions need a valid token")
    subscriptions._feed(info.context)
    wanted = validation.normalized(symbol) if symbol is not None else None
    return _updates(info, claims, wanted, method or CostBasisMethod.FIFO)


@strawberry.type
class Subscription(subscriptions.Subscription):
    """orderUpdates (graphql/subscriptions.py) and positionUpdates."""

    position_updates: AsyncGenerator[Position, None] = strawberry.subscription(
        resolver=position_updates, description=UPDATES_DESCRIPTION
    )
