"""SQLAlchemy models of the order tables; migrations are the source of truth and these follow."""

from app.models.order import (
    ActionEnum,
    Base,
    ExecutionLog,
    Fill,
    Order,
    OrderStatusEnum,
    OrderTypeEnum,
)
from app.models.position import CostBasisMethodEnum, MarketPrice, Position, PositionLot

__all__ = [
    "ActionEnum",
    "Base",
    "CostBasisMethodEnum",
    "ExecutionLog",
    "Fill",
    "MarketPrice",
    "Order",
    "OrderStatusEnum",
    "OrderTypeEnum",
    "Position",
    "PositionLot",
]
