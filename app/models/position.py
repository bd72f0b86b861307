"""Typed models of positions, their FIFO lots and the market prices, as migration 012 creates them.

Only the fills trigger writes the first two (012's docstring); the engine writes the third.
tests/test_order_models.py proves with alembic's autogenerate that these and the migrated
database agree.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Enum, Integer, Numeric, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.order import PRICE, TIMESTAMPTZ, Base


class CostBasisMethodEnum(enum.StrEnum):
    FIFO = "FIFO"
    AVERAGE_COST = "AVERAGE_COST"


EXACT = Numeric()
"""Amounts kept exact (no scale), from which the trigger rounds the served ones."""
CENTS = Numeric(16, 2)


class Position(Base):
    __tablename__ = "positions"
    __table_args__ = (
        CheckConstraint(
            "(quantity = 0) = (average_entry_price IS NULL)",
            name="ck_positions_entry_price_when_open",
        ),
        CheckConstraint(
            "open_cost >= 0 AND (quantity <> 0 OR open_cost = 0)", name="ck_positions_open_cost"
        ),
        CheckConstraint("commissions >= 0", name="ck_positions_commissions"),
        CheckConstraint("fills >= 0", name="ck_positions_fills"),
    )

    trader_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    method: Mapped[CostBasisMethodEnum] = mapped_column(
        Enum(CostBasisMethodEnum, name="cost_basis_method"), primary_key=True
    )
    symbol: Mapped[str] = mapped_column(String(10), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer, server_default="0")
    average_entry_price: Mapped[Decimal | None] = mapped_column(Numeric(16, 6))
    open_cost: Mapped[Decimal] = mapped_column(EXACT, server_default="0")
    realized_exact: Mapped[Decimal] = mapped_column(EXACT, server_default="0")
    cost_basis: Mapped[Decimal] = mapped_column(CENTS, server_default="0")
    realized_pnl: Mapped[Decimal] = mapped_column(CENTS, server_default="0")
    commissions: Mapped[Decimal] = mapped_column(CENTS, server_default="0")
    fills: Mapped[int] = mapped_column(Integer, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ)


class PositionLot(Base):
    __tablename__ = "position_lots"
    __table_args__ = (
        CheckConstraint("quantity <> 0", name="ck_position_lots_quantity"),
        CheckConstraint("price > 0", name="ck_position_lots_price"),
    )

    trader_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(10), primary_key=True)
    lot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    quantity: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal] = mapped_column(PRICE)


class MarketPrice(Base):
    __tablename__ = "market_prices"
    __table_args__ = (
        CheckConstraint("price > 0", name="ck_market_prices_price"),
        CheckConstraint("symbol ~ '^[A-Z0-9.-]{1,10}$'", name="ck_market_prices_symbol"),
    )

    symbol: Mapped[str] = mapped_column(String(10), primary_key=True)
    price: Mapped[Decimal] = mapped_column(PRICE)
    reported_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, server_default=text("now()"))
