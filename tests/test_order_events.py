"""Subscription.orderEvents and Query.eventsCursor end to end on a real database (issue 20).

The stream delivers every audit row the caller may see exactly once, in commit order, across
reconnects, with each order's rows in chain order. Writers here are plain SQL transactions
(so a test can hold one open at a chosen moment); readers go through the API over WebSocket.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from tests.conftest import Db
from tests.test_subscriptions import (
    TRANSPORT_WS,
    Harness,
    Stream,
    connection,
    harness,
)

EVENTS = """
subscription($after: String, $orderId: UUID) {
  orderEvents(after: $after, orderId: $orderId) {
    cursor
    log { id orderId traderId action hash prevHash }
    order { id status executionLogs { id } }
  }
}
"""
CURSOR = "{ eventsCursor }"


class Events(Stream):
    async def event(self) -> dict[str, Any]:
        payload = await self.next()
        assert "errors" not in payload, payload
        event: dict[str, Any] = payload["data"]["orderEvents"]
        return event

    async def quiet(self, seconds: float = 0.3) -> None:
        """Nothing arrives for ``seconds``."""
        with pytest.raises(TimeoutError):
            await self.ws.receive_json(timeout=seconds)


@asynccontextmanager
async def events(
    h: Harness,
    token: str,
    *,
    after: str | None = None,
    order_id: uuid.UUID | None = None,
    protocol: str = TRANSPORT_WS,
) -> AsyncIterator[Events]:
    async with connection(h, token, protocol=protocol) as ws:
        variables = {"after": after, "orderId": None if order_id is None else str(order_id)}
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe" if protocol == TRANSPORT_WS else "start",
                "payload": {"query": EVENTS, "variables": variables},
            }
        )
        yield Events(ws, protocol)


async def events_cursor(h: Harness, token: str) -> str:
    cursor: str = (await h.gql(CURSOR, {}, token))["eventsCursor"]
    return cursor


async def insert_order(conn: asyncpg.Connection, trader: uuid.UUID) -> uuid.UUID:
    """Writes an order and its SUBMITTED audit row, in the connection's transaction."""
    order_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
        " VALUES ($1, 'IBM', 'BUY', 1, 'MARKET') RETURNING id",
        trader,
    )
    return order_id


async def approved_order(conn: asyncpg.Connection, trader: uuid.UUID) -> uuid.UUID:
    """An order that ``touch`` may write to: SUBMITTED and APPROVED rows."""
    order_id = await insert_order(conn, trader)
    await conn.execute("UPDATE orders SET approved_at = now() WHERE id = $1", order_id)
    return order_id


async def touch(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    """One more audit row of the order (RECOVERED), under the order's row lock."""
    await conn.execute("UPDATE orders SET recovered_at = clock_timestamp() WHERE id = $1", order_id)


async def audit_rows(owner: asyncpg.Connection, **where: uuid.UUID) -> list[str]:
    column, value = next(iter(where.items()))
    rows = await owner.fetch(
        f"SELECT id FROM execution_logs WHERE {column} = $1 ORDER BY seq", value
    )
    return [str(r["id"]) for r in rows]


# --- commit order ---------------------------------------------------------------------------


async def test_a_row_written_before_a_delivered_one_but_committed_after_a_reconnect_arrives(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    x = await asyncpg.connect(database.dsn())
    y = await asyncpg.connect(database.dsn())
    try:
        async with harness(database) as h:
            token = h.token(trader)
            start = await events_cursor(h, token)
            y_tx = y.transaction()
            await y_tx.start()
            await y.fetchval("SELECT pg_current_xact_id()")  # Y is older than X
            x_tx = x.transaction()
            await x_tx.start()
            x_order = await insert_order(x, trader)  # X writes its row first (smaller seq)...
            y_order = await insert_order(y, trader)
            await y_tx.commit()  # ...and Y commits first
            async with events(h, token, after=start) as stream:
                y_event = await stream.event()
                assert y_event["log"]["orderId"] == str(y_order)
                await stream.quiet()
            # Disconnected; X commits while the client is away, after resuming.
            async with events(h, token, after=y_event["cursor"]) as stream:
                await stream.quiet(0.1)
                await x_tx.commit()
                x_event = await stream.event()
                assert x_event["log"]["orderId"] == str(x_order)
                assert x_event["log"]["id"] == (await audit_rows(owner_conn, order_id=x_order))[0]
    finally:
        await x.close()
        await y.close()


async def test_a_committed_row_waits_for_an_older_open_transaction_and_then_follows_it(
    database: Db,
) -> None:
    trader = uuid.uuid4()
    x = await asyncpg.connect(database.dsn())
    y = await asyncpg.connect(database.dsn())
    try:
        async with harness(database) as h:
            token = h.token(trader)
            async with events(h, token, after=await events_cursor(h, token)) as stream:
                x_tx = x.transaction()
                await x_tx.start()
                x_order = await insert_order(x, trader)  # X is older
                async with y.transaction():
                    y_order = await insert_order(y, trader)
                # Y committed, but X may still commit a row that comes before it.
                await stream.quiet()
                await x_tx.commit()
                assert (await stream.event())["log"]["orderId"] == str(x_order)
                assert (await stream.event())["log"]["orderId"] == str(y_order)
    finally:
        await x.close()
        await y.close()


async def test_an_orders_rows_arrive_in_chain_order_when_the_younger_writer_commits_first(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    # X takes its transaction id, then waits for the order's row lock held by Y, which is
    # younger and commits first: X's row follows Y's in the chain, and must in the stream.
    trader = uuid.uuid4()
    order_id = await approved_order(owner_conn, trader)
    x = await asyncpg.connect(database.dsn())
    y = await asyncpg.connect(database.dsn())
    try:
        async with harness(database) as h:
            token = h.token(trader)
            async with events(h, token, after=await events_cursor(h, token)) as stream:
                x_tx = x.transaction()
                await x_tx.start()
                await x.fetchval("SELECT pg_current_xact_id()")
                y_tx = y.transaction()
                await y_tx.start()
                await touch(y, order_id)
                waiting = asyncio.create_task(touch(x, order_id))
                await asyncio.sleep(0.1)
                await y_tx.commit()
                await waiting
                await x_tx.commit()
                first, second = await stream.event(), await stream.event()
                assert second["log"]["prevHash"] == first["log"]["hash"]
                ids = await audit_rows(owner_conn, order_id=order_id)
                assert [first["log"]["id"], second["log"]["id"]] == ids[2:]
    finally:
        await x.close()
        await y.close()


# --- the randomized run ------------------------------------------------------------------------


async def writer(
    database: Db, rng: random.Random, traders: list[uuid.UUID], orders: list[uuid.UUID], rounds: int
) -> None:
    conn = await asyncpg.connect(database.dsn())
    try:
        for _ in range(rounds):
            tx = conn.transaction()
            await tx.start()
            try:
                for _ in range(rng.randint(1, 3)):
                    if orders and rng.random() < 0.6:
                        await touch(conn, rng.choice(orders))
                    else:
                        orders.append(await approved_order(conn, rng.choice(traders)))
                    await asyncio.sleep(rng.random() * 0.02)
            except asyncpg.DeadlockDetectedError:
                await tx.rollback()
                continue
            if rng.random() < 0.15:
                await tx.rollback()
            else:
                await tx.commit()
    finally:
        await conn.close()


def verify_chains(delivered: list[dict[str, Any]]) -> None:
    heads: dict[str, str | None] = {}
    for event in delivered:
        log = event["log"]
        assert log["prevHash"] == heads.get(log["orderId"]), log
        heads[log["orderId"]] = log["hash"]


@pytest.mark.parametrize("role", ["authenticated", "compliance_auditor"])
async def test_concurrent_writers_and_random_disconnects_deliver_every_visible_row_once(
    database: Db, owner_conn: asyncpg.Connection, role: str
) -> None:
    rng = random.Random(20)
    traders = [uuid.uuid4(), uuid.uuid4()]
    orders: list[uuid.UUID] = []
    async with harness(database) as h:
        token = h.token(traders[0]) if role == "authenticated" else h.token(role=role)
        cursor = await events_cursor(h, token)
        writers = asyncio.gather(
            *(writer(database, random.Random(i), traders, orders, 25) for i in range(4))
        )
        delivered: list[dict[str, Any]] = []
        while not writers.done():
            async with events(h, token, after=cursor) as stream:
                for _ in range(rng.randint(1, 8)):
                    try:
                        event = await asyncio.wait_for(stream.event(), 1.0)
                    except TimeoutError:
                        break
                    delivered.append(event)
                    cursor = event["cursor"]
        await writers
        expected = [
            str(r["id"])
            for r in await owner_conn.fetch(
                "SELECT id FROM execution_logs WHERE $1 OR trader_id = $2",
                role != "authenticated",
                traders[0],
            )
        ]
        async with events(h, token, after=cursor) as stream:
            while len(delivered) < len(expected):
                delivered.append(await stream.event())
            await stream.quiet(0.2)
    ids = [e["log"]["id"] for e in delivered]
    assert len(expected) > 50  # the writers did write, concurrently
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(expected)
    verify_chains(delivered)
    if role == "authenticated":
        assert {e["log"]["traderId"] for e in delivered} == {str(traders[0])}


async def test_a_stream_the_server_ends_carries_the_cursor_to_resume_from(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h:
        token = h.token(trader)
        start = await events_cursor(h, token)
        first = await insert_order(owner_conn, trader)
        async with events(h, token, after=start) as stream:
            assert (await stream.event())["log"]["orderId"] == str(first)
            await h.subscribers(1)
            await h.changes.stop()  # what shutdown does first
            payload = await stream.next()
            [error] = payload["errors"]
            assert error["extensions"]["reason"] == "EVENTS_INTERRUPTED"
            assert (await stream.message())["type"] == "complete"
    second = await insert_order(owner_conn, trader)
    async with (
        harness(database) as h,
        events(h, h.token(trader), after=error["extensions"]["cursor"]) as stream,
    ):
        assert (await stream.event())["log"]["orderId"] == str(second)
        await stream.quiet(0.2)
