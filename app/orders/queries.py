"""The SQL of the order API: every statement the API sends, in one place.

Statements run inside the caller's transaction (db/session.py), so row level
security applies to each of them. Where a statement adds ``trader_id =
auth.uid()`` it is a hint for the planner (the index on trader_id), never the
boundary: the policies give the same answer without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import RowMapping

from app.auth.claims import Claims
from app.db.session import Tx
from app.orders import fields, pages
from app.orders.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    OrderError,
    OrderNotFound,
    RateLimited,
)
from app.orders.pages import Cursor, Page

# The select lists, from the field registry (orders/fields.py).
ORDER_COLUMNS = fields.ORDER.columns
FILL_COLUMNS = fields.FILL.columns
LOG_COLUMNS = fields.LOG.columns
CLAIMED_SUB = fields.CLAIMED_SUB

# Planner hint for callers who only see their own rows (see module docstring).
OWN_ROWS_HINT = "trader_id = (SELECT auth.uid())"


Conditions = tuple[list[str], dict[str, Any]]
"""SQL conditions to AND together, and their bound parameters."""


def _own_rows_hint(claims: Claims) -> list[str]:
    return [OWN_ROWS_HINT] if claims.role == "authenticated" else []


def _after(after: Cursor | None, at: str, p: str) -> Conditions:
    if after is None:
        return [], {}
    return [f"({at}, id) < (:{p}after_at, :{p}after_id)"], {
        f"{p}after_at": after.at,
        f"{p}after_id": after.id,
    }


def order_conditions(
    claims: Claims,
    *,
    after: Cursor | None,
    trader_id: UUID | None,
    statuses: Sequence[str] | None,
    symbol: str | None,
    side: str | None,
    prefix: str = "",
) -> Conditions:
    """The filters of ``orders``, for the resolvers and for compiled queries alike.
    ``prefix`` keeps parameter names apart when one statement holds several roots."""
    p = prefix
    where, params = _after(after, pages.ORDERS.at, p)
    where = _own_rows_hint(claims) + where
    if trader_id is not None:
        where.append(f"trader_id = :{p}trader_id")
        params[f"{p}trader_id"] = trader_id
    if statuses:
        where.append(f"status = ANY(CAST(:{p}statuses AS order_status_enum[]))")
        params[f"{p}statuses"] = list(statuses)
    if symbol is not None:
        where.append(f"symbol = :{p}symbol")
        params[f"{p}symbol"] = symbol
    if side is not None:
        where.append(f"side = :{p}side")
        params[f"{p}side"] = side
    return where, params


def log_conditions(
    claims: Claims,
    *,
    after: Cursor | None,
    order_id: UUID | None,
    action: str | None,
    prefix: str = "",
) -> Conditions:
    """The filters of ``executionLogs``, for the resolvers and for compiled queries alike."""
    p = prefix
    where, params = _after(after, pages.LOGS.at, p)
    where = _own_rows_hint(claims) + where
    if order_id is not None:
        where.append(f"order_id = :{p}order_id")
        params[f"{p}order_id"] = order_id
    if action is not None:
        where.append(f"action = CAST(:{p}action AS action_enum)")
        params[f"{p}action"] = action
    return where, params


@contextmanager
def database_errors(order_id: UUID | None = None) -> Iterator[None]:
    """Translate the database's refusals into the API's terms: through SQLAlchemy (a
    transaction) or straight from asyncpg (``Database.autocommit_row``)."""
    try:
        yield
    except sa_exc.DBAPIError as error:
        state = getattr(error.orig, "sqlstate", None)
        translated = translate(state, order_id, getattr(error.orig, "__cause__", None))
        if translated is None:
            raise
        raise translated from error
    except asyncpg.PostgresError as error:
        translated = translate(error.sqlstate, order_id, error)
        if translated is None:
            raise
        raise translated from error


def translate(state: str | None, order_id: UUID | None, cause: object) -> OrderError | None:
    """The API's error for SQLSTATE ``state``; ``cause`` is the driver's (asyncpg's) error."""
    if state == "OA422":
        # orders_check_rules (migration 003) names the API's field as the error's column.
        field = getattr(cause, "column_name", None) or "input"
        return InvalidInput(
            field, getattr(cause, "message", None) or "a value breaks an order rule"
        )
    if state == "OA429":
        # orders_limit_rate (migration 015): DETAIL is the whole seconds until a place frees.
        return RateLimited(
            getattr(cause, "message", None) or "too many orders",
            int(getattr(cause, "detail", None) or ""),
        )
    if state == "OA409":
        # The trigger's message names the order and the refused change; it carries no internals.
        message = str(cause or "")
        detail = message.split("\n")[0] if message else "illegal state change"
        return Conflict(detail)
    if state in ("42501", "OA403"):
        return Forbidden("your role may not make this change")
    if state == "23505":
        return Conflict("this order already exists")
    if state == "23503" and order_id is not None:
        return OrderNotFound(order_id)
    if state == "23514":
        return Conflict("the change would break an order invariant")
    if state in ("22P02", "22003", "22001"):
        return InvalidInput("input", "a value is out of range or malformed")
    return None


# --- reads ---------------------------------------------------------------------


async def viewer(tx: Tx) -> RowMapping:
    row = await tx.first(text(f"SELECT {fields.VIEWER.columns}"))
    assert row is not None
    return row


async def order_by_id(tx: Tx, order_id: UUID) -> RowMapping | None:
    return await tx.first(
        text(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = :id"), {"id": order_id}
    )


async def orders_by_ids(tx: Tx, order_ids: Sequence[UUID]) -> Sequence[RowMapping]:
    """Many orders by id in one statement: those the caller may see, in no particular order."""
    return await tx.all(
        text(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY(:ids)"), {"ids": list(order_ids)}
    )


async def order_for_update(tx: Tx, order_id: UUID) -> RowMapping | None:
    return await tx.first(
        text(
            f"SELECT {ORDER_COLUMNS}, approved_at, routed_at FROM orders WHERE id = :id FOR UPDATE"
        ),
        {"id": order_id},
    )


async def orders_page(
    tx: Tx,
    *,
    first: int,
    after: Cursor | None,
    trader_id: UUID | None,
    statuses: Sequence[str] | None,
    symbol: str | None,
    side: str | None,
) -> Page:
    where, params = order_conditions(
        tx.claims, after=after, trader_id=trader_id, statuses=statuses, symbol=symbol, side=side
    )
    params["limit"] = first + 1
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = await tx.all(
        text(
            f"SELECT {ORDER_COLUMNS} FROM orders {clause}"
            f" ORDER BY {pages.ORDERS.order_by()} LIMIT :limit"
        ),
        params,
    )
    return Page.of(rows, first)


async def fills_of(tx: Tx, order_ids: Sequence[UUID]) -> Sequence[RowMapping]:
    """Fills of many orders in one statement, oldest first."""
    return await tx.all(
        text(
            f"SELECT {FILL_COLUMNS} FROM fills WHERE order_id = ANY(:ids)"
            f" ORDER BY {pages.FILLS_OF_ORDER.order}"
        ),
        {"ids": list(order_ids)},
    )


async def logs_of(tx: Tx, order_ids: Sequence[UUID]) -> Sequence[RowMapping]:
    """Audit rows of many orders in one statement, oldest first."""
    return await tx.all(
        text(
            f"SELECT {LOG_COLUMNS} FROM execution_logs WHERE order_id = ANY(:ids)"
            f" ORDER BY {pages.LOGS_OF_ORDER.order}"
        ),
        {"ids": list(order_ids)},
    )


async def logs_page(
    tx: Tx,
    *,
    first: int,
    after: Cursor | None,
    order_id: UUID | None,
    action: str | None,
) -> Page:
    where, params = log_conditions(tx.claims, after=after, order_id=order_id, action=action)
    params["limit"] = first + 1
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = await tx.all(
        text(
            f"SELECT {LOG_COLUMNS} FROM execution_logs {clause}"
            f" ORDER BY {pages.LOGS.order_by()} LIMIT :limit"
        ),
        params,
    )
    return Page.of(rows, first)


async def order_by_client_id(tx: Tx, trader_id: UUID, client_order_id: str) -> RowMapping | None:
    return await tx.first(
        text(
            f"SELECT {ORDER_COLUMNS} FROM orders"
            " WHERE trader_id = :trader_id AND client_order_id = :client_order_id"
        ),
        {"trader_id": trader_id, "client_order_id": client_order_id},
    )


async def session_close(tx: Tx) -> datetime:
    """The close a DAY order submitted now ends at: the database's one definition
    (migration 006's trading_session), at the transaction's now(), as its trigger sees it."""
    closing = await tx.scalar(text("SELECT public.session_close(now())"))
    assert isinstance(closing, datetime)
    return closing


# The chain of orders ``:id`` replaced, itself included (what migration 006 sums).
_CHAIN = (
    "WITH RECURSIVE chain AS ("
    " SELECT o.id, o.replaces_id FROM orders o WHERE o.id = :id"
    " UNION ALL SELECT o.id, o.replaces_id FROM orders o JOIN chain c ON o.id = c.replaces_id)"
)


async def chain_filled(tx: Tx, order_id: UUID, *, before: datetime | None = None) -> int:
    """Shares filled across ``order_id`` and the orders it replaced: what a replacement's
    total quantity counts from. ``before``: only fills recorded before then."""
    filled = await tx.scalar(
        text(
            f"{_CHAIN} SELECT coalesce(sum(f.quantity_filled), 0)::integer"
            " FROM chain c JOIN fills f ON f.order_id = c.id"
            " WHERE CAST(:before AS timestamptz) IS NULL OR f.created_at < :before"
        ),
        {"id": order_id, "before": before},
    )
    assert isinstance(filled, int)
    return filled
