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

__all__ = [
    "ActionEnum",
    "Base",
    "ExecutionLog",
    "Fill",
    "Order",
    "OrderStatusEnum",
    "OrderTypeEnum",
]
