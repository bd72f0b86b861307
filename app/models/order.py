"""Typed models of orders, fills and execution_logs, as the migrations create them.

tests/test_order_models.py proves with alembic's autogenerate that these and the
migrated database agree. Policies, triggers and grants live only in the
migration: they are the database's business, not the ORM's.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType


class Base(DeclarativeBase):
    pass


class OrderSideEnum(enum.StrEnum):
    """Text with a check constraint in the database (ck_orders_side), an enum for the API."""

    BUY = "BUY"
    SELL = "SELL"


class OrderTypeEnum(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"


class OrderStatusEnum(enum.StrEnum):
    PENDING = "PENDING"
    FILLED = "FILLED"
    PARTIAL = "PARTIAL"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    REPLACED = "REPLACED"


class TimeInForceEnum(enum.StrEnum):
    """Migration 006. (Its new labels of the three enums above are served with the API in
    wave 2 of issue 13: the GraphQL enums are these classes.)"""

    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class ActionEnum(enum.StrEnum):
    SUBMITTED = "SUBMITTED"
    APPROVED = "APPROVED"
    EXECUTED = "EXECUTED"
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    RECOVERED = "RECOVERED"
    EXPIRED = "EXPIRED"
    REPLACED = "REPLACED"


def _pg_enum(enum_cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        enum_cls,
        name=name,
        create_type=False,
        values_callable=lambda members: [m.value for m in members],
    )


ORDER_TYPE = _pg_enum(OrderTypeEnum, "order_type_enum")
ORDER_STATUS = _pg_enum(OrderStatusEnum, "order_status_enum")
ACTION = _pg_enum(ActionEnum, "action_enum")
TIME_IN_FORCE = _pg_enum(TimeInForceEnum, "time_in_force_enum")
TIMESTAMPTZ = DateTime(timezone=True)
PRICE = Numeric(10, 2)


class _Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id, which SQLAlchemy does not know."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


XID8 = _Xid8()
# Reflection (alembic's comparison in the tests) names the same type.
postgresql_base.ischema_names["xid8"] = _Xid8
ORDER_PRICE = Numeric()


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("trader_id", "client_order_id", name="uq_orders_trader_client_order_id"),
        CheckConstraint("side IN ('BUY', 'SELL')", name="ck_orders_side"),
        CheckConstraint("symbol ~ '^[A-Z0-9.-]{1,10}$'", name="ck_orders_symbol"),
        CheckConstraint(
            "client_order_id ~ '^[\\x20-\\x7E]{1,64}$'", name="ck_orders_client_order_id"
        ),
        CheckConstraint("quantity > 0", name="ck_orders_quantity_positive"),
        CheckConstraint("price > 0", name="ck_orders_price_positive"),
        CheckConstraint(
            "(order_type = 'MARKET') = (price IS NULL)", name="ck_orders_price_by_type"
        ),
        CheckConstraint("stop_loss > 0", name="ck_orders_stop_loss_positive"),
        CheckConstraint("take_profit > 0", name="ck_orders_take_profit_positive"),
        CheckConstraint(
            "filled_quantity >= 0 AND filled_quantity <= quantity",
            name="ck_orders_filled_quantity_range",
        ),
        CheckConstraint("average_fill_price > 0", name="ck_orders_average_fill_price_positive"),
        CheckConstraint(
            "(filled_quantity = 0) = (average_fill_price IS NULL)",
            name="ck_orders_average_fill_price_with_fills",
        ),
        CheckConstraint(
            "(status = 'FILLED') = (filled_quantity = quantity)"
            " AND (status <> 'PENDING' OR filled_quantity = 0)"
            " AND (status <> 'PARTIAL' OR filled_quantity > 0)",
            name="ck_orders_status_matches_fills",
        ),
        CheckConstraint("retry_attempt >= 0", name="ck_orders_retry_attempt"),
        CheckConstraint("expires_at > created_at", name="ck_orders_expires_after_creation"),
        # Migration 003: prices as the API takes them, and what a cancel may write.
        CheckConstraint(
            "price <= 99999999.99 AND stop_loss <= 99999999.99 AND take_profit <= 99999999.99",
            name="ck_orders_prices_in_range",
        ),
        CheckConstraint(
            "scale(price) <= 2 AND scale(stop_loss) <= 2 AND scale(take_profit) <= 2",
            name="ck_orders_prices_cents",
        ),
        CheckConstraint("char_length(status_reason) <= 500", name="ck_orders_status_reason_length"),
        # Migration 006: stop-limit, time in force and replacement links.
        CheckConstraint(
            "(order_type::text = 'STOP_LIMIT') = (stop_price IS NOT NULL)",
            name="ck_orders_stop_price_by_type",
        ),
        CheckConstraint(
            "stop_price > 0 AND stop_price <= 99999999.99 AND scale(stop_price) <= 2",
            name="ck_orders_stop_price_money",
        ),
        CheckConstraint(
            "time_in_force NOT IN ('IOC', 'FOK') OR order_type::text NOT IN ('STOP', 'STOP_LIMIT')",
            name="ck_orders_time_in_force_by_type",
        ),
        CheckConstraint(
            "time_in_force NOT IN ('IOC', 'FOK') OR expires_at IS NULL",
            name="ck_orders_time_in_force_expiry",
        ),
        CheckConstraint("replaces_id <> id", name="ck_orders_replaces_another"),
        CheckConstraint("replaced_by_id <> id", name="ck_orders_replaced_by_another"),
        CheckConstraint(
            "(status::text = 'REPLACED') = (replaced_by_id IS NOT NULL)",
            name="ck_orders_replaced_status",
        ),
        Index("idx_orders_trader_created", "trader_id", text("created_at DESC")),
        Index("idx_orders_status", "status"),
        Index("idx_orders_trader_status", "trader_id", "status"),
        Index(
            "uq_orders_pending_replacement",
            "replaces_id",
            unique=True,
            postgresql_where=text("status = 'PENDING'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    trader_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    client_order_id: Mapped[str | None] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(10))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[int] = mapped_column(Integer)
    order_type: Mapped[OrderTypeEnum] = mapped_column(ORDER_TYPE)
    # Plain numeric since migration 003, so that a third decimal reaches its check.
    price: Mapped[Decimal | None] = mapped_column(ORDER_PRICE)
    stop_loss: Mapped[Decimal | None] = mapped_column(ORDER_PRICE)
    take_profit: Mapped[Decimal | None] = mapped_column(ORDER_PRICE)
    status: Mapped[OrderStatusEnum] = mapped_column(ORDER_STATUS, server_default="PENDING")
    filled_quantity: Mapped[int] = mapped_column(Integer, server_default="0")
    average_fill_price: Mapped[Decimal | None] = mapped_column(Numeric(16, 6))
    status_reason: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(50))
    retry_attempt: Mapped[int] = mapped_column(Integer, server_default="0")
    approved_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    routed_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    recovered_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, server_default=text("now()"))
    expires_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    stop_price: Mapped[Decimal | None] = mapped_column(ORDER_PRICE)
    time_in_force: Mapped[TimeInForceEnum] = mapped_column(TIME_IN_FORCE, server_default="GTC")
    replaces_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="RESTRICT")
    )
    """The order this one replaced (migration 006)."""
    replaced_by_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="RESTRICT")
    )
    """The order that replaced this one, set when the venue confirmed (status REPLACED)."""


class Fill(Base):
    __tablename__ = "fills"
    __table_args__ = (
        CheckConstraint("quantity_filled > 0", name="ck_fills_quantity_filled_positive"),
        CheckConstraint("price_at_fill > 0", name="ck_fills_price_at_fill_positive"),
        CheckConstraint("commission >= 0", name="ck_fills_commission_not_negative"),
        CheckConstraint("btrim(venue) <> ''", name="ck_fills_venue_not_blank"),
        Index("idx_fills_order", "order_id"),
        Index("idx_fills_timestamp", text('"timestamp" DESC')),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    order_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="RESTRICT")
    )
    trader_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    timestamp: Mapped[datetime] = mapped_column(TIMESTAMPTZ, server_default=text("now()"))
    quantity_filled: Mapped[int] = mapped_column(Integer)
    price_at_fill: Mapped[Decimal] = mapped_column(PRICE)
    venue: Mapped[str] = mapped_column(String(50))
    commission: Mapped[Decimal] = mapped_column(PRICE, server_default="0")
    created_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, server_default=text("now()"))


class ExecutionLog(Base):
    __tablename__ = "execution_logs"
    __table_args__ = (
        CheckConstraint("retry_attempt >= 0", name="ck_execution_logs_retry_attempt"),
        CheckConstraint("octet_length(hash) = 32", name="ck_execution_logs_hash_sha256"),
        CheckConstraint("octet_length(prev_hash) = 32", name="ck_execution_logs_prev_hash_sha256"),
        Index("idx_execution_logs_trader_timestamp", "trader_id", text('"timestamp" DESC')),
        Index("idx_execution_logs_order", "order_id"),
        Index("idx_execution_logs_action", "action"),
        Index("idx_execution_logs_seq", "seq", unique=True),
        Index("idx_execution_logs_chain", "order_id", "seq"),
        Index("idx_execution_logs_stream", "stream_key", "seq"),
        Index("idx_execution_logs_trader_stream", "trader_id", "stream_key", "seq"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    order_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="RESTRICT")
    )
    trader_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    action: Mapped[ActionEnum] = mapped_column(ACTION)
    status: Mapped[OrderStatusEnum | None] = mapped_column(ORDER_STATUS)
    timestamp: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, server_default=text("clock_timestamp()")
    )
    reason: Mapped[str | None] = mapped_column(Text)
    retry_attempt: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, server_default=text("now()"))
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True))
    """The row's position in the change feed (migration 004): live updates read it."""
    prev_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The hash of the order's previous audit row (migration 005); None for its first."""
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    """SHA-256 of the row's canonical form, prev_hash included (set by the database)."""
    xact: Mapped[int] = mapped_column(XID8)
    """The inserting top-level transaction (migration 013), set by the database."""
    stream_key: Mapped[int] = mapped_column(XID8)
    """greatest(xact, the order's previous row's stream_key): the order events' commit
    order (migration 013), set by the database."""


class OrderLimitsRow(Base):
    """The one row of order limits (migration 003; see app/orders/limits.py)."""

    __tablename__ = "order_limits"
    __table_args__ = (
        CheckConstraint("id", name="ck_order_limits_one_row"),
        CheckConstraint("max_quantity > 0", name="ck_order_limits_max_quantity"),
        CheckConstraint("max_notional > 0", name="ck_order_limits_max_notional"),
        CheckConstraint(
            "array_position(symbols, NULL) IS NULL"
            " AND array_to_string(symbols, ',') ~ '^([A-Z0-9.-]{1,10}(,|$))*$'",
            name="ck_order_limits_symbols",
        ),
        CheckConstraint("max_open_orders > 0", name="ck_order_limits_max_open_orders"),
        CheckConstraint("max_orders_per_minute > 0", name="ck_order_limits_max_orders_per_minute"),
    )

    id: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    max_quantity: Mapped[int] = mapped_column(Integer, server_default=text("100000"))
    max_notional: Mapped[Decimal | None] = mapped_column(
        Numeric(16, 2), server_default=text("5000000")
    )
    symbols: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, server_default=text("now()"))
    max_open_orders: Mapped[int | None] = mapped_column(Integer)
    """Each trader's cap on open (PENDING, PARTIAL) orders; None: no cap (migration 010)."""
    max_orders_per_minute: Mapped[int | None] = mapped_column(Integer)
    """The most orders each trader may submit in any 60 s; None: no limit (migration 015)."""


class TradingSessionRow(Base):
    """The one row of the trading session: when a DAY order ends (migration 006)."""

    __tablename__ = "trading_session"
    __table_args__ = (
        CheckConstraint("id", name="ck_trading_session_one_row"),
        CheckConstraint(
            "(TIMESTAMPTZ '2000-01-01 00:00+00' AT TIME ZONE time_zone) IS NOT NULL",
            name="ck_trading_session_time_zone",
        ),
    )

    id: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    close_time: Mapped[time] = mapped_column(Time, server_default=text("'16:00:00'"))
    time_zone: Mapped[str] = mapped_column(Text, server_default=text("'America/New_York'"))
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, server_default=text("now()"))
