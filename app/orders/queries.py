"""The SQL of the order API: every statement the API sends, in one place.

Statements run inside the caller's transaction (db/session.py), so row level
security applies to each of them. Where a statement adds ``trader_id =
auth.uid()`` it is a hint for the planner (the index on trader_id), never the
boundary: the policies give the same answer without it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import RowMapping

from app.auth.claims import Claims
from app.db.session import Tx
from app.db.timestamps import isoformat
from app.orders.errors import Conflict, Forbidden, InvalidInput, OrderError, OrderNotFound

ORDER_COLUMNS = (
    "id, trader_id, client_order_id, symbol, side, quantity, order_type, price, stop_loss,"
    " take_profit, status, filled_quantity, average_fill_price, created_at, updated_at, expires_at"
)
FILL_COLUMNS = 'id, order_id, "timestamp", quantity_filled, price_at_fill, venue, commission'
LOG_COLUMNS = (
    'id, order_id, trader_id, action, status, "timestamp", reason, retry_attempt, error_code'
)

# The caller's sub as the database sees it, read from the claims the transaction carries
# rather than through auth.uid(): on Supabase only anon, authenticated and service_role
# may use the auth schema, and compliance_auditor must read its viewer too.
CLAIMED_SUB = "(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid"

# Planner hints for callers who only see their own rows (see module docstring).
# Tests switch them off to prove that row level security alone isolates traders.
PLANNER_HINTS = True


Conditions = tuple[list[str], dict[str, Any]]
"""SQL conditions to AND together, and their bound parameters."""


def _own_rows_hint(claims: Claims) -> list[str]:
    if PLANNER_HINTS and claims.role == "authenticated":
        return ["trader_id = (SELECT auth.uid())"]
    return []


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
    where, params = _after(after, "created_at", p)
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
    where, params = _after(after, '"timestamp"', p)
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
    """Translate the database's refusals into the API's terms."""
    try:
        yield
    except sa_exc.DBAPIError as error:
        state = getattr(error.orig, "sqlstate", None)
        translated = _translate(state, order_id, error)
        if translated is None:
            raise
        raise translated from error


def _translate(state: str | None, order_id: UUID | None, error: Exception) -> OrderError | None:
    if state == "OA422":
        # orders_check_rules (migration 003) names the API's field as the error's column.
        cause = getattr(getattr(error, "orig", None), "__cause__", None)
        field = getattr(cause, "column_name", None) or "input"
        return InvalidInput(
            field, getattr(cause, "message", None) or "a value breaks an order rule"
        )
    if state == "OA409":
        # The trigger's message names the order and the refused change; it carries no internals.
        message = str(getattr(getattr(error, "orig", None), "__cause__", None) or "")
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


# --- cursors ------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    at: datetime
    id: UUID

    def encode(self) -> str:
        raw = f"{isoformat(self.at)}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str, field: str = "after") -> Cursor:
        try:
            padded = value + "=" * (-len(value) % 4)
            at, _, ident = base64.urlsafe_b64decode(padded).decode().partition("|")
            cursor = cls(datetime.fromisoformat(at), UUID(ident))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidInput(field, f"{field} is not a cursor this API issued") from None
        if cursor.at.tzinfo is None:
            raise InvalidInput(field, f"{field} is not a cursor this API issued")
        return cursor


@dataclass(frozen=True)
class Page:
    rows: Sequence[RowMapping]
    has_next: bool


def _page(rows: Sequence[RowMapping], first: int) -> Page:
    return Page(rows=rows[:first], has_next=len(rows) > first)


# --- reads ---------------------------------------------------------------------


async def viewer(tx: Tx) -> RowMapping:
    row = await tx.first(text(f"SELECT current_user AS role, {CLAIMED_SUB} AS trader_id"))
    assert row is not None
    return row


async def order_by_id(tx: Tx, order_id: UUID) -> RowMapping | None:
    return await tx.first(
        text(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = :id"), {"id": order_id}
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
            " ORDER BY created_at DESC, id DESC LIMIT :limit"
        ),
        params,
    )
    return _page(rows, first)


async def fills_of(tx: Tx, order_ids: Sequence[UUID]) -> Sequence[RowMapping]:
    """Fills of many orders in one statement, oldest first."""
    return await tx.all(
        text(
            f"SELECT {FILL_COLUMNS} FROM fills WHERE order_id = ANY(:ids)"
            ' ORDER BY "timestamp", created_at, id'
        ),
        {"ids": list(order_ids)},
    )


async def logs_of(tx: Tx, order_ids: Sequence[UUID]) -> Sequence[RowMapping]:
    """Audit rows of many orders in one statement, oldest first."""
    return await tx.all(
        text(
            f"SELECT {LOG_COLUMNS} FROM execution_logs WHERE order_id = ANY(:ids)"
            ' ORDER BY "timestamp", id'
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
            ' ORDER BY "timestamp" DESC, id DESC LIMIT :limit'
        ),
        params,
    )
    return _page(rows, first)


async def order_by_client_id(tx: Tx, trader_id: UUID, client_order_id: str) -> RowMapping | None:
    return await tx.first(
        text(
            f"SELECT {ORDER_COLUMNS} FROM orders"
            " WHERE trader_id = :trader_id AND client_order_id = :client_order_id"
        ),
        {"trader_id": trader_id, "client_order_id": client_order_id},
    )
