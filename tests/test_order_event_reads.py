"""Migration 016 and the stream's reads: a trader's read after a cursor is one ordered range
of ``(trader_id, stream_key, seq)`` that stops at the batch's limit, never a sort of the
trader's history, whatever the planner guesses of how many rows the policy matches; and the
read of one order's stream."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from app.auth.claims import Claims
from app.db.session import Database, open_database
from app.db.urls import async_url
from app.events import stream
from app.events.cursor import Cursor
from tests import pg, privileges
from tests.api import api_settings
from tests.conftest import Db
from tests.revisions import round_trip
from tests.test_order_events import (
    approved_order,
    audit_rows,
    events,
    events_cursor,
    touch,
)
from tests.test_subscriptions import harness

HISTORY = 2000
"""The trader's audit rows: four full batches of the stream's read."""


async def test_the_downgrade_gives_back_exactly_what_015_made(cluster: pg.Cluster) -> None:
    trip = await round_trip(cluster, "015", "016")
    assert any("idx_execution_logs_trader_stream" in fact for fact in trip.after)
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)


@pytest.fixture
async def api_database(database: Db) -> AsyncIterator[Database]:
    settings = api_settings(database)
    assert settings.api_database_url is not None
    db = open_database(async_url(settings.api_database_url), settings, pooler=settings.db_pooler)
    try:
        yield db
    finally:
        await db.dispose()


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


async def explain_read(db: Database, trader: uuid.UUID, cursor: Cursor) -> list[dict[str, Any]]:
    """The plan PostgreSQL runs for the stream's read of ``trader``, as the trader, with the
    read's own settings."""
    claims = Claims(
        role="authenticated", sub=trader, raw={"role": "authenticated"}, expires_at=None
    )
    explain = text("EXPLAIN (FORMAT JSON) " + stream._read_sql(one_order=False))
    params = {
        "stream_key": str(cursor.stream_key),
        "seq": cursor.seq,
        "seen": None,
        "order_id": None,
        "limit": stream.READ_BATCH,
    }
    async with db.transaction(claims, read_only=True) as tx:
        await tx.scalar(stream._PLAN)
        [row] = await tx.all(explain, params)
    plan = row["QUERY PLAN"]
    return plan_nodes((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])


async def test_a_traders_read_is_an_ordered_range_of_its_rows_without_a_sort(
    owner_conn: asyncpg.Connection, api_database: Database
) -> None:
    trader = uuid.uuid4()
    # Many traders, as in production (the planner guesses a trader's share from their
    # number), with the others' rows before and after the trader's own in the stream.
    others = [uuid.uuid4() for _ in range(100)]
    for traders, each in ((others, HISTORY // 100), ([trader], HISTORY)) * 2:
        await owner_conn.execute(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
            " SELECT t, 'IBM', 'BUY', 1, 'MARKET'"
            " FROM unnest($1::uuid[]) AS traders(t), generate_series(1, $2)",
            traders,
            each,
        )
    await owner_conn.execute("ANALYZE public.execution_logs")
    nodes = await explain_read(api_database, trader, Cursor(0, 0))
    kinds = [node["Node Type"] for node in nodes]
    scans = [node for node in nodes if node["Node Type"] == "Index Scan"]
    assert "Sort" not in kinds, kinds
    assert [s["Index Name"] for s in scans] == ["idx_execution_logs_trader_stream"], kinds


async def test_order_events_of_one_order_deliver_that_orders_rows_only(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h:
        token = h.token(trader)
        start = await events_cursor(h, token)
        mine = await approved_order(owner_conn, trader)
        other = await approved_order(owner_conn, trader)
        await touch(owner_conn, other)
        await touch(owner_conn, mine)
        async with events(h, token, after=start, order_id=mine) as stream:
            delivered = [(await stream.event())["log"]["id"] for _ in range(3)]
            await stream.quiet(0.2)
            await touch(owner_conn, other)
            await touch(owner_conn, mine)
            delivered.append((await stream.event())["log"]["id"])
            await stream.quiet(0.2)
    assert delivered == await audit_rows(owner_conn, order_id=mine)
