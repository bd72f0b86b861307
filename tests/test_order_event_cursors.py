"""orderEvents' cursors: malformed and forged ones refused, another trader's harmless, both
protocols, a null cursor; and eventsCursor read in its document's snapshot (issue 20).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event as sqla_event
from sqlalchemy.util import await_only

from tests.conftest import Db
from tests.test_order_events import (
    EVENTS,
    Events,
    events,
    events_cursor,
    insert_order,
)
from tests.test_subscriptions import LEGACY_WS, TRANSPORT_WS, Harness, connection, harness

# --- cursors --------------------------------------------------------------------------------


def forged(cursor: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[3] ^= 1  # another position, the MAC as it was
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


async def refused(
    h: Harness, token: str, after: str, protocol: str = TRANSPORT_WS
) -> dict[str, Any]:
    async with events(h, token, after=after, protocol=protocol) as stream:
        message = await stream.message()
        assert message["type"] == "error", message
        errors = message["payload"]
        error: dict[str, Any] = errors[0] if isinstance(errors, list) else errors
        return error


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_malformed_or_forged_cursor_is_bad_user_input(database: Db, protocol: str) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h:
        token = h.token(trader)
        good = await events_cursor(h, token)
        for bad in ("", "not a cursor", "AAAA", good[:-2], forged(good), good + "A"):
            error = await refused(h, token, bad, protocol)
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}, bad


async def test_a_cursor_of_another_traders_event_shows_only_the_callers_later_events(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with harness(database) as h:
        start = await events_cursor(h, h.token(alice))
        await insert_order(owner_conn, bob)
        async with events(h, h.token(bob), after=start) as stream:
            bobs = await stream.event()
        mine = await insert_order(owner_conn, alice)
        async with events(h, h.token(alice), after=bobs["cursor"]) as stream:
            event = await stream.event()
            assert event["log"]["orderId"] == str(mine)
            await stream.quiet(0.2)


async def test_the_legacy_protocol_delivers_events_too(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h:
        token = h.token(trader)
        start = await events_cursor(h, token)
        order_id = await insert_order(owner_conn, trader)
        async with events(h, token, after=start, protocol=LEGACY_WS) as stream:
            event = await stream.event()
            assert event["order"]["id"] == str(order_id)
            assert event["order"]["executionLogs"] == [{"id": event["log"]["id"]}]


async def test_a_null_cursor_starts_at_the_subscription_and_anon_is_refused(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    await insert_order(owner_conn, trader)  # before: not part of the stream
    async with harness(database) as h:
        async with events(h, h.token(trader)) as stream:
            await stream.quiet(0.2)
            later = await insert_order(owner_conn, trader)
            assert (await stream.event())["log"]["orderId"] == str(later)
        async with connection(h, None) as ws:
            payload = {"query": EVENTS, "variables": {}}
            await ws.send_json({"id": "1", "type": "subscribe", "payload": payload})
            message = await Events(ws, TRANSPORT_WS).message()
            assert message["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"


# --- eventsCursor ---------------------------------------------------------------------------


async def test_events_cursor_is_read_in_the_snapshot_of_the_rest_of_the_document(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    # An order commits after the document listed the orders and before it reads eventsCursor:
    # it is not in the document, so it must come after the cursor.
    trader = uuid.uuid4()
    first = await insert_order(owner_conn, trader)
    late: list[uuid.UUID] = []

    def commit_meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_current_snapshot" in statement and not late:
            late.append(await_only(insert_order(owner_conn, trader)))

    async with harness(database) as h:
        token = h.token(trader)
        engine = h.app.state.feed.database.engine.sync_engine
        sqla_event.listen(engine, "before_cursor_execute", commit_meanwhile)
        try:
            query = "{ orders(first: 10) { edges { node { id } } } eventsCursor }"
            listed = await h.gql(query, {}, token)
        finally:
            sqla_event.remove(engine, "before_cursor_execute", commit_meanwhile)
        assert [e["node"]["id"] for e in listed["orders"]["edges"]] == [str(first)]
        assert late
        async with events(h, token, after=listed["eventsCursor"]) as stream:
            assert (await stream.event())["log"]["orderId"] == str(late[0])
            await stream.quiet(0.2)


async def test_events_cursor_skips_the_rows_its_snapshot_showed_before_they_settled(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    # X (older, open) holds the snapshot's xmin; Y's row is committed and shown by the query
    # but not settled. The stream must not repeat Y's row, and must deliver X's.
    trader = uuid.uuid4()
    x = await asyncpg.connect(database.dsn())
    try:
        async with harness(database) as h:
            token = h.token(trader)
            x_tx = x.transaction()
            await x_tx.start()
            x_order = await insert_order(x, trader)
            y_order = await insert_order(owner_conn, trader)
            query = "{ orders(first: 10) { edges { node { id } } } eventsCursor }"
            listed = await h.gql(query, {}, token)
            assert [e["node"]["id"] for e in listed["orders"]["edges"]] == [str(y_order)]
            async with events(h, token, after=listed["eventsCursor"]) as stream:
                await stream.quiet(0.2)
                await x_tx.commit()
                assert (await stream.event())["log"]["orderId"] == str(x_order)
                await stream.quiet(0.2)
    finally:
        await x.close()
