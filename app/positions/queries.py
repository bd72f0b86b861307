"""The SQL that reads positions, as the caller (row level security decides what it sees).

Migration 012 keeps one row per trader, method and symbol, moved by each fill in the fill's
transaction, and ``position_view`` rounds it the contract's way: reading a position costs one
index lookup per symbol, never a scan of the fills.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import RowMapping

from app.db.session import Tx
from app.models.position import CostBasisMethodEnum
from app.orders import fields, queries

COLUMNS = f"{fields.POSITION.columns}, fills"

# trader_positions refuses service_role and compliance_auditor without a trader (OA422 with
# column traderId): the rule is the database's, so plain SQL gets the same answer.
_POSITIONS = text(
    f"SELECT {COLUMNS} FROM public.trader_positions(:trader_id, CAST(:method AS cost_basis_method))"
)

# The positions of the orders' traders and symbols that the caller may see (the view and
# orders, both under its row level security).
_OF_ORDERS = text(
    f"SELECT {COLUMNS} FROM public.position_view v"
    " WHERE v.method = CAST(:method AS cost_basis_method)"
    " AND (v.trader_id, v.symbol) IN"
    " (SELECT o.trader_id, o.symbol FROM public.orders o WHERE o.id = ANY(:ids))"
    " AND (CAST(:symbol AS text) IS NULL OR v.symbol = :symbol)"
)

_FILLS_SEEN = text(
    "SELECT trader_id, symbol, fills FROM public.position_view v"
    " WHERE v.method = CAST(:method AS cost_basis_method)"
    " AND (CAST(:symbol AS text) IS NULL OR v.symbol = :symbol)"
)


async def positions(
    tx: Tx, *, trader_id: UUID | None, method: CostBasisMethodEnum
) -> Sequence[RowMapping]:
    """Query.positions: by symbol."""
    with queries.database_errors():
        return await tx.all(_POSITIONS, {"trader_id": trader_id, "method": method.value})


async def of_orders(
    tx: Tx, order_ids: Sequence[UUID], *, method: CostBasisMethodEnum, symbol: str | None
) -> Sequence[RowMapping]:
    """The positions the orders' fills move, as the caller sees them."""
    return await tx.all(
        _OF_ORDERS, {"ids": list(order_ids), "method": method.value, "symbol": symbol}
    )


async def fills_seen(
    tx: Tx, *, method: CostBasisMethodEnum, symbol: str | None
) -> dict[tuple[UUID, str], int]:
    """How many fills moved each position the caller sees, keyed by (trader, symbol)."""
    rows = await tx.all(_FILLS_SEEN, {"method": method.value, "symbol": symbol})
    return {(row["trader_id"], row["symbol"]): row["fills"] for row in rows}
