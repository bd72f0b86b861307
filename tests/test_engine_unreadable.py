"""An order whose row the engine cannot decode is rejected with a reason, once (issue 18).

PostgreSQL's timestamptz reaches the year 294276 (and infinity), Python's datetime the
year 9999. Such an ``expires_at`` made every write the engine tried on the order fail as
it read the row back, and the engine retried it every pass, forever. Migration 009 keeps
new rows in range; rows written before it (or past its triggers) are made here by the
owner with triggers off, as only such a writer could now.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
import pytest

from app.engine.admission import UNREADABLE_ORDER
from tests import test_engine
from tests.test_engine import MakeWorker, logs_of, place

# tests/test_engine.py's fixtures: a paper venue on a shared file with a fake clock, workers.
clock = test_engine.clock
prices_csv = test_engine.prices_csv
make_venue = test_engine.make_venue
make_worker = test_engine.make_worker


async def store_past_the_checks(
    owner: asyncpg.Connection, order_id: uuid.UUID, expires_at: str
) -> None:
    async with owner.transaction():
        await owner.execute("SET LOCAL session_replication_role = replica")
        await owner.execute(
            "UPDATE orders SET expires_at = $2::text::timestamptz WHERE id = $1",
            order_id,
            expires_at,
        )


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-14:00", "infinity"])
async def test_an_order_the_engine_cannot_decode_is_rejected_once_with_the_column_named(
    make_worker: MakeWorker,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    expires_at: str,
) -> None:
    worker = make_worker()
    unreadable = await place(authenticator_conn, "ACME", 10)
    await store_past_the_checks(owner_conn, unreadable, expires_at)
    fine = await place(authenticator_conn, "ACME", 10)

    assert await worker.run_once() == 4  # rejected; approved, sent and filled

    order = await owner_conn.fetchrow(
        "SELECT status::text, error_code, status_reason, approved_at FROM orders WHERE id = $1",
        unreadable,
    )
    assert (order["status"], order["error_code"]) == ("REJECTED", UNREADABLE_ORDER)
    assert "expires_at" in order["status_reason"]
    assert order["approved_at"] is None  # never reached the venue
    assert [row[0] for row in await logs_of(owner_conn, unreadable)][-1] == "REJECTED"
    assert await owner_conn.fetchval("SELECT status::text FROM orders WHERE id = $1", fine) == (
        "FILLED"
    )
    assert await worker.run_once() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
