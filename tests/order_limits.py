"""What the order-limit tests share (the open order cap, 010, and the order rate, 015): the
documents they send, a LIMIT order's input, and inserting one order with plain SQL as a role."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from tests.api import Client
from tests.sql import as_role

SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id status } }"
REPLACE = (
    "mutation($id: UUID!, $input: ReplaceOrderInput!) {"
    " replaceOrder(id: $id, input: $input) { id status } }"
)
CANCEL = "mutation($id: UUID!) { cancelOrder(id: $id) { status } }"
LIMIT = {"symbol": "AAPL", "side": "BUY", "quantity": 10, "orderType": "LIMIT", "price": "10.00"}
INSERT = (
    "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
    " VALUES ($1, 'AAPL', 'BUY', 10, 'LIMIT', 10.00) RETURNING id"
)


async def insert_as(conn: asyncpg.Connection, role: str, trader: uuid.UUID) -> uuid.UUID:
    """One order for ``trader``, inserted and committed as ``role`` (a trader as itself)."""
    sub = trader if role == "authenticated" else None
    async with as_role(conn, role, sub, commit=True):
        order_id: uuid.UUID = await conn.fetchval(INSERT, trader)
    return order_id


async def submit(client: Client, trader: uuid.UUID, **changes: Any) -> dict[str, Any]:
    return await client.gql(SUBMIT, {"input": {**LIMIT, **changes}}, token=client.token(trader))
