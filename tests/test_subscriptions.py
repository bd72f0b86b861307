"""Live order updates: Subscription.orderUpdates over WebSocket, end to end on a real database.

The app runs in-process (httpx-ws's ASGI transport); changes are driven through the API's
mutations or plain SQL, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from sqlalchemy import event
from starlette.applications import Starlette

from alembic import command
from app.auth.jwt import mint_token
from app.db import change_feed
from app.db.change_feed import APPLICATION_NAME, Changed, ChangeFeed, Missed
from app.db.migrations import alembic_config
from app.main import create_app
from app.settings import Settings
from tests.api import api_settings, make_token
from tests.conftest import Db
from tests.sql import as_role

TIMEOUT = 5.0
TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"

UPDATES = """
subscription Updates($orderId: UUID) {
  orderUpdates(orderId: $orderId) {
    id traderId status filledQuantity
    fills { quantityFilled }
    ...Trail
  }
}
fragment Trail on Order { executionLogs { action } }
"""
SUBMIT = """
mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }
"""
APPROVE = "mutation($id: UUID!) { approveOrder(id: $id) { id } }"
FILL = """
mutation($id: UUID!, $q: Int!) {
  recordFill(input: {orderId: $id, quantityFilled: $q, priceAtFill: "10.50", venue: "Test"}) { id }
}
"""
CANCEL = 'mutation($id: UUID!) { cancelOrder(id: $id, reason: "changed my mind") { id } }'


# --- harness -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Harness:
    app: Starlette
    http: httpx.AsyncClient
    settings: Settings

    @property
    def changes(self) -> ChangeFeed:
        changes: ChangeFeed = self.app.state.changes
        return changes

    def token(self, sub: uuid.UUID | None = None, role: str = "authenticated") -> str:
        return make_token(self.settings, sub, role)

    async def gql(self, query: str, variables: dict[str, Any], token: str) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
        body: dict[str, Any] = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    async def submit(self, trader: uuid.UUID, symbol: str = "AAPL") -> str:
        data = await self.gql(
            SUBMIT,
            {"input": {"symbol": symbol, "side": "BUY", "quantity": 100, "orderType": "MARKET"}},
            self.token(trader),
        )
        order_id: str = data["submitOrder"]["id"]
        return order_id

    async def approve(self, order_id: str) -> None:
        await self.gql(APPROVE, {"id": order_id}, self.token(role="service_role"))

    async def fill(self, order_id: str, quantity: int) -> None:
        await self.gql(FILL, {"id": order_id, "q": quantity}, self.token(role="service_role"))

    async def cancel(self, trader: uuid.UUID, order_id: str) -> None:
        await self.gql(CANCEL, {"id": order_id}, self.token(trader))

    async def announced(self, count: int) -> None:
        """Waits until the change feed has read ``count`` changes (audit rows) in all. A change
        committed before a subscription may otherwise be read after it."""

        async def heard() -> bool:
            return self.changes.changes >= count

        await until(heard)

    async def subscribers(self, count: int) -> None:
        """Waits until the change feed holds ``count`` subscribers (registration is asynchronous)."""

        async def reached() -> bool:
            return self.changes.subscriber_count == count

        await until(reached)


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(TIMEOUT):
        # Polling: what is awaited here (registrations, pg_stat_activity) signals nothing.
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@asynccontextmanager
async def harness(database: Db, **overrides: Any) -> AsyncIterator[Harness]:
    settings = api_settings(database, **overrides)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        ASGIWebSocketTransport(app=app) as transport,
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        yield Harness(app=app, http=http, settings=settings)


class Stream:
    """One subscription on its own connection, read with bounded waits."""

    def __init__(self, ws: AsyncWebSocketSession, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol

    async def message(self) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = await self.ws.receive_json(timeout=TIMEOUT)
            if message["type"] not in ("ping", "pong", "ka"):
                return message

    async def next(self) -> dict[str, Any]:
        """The payload of the next event (``next``, or ``data`` in the legacy protocol)."""
        message = await self.message()
        assert message["type"] == ("next" if self.protocol == TRANSPORT_WS else "data"), message
        payload: dict[str, Any] = message["payload"]
        return payload

    async def order(self) -> dict[str, Any]:
        payload = await self.next()
        assert "errors" not in payload, payload
        order: dict[str, Any] = payload["data"]["orderUpdates"]
        return order


@asynccontextmanager
async def connection(
    h: Harness,
    token: str | None,
    *,
    protocol: str = TRANSPORT_WS,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[AsyncWebSocketSession]:
    """An acknowledged connection."""
    async with aconnect_ws(
        "http://test/graphql", h.http, subprotocols=[protocol], headers=headers or {}
    ) as ws:
        payload = {"Authorization": f"Bearer {token}"} if token else {}
        await ws.send_json({"type": "connection_init", "payload": payload})
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "connection_ack"
        yield ws


@asynccontextmanager
async def subscribed(
    h: Harness,
    token: str | None,
    order_id: str | None = None,
    *,
    protocol: str = TRANSPORT_WS,
    query: str = UPDATES,
) -> AsyncIterator[Stream]:
    async with connection(h, token, protocol=protocol) as ws:
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe" if protocol == TRANSPORT_WS else "start",
                "payload": {"query": query, "variables": {"orderId": order_id}},
            }
        )
        yield Stream(ws, protocol)


async def refusal(h: Harness, token: str, protocol: str = TRANSPORT_WS) -> tuple[int, list[Any]]:
    """How the server ends a connection_init carrying ``token``: close code, messages before."""
    seen: list[Any] = []
    async with aconnect_ws("http://test/graphql", h.http, subprotocols=[protocol]) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send_json(init)
        while True:
            try:
                seen.append(await ws.receive_json(timeout=TIMEOUT))
            except WebSocketDisconnect as closed:
                return closed.code, seen


def state(order: dict[str, Any]) -> tuple[str, int, str]:
    return order["status"], order["filledQuantity"], order["executionLogs"][-1]["action"]


# --- delivery ------------------------------------------------------------------------------------


async def test_two_traders_each_receive_only_their_own_updates_in_order(database: Db) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with (
        harness(database) as h,
        subscribed(h, h.token(alice)) as a,
        subscribed(h, h.token(bob)) as b,
    ):
        await h.subscribers(2)
        seen: dict[uuid.UUID, list[tuple[str, str, int, str]]] = {alice: [], bob: []}

        async def expect(trader: uuid.UUID, stream: Stream) -> None:
            order = await stream.order()
            assert order["traderId"] == str(trader)
            seen[trader].append((order["id"], *state(order)))

        first: dict[uuid.UUID, str] = {}
        second: dict[uuid.UUID, str] = {}
        # The two traders' changes interleave; each stream must hold exactly its own.
        for trader, stream in ((alice, a), (bob, b)):
            first[trader] = await h.submit(trader)
            await expect(trader, stream)
        for trader, stream in ((alice, a), (bob, b)):
            await h.approve(first[trader])
            await expect(trader, stream)
        for trader, stream in ((alice, a), (bob, b)):
            await h.fill(first[trader], 40)
            await expect(trader, stream)
        for trader, stream in ((alice, a), (bob, b)):
            await h.fill(first[trader], 60)
            await expect(trader, stream)
        for trader, stream in ((alice, a), (bob, b)):
            second[trader] = await h.submit(trader, "MSFT")
            await expect(trader, stream)
            await h.cancel(trader, second[trader])
            await expect(trader, stream)

        for trader in (alice, bob):
            o1, o2 = first[trader], second[trader]
            assert seen[trader] == [
                (o1, "PENDING", 0, "SUBMITTED"),
                (o1, "PENDING", 0, "APPROVED"),
                (o1, "PARTIAL", 40, "FILLED"),
                (o1, "FILLED", 100, "FILLED"),
                (o2, "PENDING", 0, "SUBMITTED"),
                (o2, "CANCELLED", 0, "CANCELLED"),
            ]
        # Nothing of the other trader is queued behind: the next message is the sentinel.
        sentinel = await h.submit(alice, "ZZZ")
        assert (await a.order())["id"] == sentinel
        sentinel = await h.submit(bob, "ZZZ")
        assert (await b.order())["id"] == sentinel


STATUS_ONLY = """
subscription Updates($orderId: UUID) { orderUpdates(orderId: $orderId) { id status filledQuantity } }
"""


async def test_a_change_the_subscription_does_not_select_is_not_sent_again(database: Db) -> None:
    # Approval changes nothing a status-only subscription shows (issue 23: identical
    # PENDING events before FILLED); the fill after it does, and arrives next.
    trader = uuid.uuid4()
    async with harness(database) as h, subscribed(h, h.token(trader), query=STATUS_ONLY) as s:
        await h.subscribers(1)
        order_id = await h.submit(trader)
        assert await s.order() == {"id": order_id, "status": "PENDING", "filledQuantity": 0}
        await h.approve(order_id)
        await h.fill(order_id, 40)
        assert await s.order() == {"id": order_id, "status": "PARTIAL", "filledQuantity": 40}
        await h.fill(order_id, 60)
        assert await s.order() == {"id": order_id, "status": "FILLED", "filledQuantity": 100}


async def test_fills_and_the_audit_trail_arrive_with_the_order(database: Db) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h:
        order_id = await h.submit(trader)
        await h.announced(1)
        async with subscribed(h, h.token(trader), order_id) as stream:
            await h.subscribers(1)
            await h.approve(order_id)
            assert state(await stream.order()) == ("PENDING", 0, "APPROVED")
            await h.fill(order_id, 25)
            order = await stream.order()
    assert order["id"] == order_id
    assert order["fills"] == [{"quantityFilled": 25}]
    assert [log["action"] for log in order["executionLogs"]] == ["SUBMITTED", "APPROVED", "FILLED"]


async def test_changes_made_with_plain_sql_as_service_role_reach_subscribers(
    database: Db, authenticator_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h, subscribed(h, h.token(trader)) as stream:
        await h.subscribers(1)
        async with as_role(authenticator_conn, "service_role", commit=True) as conn:
            order_id = await conn.fetchval(
                "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
                " VALUES ($1, 'IBM', 'SELL', 5, 'MARKET') RETURNING id",
                trader,
            )
        assert (await stream.order())["id"] == str(order_id)
        async with as_role(authenticator_conn, "service_role", commit=True) as conn:
            await conn.execute("UPDATE orders SET approved_at = now() WHERE id = $1", order_id)
            await conn.execute(
                "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
                " VALUES ($1, 5, 99, 'SQL')",
                order_id,
            )
        # One transaction, two announcements: the re-read shows the committed end state.
        assert state(await stream.order()) == ("FILLED", 5, "FILLED")


async def test_a_rolled_back_change_is_never_announced(
    database: Db, authenticator_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h, subscribed(h, h.token(trader)) as stream:
        await h.subscribers(1)
        async with as_role(authenticator_conn, "service_role", commit=False) as conn:
            await conn.execute(
                "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
                " VALUES ($1, 'NOPE', 'BUY', 1, 'MARKET')",
                trader,
            )
        sentinel = await h.submit(trader, "ZZZ")
        assert (await stream.order())["id"] == sentinel


async def test_compliance_auditor_receives_every_traders_updates(database: Db) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with harness(database) as h, subscribed(h, h.token(role="compliance_auditor")) as audit:
        await h.subscribers(1)
        ids = [await h.submit(alice), await h.submit(bob)]
        received = [await audit.order(), await audit.order()]
    assert [o["id"] for o in received] == ids
    assert [o["traderId"] for o in received] == [str(alice), str(bob)]


async def test_a_change_of_another_traders_order_never_reaches_a_subscriber(database: Db) -> None:
    # A subscription to one order is routed that order's announcements whoever owns it: the
    # compliance auditor's, routed the same way, receives Bob's changes below. For Alice's
    # subscription to Bob's order only the re-read under her own claims stands between her and
    # them, and row level security hides the order. Her subscription to all of her orders is
    # not even routed them (the trader id narrows the routing), and gets only her own.
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with harness(database) as h:
        bobs = await h.submit(bob)
        await h.announced(1)
        async with (
            subscribed(h, h.token(alice)) as a,
            subscribed(h, h.token(alice), bobs) as one,
            subscribed(h, h.token(role="compliance_auditor"), bobs) as audit,
        ):
            await h.subscribers(3)
            await h.approve(bobs)
            await h.fill(bobs, 10)
            # Every announcement of Bob's changes has been routed once the auditor sees the fill.
            while (seen := await audit.order())["filledQuantity"] != 10:
                assert seen["id"] == bobs
            sentinel = await h.submit(alice, "ZZZ")
            assert (await a.order())["id"] == sentinel
            # The one-order subscription to Bob's order got nothing at all: its next event is
            # the gap signal forced below, not Bob's order.
            h.changes._announce_gap()
            payload = await one.next()
            assert payload["data"] is None
            assert payload["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"


# --- authentication --------------------------------------------------------------------------


async def test_a_token_with_a_forged_signature_is_refused_with_4401(database: Db) -> None:
    async with harness(database) as h:
        forged = jwt.encode(
            {
                "sub": str(uuid.uuid4()),
                "role": "authenticated",
                "aud": "authenticated",
                "exp": int(datetime.now(UTC).timestamp()) + 600,
            },
            "another-secret-that-is-long-enough-for-hs256-000",
            algorithm="HS256",
        )
        code, seen = await refusal(h, forged)
        assert (code, seen) == (4401, [])
        code, seen = await refusal(h, forged, LEGACY_WS)
        assert code == 4401
        assert seen == [
            {
                "type": "connection_error",
                "payload": {
                    "message": "invalid token: bad signature",
                    "extensions": {"code": "UNAUTHENTICATED"},
                },
            }
        ]
        assert h.changes.subscriber_count == 0


async def test_an_expired_token_is_refused_with_4401(database: Db) -> None:
    async with harness(database) as h:
        expired = mint_token(
            h.settings, sub=uuid.uuid4(), now=datetime.now(UTC) - timedelta(hours=2)
        )
        assert (await refusal(h, expired))[0] == 4401


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_the_connection_closes_with_4401_when_the_token_expires(
    database: Db, protocol: str
) -> None:
    async with harness(database, jwt_leeway_seconds=0) as h:
        # exp may be fractional: the socket should close 0.8 s from now.
        expires = datetime.now(UTC).timestamp() + 0.8
        token = mint_token(h.settings, sub=uuid.uuid4(), extra={"exp": expires})
        async with subscribed(h, token, protocol=protocol) as stream:
            await h.subscribers(1)
            with pytest.raises(WebSocketDisconnect) as closed:
                await stream.message()
        assert (closed.value.code, closed.value.reason) == (4401, "Unauthorized: token expired")
        await h.subscribers(0)


async def test_a_subscription_without_a_token_fails_unauthenticated(database: Db) -> None:
    async with harness(database) as h, subscribed(h, None) as stream:
        message = await stream.message()
    assert message["type"] == "error"
    assert [e["extensions"]["code"] for e in message["payload"]] == ["UNAUTHENTICATED"]


async def test_the_upgrade_requests_authorization_header_is_accepted(database: Db) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h:
        headers = {"Authorization": f"Bearer {h.token(trader)}"}
        async with connection(h, None, headers=headers) as ws:
            await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": UPDATES}})
            await h.subscribers(1)
            order_id = await h.submit(trader)
            assert (await Stream(ws, TRANSPORT_WS).order())["id"] == order_id


async def test_the_legacy_graphql_ws_protocol_delivers_updates(database: Db) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h, subscribed(h, h.token(trader), protocol=LEGACY_WS) as s:
        await h.subscribers(1)
        order_id = await h.submit(trader)
        assert (await s.order())["id"] == order_id


async def test_queries_over_websocket_are_refused_with_bad_user_input(database: Db) -> None:
    async with harness(database) as h:
        query = "{ viewer { role } }"
        async with subscribed(h, h.token(uuid.uuid4()), query=query) as stream:
            message = await stream.message()
    assert message["type"] == "error"
    assert [e["extensions"]["code"] for e in message["payload"]] == ["BAD_USER_INPUT"]


# --- the change feed (migration 004) ---------------------------------------------------------


async def test_one_read_of_the_feed_serves_every_subscriber(database: Db) -> None:
    traders = [uuid.uuid4() for _ in range(4)]
    async with harness(database) as h, AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(subscribed(h, h.token(t)))
            for t in traders
            for _ in range(2)
        ]
        await h.subscribers(len(opened))
        before = h.changes.changes
        order_id = await h.submit(traders[0])
        assert [(await s.order())["id"] for s in opened[:2]] == [order_id, order_id]
        # One audit row (SUBMITTED), read once for eight subscribers.
        assert h.changes.changes == before + 1


async def test_the_feed_survives_an_outage_delivers_what_was_committed_and_signals_one_gap(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h:
        order_id = await h.submit(trader)
        await h.announced(1)
        async with (
            subscribed(h, h.token(trader)) as everything,
            subscribed(h, h.token(trader), order_id) as one,
        ):
            await h.subscribers(2)
            await h.approve(order_id)
            assert state(await everything.order()) == ("PENDING", 0, "APPROVED")
            assert state(await one.order()) == ("PENDING", 0, "APPROVED")

            # The feed cannot be read for a while (as after a restart); a fill commits meanwhile.
            outages = h.changes.outages
            await owner_conn.execute("REVOKE SELECT ON execution_logs FROM authenticator")

            async def down() -> bool:
                return h.changes.outages == outages + 1

            await until(down)
            await h.fill(order_id, 100)
            await asyncio.sleep(0.3)  # several failed reads: still one outage
            await owner_conn.execute(
                "GRANT SELECT (seq, order_id, trader_id) ON execution_logs TO authenticator"
            )
            for stream in (everything, one):
                gap = await stream.next()
                assert gap["data"] is None
                assert gap["errors"] == [
                    {
                        "message": "updates may have been missed; re-query",
                        "locations": [{"line": 3, "column": 3}],
                        "path": ["orderUpdates"],
                        "extensions": {"code": "SERVICE_UNAVAILABLE", "reason": "UPDATES_MISSED"},
                    }
                ]
            # The one-order subscription is made whole again without asking (it shows the fill
            # committed during the outage); the other re-queries, and its stream goes on.
            assert state(await one.order()) == ("FILLED", 100, "FILLED")
            later = await h.submit(trader)
            assert (await everything.order())["id"] == later
            assert h.changes.outages == outages + 1


async def feed_on(database: Db, **options: Any) -> ChangeFeed:
    feed = ChangeFeed(database.dsn("authenticator"), **options)
    await feed.start()
    await feed.until_connected()
    return feed


async def submit_as_owner(owner_conn: asyncpg.Connection, trader: uuid.UUID) -> uuid.UUID:
    order_id: uuid.UUID = await owner_conn.fetchval(
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
        " VALUES ($1, 'IBM', 'BUY', 1, 'MARKET') RETURNING id",
        trader,
    )
    return order_id


def scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's nodes that read a table, depth first."""
    found = [node] if "Relation Name" in node else []
    for child in node.get("Plans", []):
        found += scans(child)
    return found


@pytest.mark.parametrize("plan_cache_mode", ["force_generic_plan", "force_custom_plan"])
async def test_a_caught_up_read_of_the_feed_is_an_index_range_scan_not_a_walk_of_the_trail(
    owner_conn: asyncpg.Connection, authenticator_conn: asyncpg.Connection, plan_cache_mode: str
) -> None:
    # The feed polls forever, caught up most of the time: every scan of the audit trail in its
    # read must be bounded by an index condition on seq. "seq > $1 OR seq = ANY($2)" was an
    # ordered walk of the whole index with a filter: 9.5 s per poll at 3,500,000 audit rows.
    for _ in range(3):
        await submit_as_owner(owner_conn, uuid.uuid4())
    high = await owner_conn.fetchval("SELECT max(seq) FROM execution_logs")
    # A table this small would be read whole anyway: forbid that, so that the plan shows
    # whether an index condition can serve the read at all.
    await authenticator_conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
    await authenticator_conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
    await authenticator_conn.execute(
        f"PREPARE feed_read(bigint, bigint[], int) AS {change_feed._READ}"
    )
    try:
        for args in (f"{high}, '{{}}'", f"{high - 1}, '{{{high - 2}}}'"):  # caught up; a hole
            document = await authenticator_conn.fetchval(
                f"EXPLAIN (FORMAT JSON) EXECUTE feed_read({args}, 1000)"
            )
            plan = json.loads(document)[0]["Plan"]
            reads = scans(plan)
            assert reads, plan
            for read in reads:
                assert read["Relation Name"] == "execution_logs"
                assert "seq" in read.get("Index Cond", ""), read
                assert "Filter" not in read, read
    finally:
        await authenticator_conn.execute("DEALLOCATE feed_read; RESET ALL")


async def test_a_lagging_subscriber_is_emptied_and_told_it_missed_updates(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    feed = await feed_on(database, mailbox_capacity=3)
    try:
        slow = feed.subscribe()
        changes = feed.changes
        trader = uuid.uuid4()
        first = await submit_as_owner(owner_conn, trader)
        await owner_conn.execute("UPDATE orders SET approved_at = now() WHERE id = $1", first)
        for _ in range(3):
            await submit_as_owner(owner_conn, trader)

        async def read_all() -> bool:
            return feed.changes >= changes + 5 or bool(slow.lagged_count)

        await until(read_all)
        # The slow subscriber coalesced the repeat of the first order, took three orders and
        # overflowed on the fourth.
        event = await asyncio.wait_for(slow.get(), TIMEOUT)
        assert isinstance(event, Missed)
        assert event.reason == "lagged"
        assert (slow.pending, slow.lagged_count, feed.lagged) == (0, 1, 1)
        later = await submit_as_owner(owner_conn, trader)
        event = await asyncio.wait_for(slow.get(), TIMEOUT)
        assert isinstance(event, Changed)
        assert event.order_id == later
        slow.close()
        assert feed.subscriber_count == 0
    finally:
        await feed.stop()


async def test_a_change_that_commits_after_a_later_one_is_not_lost(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    # Positions are taken at insert and become visible at commit: the earlier position commits
    # last here, below a position the feed has already read.
    feed = await feed_on(database)
    late = await asyncpg.connect(database.dsn())
    try:
        subscriber = feed.subscribe()
        trader = uuid.uuid4()
        transaction = late.transaction()
        await transaction.start()
        slow_order = await submit_as_owner(late, trader)
        quick_order = await submit_as_owner(owner_conn, trader)
        event = await asyncio.wait_for(subscriber.get(), TIMEOUT)
        assert isinstance(event, Changed)
        assert event.order_id == quick_order
        await transaction.commit()
        event = await asyncio.wait_for(subscriber.get(), TIMEOUT)
        assert isinstance(event, Changed)
        assert event.order_id == slow_order
    finally:
        await late.close()
        await feed.stop()


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_listening_on_the_old_channel_learns_nothing(
    database: Db, owner_conn: asyncpg.Connection, role: str
) -> None:
    # Any role may LISTEN on any channel: nothing about orders may be sent on one.
    listener = await asyncpg.connect(database.dsn("authenticator"))
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.execute("SELECT set_config('role', $1, false)", role)
        await listener.add_listener("order_changes", lambda *args: heard.put_nowait(args[3]))
        order_id = await submit_as_owner(owner_conn, uuid.uuid4())
        await owner_conn.execute("UPDATE orders SET status = 'CANCELLED' WHERE id = $1", order_id)
        await asyncio.sleep(0.3)
        assert heard.empty()
        triggers = await owner_conn.fetch(
            "SELECT tgname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
            " WHERE NOT t.tgisinternal AND p.prosrc ILIKE '%notify%'"
        )
        assert triggers == []
    finally:
        await listener.close()


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role", "compliance_auditor"])
async def test_only_the_login_role_reads_the_feed_columns_beyond_the_policies(
    database: Db, owner_conn: asyncpg.Connection, authenticator_conn: asyncpg.Connection, role: str
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    for trader in (alice, bob):
        await submit_as_owner(owner_conn, trader)
    # The login role itself: positions and identifiers of every change, nothing else.
    assert (
        len(await authenticator_conn.fetch("SELECT seq, order_id, trader_id FROM execution_logs"))
        == 2
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await authenticator_conn.fetch("SELECT reason FROM execution_logs")
    # An application role sees exactly what its own policies show it, the feed changes nothing.
    claims = json.dumps({"sub": str(alice), "role": role})
    async with authenticator_conn.transaction():
        await authenticator_conn.execute(
            "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            role,
            claims,
        )
        seen = await authenticator_conn.fetch("SELECT trader_id FROM execution_logs")
    expected = {"anon": [], "authenticated": [alice]}.get(role, [alice, bob])
    assert sorted(r["trader_id"] for r in seen) == sorted(expected)


async def test_the_downgrade_to_001_restores_its_announcements_and_the_upgrade_removes_them(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    config = alembic_config(database.owner_url.render_as_string(hide_password=False))
    exists = (
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'orders_announce_change'"
        " AND tgrelid = 'orders'::regclass"
    )
    assert await owner_conn.fetchval(exists) == 0
    # Alembic's env runs its own event loop: give it a thread.
    await asyncio.to_thread(command.downgrade, config, "001")
    assert await owner_conn.fetchval(exists) == 1
    assert (
        await owner_conn.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'execution_logs' AND column_name = 'seq'"
        )
        == 0
    )
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await owner_conn.fetchval(exists) == 0


async def test_a_feed_stopped_while_it_connects_leaves_no_connection_behind(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    # Short-lived apps (and tests) stop their feed while its first connection is being made.
    for delay in (0, 0.001, 0.003, 0.01, 0.03):
        feed = ChangeFeed(database.dsn("authenticator"))
        await feed.start()
        await asyncio.sleep(delay)
        await feed.stop()

    async def none_left() -> bool:
        count: int = await owner_conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
        return count == 0

    await until(none_left)


async def test_a_read_in_flight_at_shutdown_gives_its_connection_back_before_the_pool_closes(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    # A subscriber's re-read runs in a task of its own, shielded from the subscribers sharing
    # it, so it can outlive them all. Through PgBouncer a shutdown used to dispose of the pool
    # while one still ran (the re-reads after the gap signal in
    # test_a_change_of_another_traders_order_never_reaches_a_subscriber): its connection then
    # went back to a pool nobody would close, and stayed open at the pooler until garbage
    # collection. Here the read is held on a lock until the shutdown has begun.
    trader = uuid.uuid4()
    snapshot = UPDATES.replace(
        "orderUpdates(orderId: $orderId)", "orderUpdates(orderId: $orderId, snapshot: true)"
    )
    stack = AsyncExitStack()
    h = await stack.enter_async_context(harness(database))
    used: list[Any] = []
    event.listen(
        h.app.state.database.engine.sync_engine,
        "checkout",
        lambda _dbapi, record, _proxy: used.append(record.driver_connection),
    )
    order_id = await h.submit(trader)
    lock = owner_conn.transaction()
    await lock.start()
    await owner_conn.execute("LOCK TABLE fills IN ACCESS EXCLUSIVE MODE")

    async def read_waiting() -> bool:
        waiting: int = await owner_conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE relation = 'fills'::regclass AND NOT granted"
        )
        return waiting == 1

    async def release_once_shutting_down() -> None:
        await asyncio.sleep(0.3)  # the shutdown has reached the read (before the fix: disposed)
        await lock.rollback()

    try:
        async with subscribed(h, h.token(trader), order_id, query=snapshot):
            await until(read_waiting)
    except BaseException:
        await lock.rollback()
        await stack.aclose()
        raise
    release = asyncio.create_task(release_once_shutting_down())
    async with asyncio.timeout(TIMEOUT):
        await stack.aclose()  # the harness's lifespan ends: the server shuts down
        await release

    async def read_done() -> bool:
        return h.app.state.feed.reading == 0

    await until(read_done)
    assert used
    assert all(conn.is_closed() for conn in used), "a connection outlived the pool"
