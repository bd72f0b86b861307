"""GraphQL types of the public contract (../shared/contract/schema.graphql)."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import strawberry
from sqlalchemy.engine import RowMapping
from strawberry.types import Info

from app.graphql.context import Context
from app.models.order import ActionEnum, OrderStatusEnum, OrderTypeEnum


@strawberry.enum
class OrderSide(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


# The database's enums, under the contract's names: one list of values, not two.
strawberry.enum(OrderTypeEnum, name="OrderType")
strawberry.enum(OrderStatusEnum, name="OrderStatus")
strawberry.enum(ActionEnum, name="ExecutionAction")
OrderType = OrderTypeEnum
OrderStatus = OrderStatusEnum
ExecutionAction = ActionEnum


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
        return cls(
            id=row["id"],
            order_id=row["order_id"],
            timestamp=row["timestamp"],
            quantity_filled=row["quantity_filled"],
            price_at_fill=row["price_at_fill"],
            venue=row["venue"],
            commission=row["commission"],
        )


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

    @classmethod
    def from_row(cls, row: RowMapping) -> ExecutionLog:
        status = row["status"]
        return cls(
            id=row["id"],
            order_id=row["order_id"],
            trader_id=row["trader_id"],
            action=ExecutionAction(row["action"]),
            status=OrderStatus(status) if status is not None else None,
            timestamp=row["timestamp"],
            reason=row["reason"],
            retry_attempt=row["retry_attempt"],
            error_code=row["error_code"],
        )


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
        description="Limit price for LIMIT, trigger price for STOP, null for MARKET."
    )
    stop_loss: Decimal | None
    take_profit: Decimal | None
    status: OrderStatus
    filled_quantity: int
    average_fill_price: Decimal | None
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
        return cls(
            id=row["id"],
            trader_id=row["trader_id"],
            client_order_id=row["client_order_id"],
            symbol=row["symbol"],
            side=OrderSide(row["side"]),
            quantity=row["quantity"],
            order_type=OrderType(row["order_type"]),
            price=row["price"],
            stop_loss=row["stop_loss"],
            take_profit=row["take_profit"],
            status=OrderStatus(row["status"]),
            filled_quantity=row["filled_quantity"],
            average_fill_price=row["average_fill_price"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            expires_at=row["expires_at"],
        )


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


@strawberry.input
class OrderFilter:
    trader_id: UUID | None = strawberry.field(
        default=None,
        description="Only meaningful for roles that see more than one trader"
        " (service_role, compliance_auditor).",
    )
    status: list[OrderStatus] | None = None
    symbol: str | None = None
    side: OrderSide | None = None


@strawberry.input
class SubmitOrderInput:
    symbol: str
    side: OrderSide
    quantity: int
    order_type: OrderType
    price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    expires_at: datetime | None = None
    client_order_id: str | None = None


@strawberry.input
class RecordFillInput:
    order_id: UUID
    quantity_filled: int
    price_at_fill: Decimal
    venue: str
    commission: Decimal | None = None
    timestamp: datetime | None = None
