"""Live updates under write load: re-reads in batches, and the gap signal for a subscriber
that cannot keep up (issue 18, part 7). bench/scale/live.py measures the latency."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from sqlalchemy import event

from app.db.change_feed import Changed, Missed
from tests.conftest import Db
from tests.test_subscriptions import (
    TIMEOUT,
    feed_on,
    harness,
    submit_as_owner,
    subscribed,
    until,
)

EVERYTHING = """
subscription { orderUpdates { id traderId fills { quantityFilled } executionLogs { action } } }
"""
ORDERS = 20


async def test_orders_that_change_together_are_re_read_in_one_statement_shared_by_equal_claims(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    traders = [uuid.uuid4() for _ in range(ORDERS)]
    async with harness(database) as h:
        statements: list[str] = []
        event.listen(
            h.app.state.database.engine.sync_engine,
            "before_cursor_execute",
            lambda _conn, _cursor, statement, *_: statements.append(statement),
        )
        token = h.token(role="compliance_auditor")
        async with (
            subscribed(h, token, query=EVERYTHING) as a,
            subscribed(h, token, query=EVERYTHING) as b,
        ):
            await h.subscribers(2)
            # Twenty orders committed at once: the feed reads their twenty changes in one poll.
            async with owner_conn.transaction():
                ids = [await submit_as_owner(owner_conn, t) for t in traders]
            for stream in (a, b):
                received = [await stream.order() for _ in ids]
                assert [o["id"] for o in received] == [str(i) for i in ids]  # oldest first
                assert [o["traderId"] for o in received] == [str(t) for t in traders]
                assert all(o["executionLogs"] == [{"action": "SUBMITTED"}] for o in received)

    def reads(table: str) -> list[str]:
        return [s for s in statements if f"FROM {table} WHERE" in s]

    # One statement per table for the twenty orders and both subscribers (their claims are
    # the same): not one transaction per order (twenty of each, before batching).
    assert [len(reads(t)) for t in ("orders", "fills", "execution_logs")] == [1, 1, 1], statements


async def test_a_subscriber_whose_re_reads_cannot_keep_up_is_told_it_missed_updates(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    async with (
        harness(database, subscription_max_lag_ms=300) as h,
        subscribed(h, h.token(trader), query=EVERYTHING) as stream,
    ):
        await h.subscribers(1)
        # The subscriber's re-read of its first change waits on a lock (a slow database, a
        # busy pool): the changes after it wait in its mailbox meanwhile.
        lock = owner_conn.transaction()
        await lock.start()
        try:
            await owner_conn.execute("LOCK TABLE fills IN ACCESS EXCLUSIVE MODE")
            first = await h.submit(trader)
            await until(lambda: _waiting_on_fills(owner_conn))
            for _ in range(3):
                await h.submit(trader)
            await asyncio.sleep(0.5)  # longer than SUBSCRIPTION_MAX_LAG_MS
        finally:
            await lock.rollback()
        assert (await stream.order())["id"] == first
        # The three changes that waited too long are not delivered late without a word: they
        # give way to the gap signal, and the stream goes on.
        gap = await stream.next()
        assert gap["data"] is None
        assert gap["errors"][0]["extensions"]["reason"] == "UPDATES_MISSED"
        later = await h.submit(trader)
        assert (await stream.order())["id"] == later
        assert h.changes.lagged == 1


async def _waiting_on_fills(owner_conn: asyncpg.Connection) -> bool:
    waiting: int = await owner_conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE relation = 'fills'::regclass AND NOT granted"
    )
    return waiting == 1


async def test_a_mailbox_hands_out_its_changes_in_batches_and_times_out_a_stale_one(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    feed = await feed_on(database, max_lag_seconds=0.3)
    try:
        subscriber = feed.subscribe()
        trader = uuid.uuid4()
        async with owner_conn.transaction():
            ids = [await submit_as_owner(owner_conn, trader) for _ in range(5)]
            await owner_conn.execute("UPDATE orders SET approved_at = now() WHERE id = $1", ids[0])
        batch: Any = await asyncio.wait_for(subscriber.take(3), TIMEOUT)
        # Oldest first, at most the limit; the repeat of the first order is coalesced.
        assert [c.order_id for c in batch] == ids[:3]
        assert all(isinstance(c, Changed) for c in batch)
        await asyncio.sleep(0.4)  # the two left wait longer than max_lag_seconds
        missed = await asyncio.wait_for(subscriber.take(3), TIMEOUT)
        assert isinstance(missed, Missed)
        assert (missed.reason, subscriber.pending, feed.lagged) == ("lagged", 0, 1)
    finally:
        await feed.stop()
