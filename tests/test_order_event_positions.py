"""Migration 013 in plain SQL: the stream's columns per role, set by the trigger, immutable,
the cursor key for the login role only, the downgrade; and ExecutionLog.hash/prevHash.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests import pg, privileges
from tests.conftest import Db
from tests.revisions import round_trip
from tests.sql import as_role
from tests.test_order_events import (
    approved_order,
    insert_order,
)
from tests.test_subscriptions import harness

# --- the database ---------------------------------------------------------------------------


async def test_the_downgrade_gives_back_exactly_what_012_made(cluster: pg.Cluster) -> None:
    trip = await round_trip(cluster, "012", "013")
    assert trip.after != trip.before
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)


@pytest.mark.parametrize(
    ("role", "sees_bobs"),
    [
        ("authenticated", False),
        ("compliance_auditor", True),
        ("service_role", True),
        ("anon", False),
    ],
)
async def test_plain_sql_as_each_role_reads_the_stream_columns_exactly_as_the_audit_rows(
    database: Db,
    owner_conn: asyncpg.Connection,
    authenticator_conn: asyncpg.Connection,
    role: str,
    sees_bobs: bool,
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    mine, bobs = await insert_order(owner_conn, alice), await insert_order(owner_conn, bob)
    async with as_role(authenticator_conn, role, alice) as conn:
        rows = await conn.fetch(
            "SELECT order_id, stream_key::text FROM execution_logs WHERE order_id = ANY($1)",
            [mine, bobs],
        )
        seen = {r["order_id"] for r in rows}
        assert seen == ({mine} if role == "authenticated" else set()) | (
            {bobs, mine} if sees_bobs else set()
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT key FROM order_api_private.event_cursor_key")


async def test_the_stream_columns_are_the_triggers_and_immutable(
    owner_conn: asyncpg.Connection, authenticator_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    async with owner_conn.transaction():
        await owner_conn.fetchval("SELECT pg_current_xact_id()")
        order_id = await approved_order(owner_conn, trader)
        own = await owner_conn.fetchval("SELECT pg_current_xact_id()::text")
    rows = await owner_conn.fetch(
        "SELECT xact::text, stream_key::text FROM execution_logs WHERE order_id = $1 ORDER BY seq",
        order_id,
    )
    assert [tuple(r) for r in rows] == [(own, own), (own, own)]
    async with as_role(authenticator_conn, "service_role") as conn:
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute(
                "UPDATE execution_logs SET stream_key = '1' WHERE order_id = $1", order_id
            )
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await owner_conn.execute(
            "UPDATE execution_logs SET stream_key = '1' WHERE order_id = $1", order_id
        )


async def test_execution_logs_serve_each_rows_hash_and_its_predecessors_in_hex(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    order_id = await approved_order(owner_conn, trader)
    stored = await owner_conn.fetch(
        "SELECT id::text, encode(hash, 'hex') AS hash, encode(prev_hash, 'hex') AS prev"
        " FROM execution_logs WHERE order_id = $1 ORDER BY seq",
        order_id,
    )
    async with harness(database) as h:
        query = "query($id: UUID!) { order(id: $id) { executionLogs { id hash prevHash } } }"
        data = await h.gql(query, {"id": str(order_id)}, h.token(trader))
    served = [(log["id"], log["hash"], log["prevHash"]) for log in data["order"]["executionLogs"]]
    assert sorted(served) == sorted((r["id"], r["hash"], r["prev"]) for r in stored)
    assert stored[0]["prev"] is None
    assert stored[1]["prev"] == stored[0]["hash"]
