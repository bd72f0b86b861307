"""Issue 18 parts 3, 4 and 6: what a writer may set, the API refuses or the database does, alike.

- Every timestamp a writer sets lies within one horizon of now (validation.HORIZON, the
  database's public.timestamp_horizon(), migration 009): the API answers BAD_USER_INPUT
  naming the field and writes nothing; plain SQL as each role that may write is refused
  (SQLSTATE OA422 naming the same field), 'infinity' and the year 50000 included. So no
  row the database accepts breaks a reader.
- A cursor whose timestamp leaves the years 1 to 9999 in UTC is BAD_USER_INPUT on ``after``
  for every role, compiled or not; a compiled read that fails has the resolvers' shape.
- No fill is dated after the database's clock (migration 017, five seconds of clock skew
  allowed), as the API refuses one dated after its own: plain SQL as service_role too.
- A request is JSON only if it says application/json; two Authorization headers are refused.
The submit cases through both paths are in tests/test_compiled_mutations.py, the order rules
both ways (API and plain SQL, plain PostgreSQL and Supabase) in tests/test_order_rules.py.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws

from app.orders import validation
from tests import pg, privileges
from tests.api import Client, api_client, api_settings, graphql_endpoint
from tests.conftest import Db
from tests.revisions import round_trip
from tests.sql import as_role
from tests.test_migrations import alembic
from tests.test_statement_timeouts import orders_locked
from tests.test_subscriptions import LEGACY_WS, TRANSPORT_WS, harness

SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"
APPROVE = "mutation($id: UUID!) { approveOrder(id: $id) { id } }"
FILL = (
    "mutation($id: UUID!, $at: DateTime) { recordFill(input: {orderId: $id, quantityFilled: 1,"
    ' priceAtFill: "10.00", venue: "NYSE", timestamp: $at}) { id } }'
)
LIMIT = {"symbol": "AAPL", "side": "BUY", "quantity": 10, "orderType": "LIMIT", "price": "10.00"}
ORDERS = "query($after: String) { orders(first: 2, after: $after) { edges { node { id } } } }"
LOGS = "query($after: String) { executionLogs(first: 2, after: $after) { edges { cursor } } }"
ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
WRITERS = ("authenticated", "service_role")


def cursor(at: str) -> str:
    raw = f"{at}|{uuid.uuid4()}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token(client: Client, role: str) -> str | None:
    if role == "anon":
        return None
    sub = uuid.uuid4() if role == "authenticated" else None
    return client.token(sub, role)


async def approved_order(client: Client) -> tuple[str, str]:
    """A new trader's order, submitted and approved: its id and the engine's token."""
    body = await client.gql(SUBMIT, {"input": LIMIT}, token=client.token(uuid.uuid4()))
    order_id: str = body["data"]["submitOrder"]["id"]
    engine = client.token(None, "service_role")
    assert "errors" not in await client.gql(APPROVE, {"id": order_id}, token=engine)
    return order_id, engine


@pytest.fixture
async def two(database: Db) -> AsyncIterator[tuple[Client, Client]]:
    """The resolvers alone, and an app whose compiled paths are on."""
    only = api_settings(database, compiled_queries=False, compiled_mutations=False)
    async with api_client(only) as resolvers, api_client(api_settings(database)) as fast:
        yield resolvers, fast


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    for error in body.get("errors") or []:
        error["extensions"].pop("requestId", None)
    return body


# --- one horizon -------------------------------------------------------------------------


async def test_the_api_and_the_database_state_the_same_horizon(
    owner_conn: asyncpg.Connection,
) -> None:
    seconds = await owner_conn.fetchval("SELECT extract(epoch FROM public.timestamp_horizon())")
    assert seconds == validation.HORIZON.total_seconds()
    # Far inside Python's datetime for as long as this code may run.
    assert datetime(9000, 1, 1, tzinfo=UTC) + validation.HORIZON < datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize("role", WRITERS)
@pytest.mark.parametrize(
    "expires_at",
    [
        "'infinity'",
        "'-infinity'",
        "'50000-01-01'",
        "'9999-12-31T23:59:59-14:00'",  # 10000-01-01 13:59:59+00
        "now() + public.timestamp_horizon() + interval '1 second'",
    ],
)
async def test_plain_sql_may_not_write_an_expiry_beyond_the_horizon(
    authenticator_conn: asyncpg.Connection, role: str, expires_at: str
) -> None:
    trader = uuid.uuid4()
    insert = (
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price, expires_at)"
        " VALUES ($1, 'AAPL', 'BUY', 1, 'LIMIT', 10, {})"
    )
    with pytest.raises(asyncpg.PostgresError) as refused:
        async with as_role(authenticator_conn, role, trader) as conn:
            await conn.execute(insert.format(expires_at), trader)
    assert (refused.value.sqlstate, refused.value.column_name) == ("OA422", "expiresAt")
    # The same row within the horizon is written: the refusal is the horizon's.
    async with as_role(authenticator_conn, role, trader) as conn:
        near = "now() + public.timestamp_horizon() - interval '1 minute'"
        await conn.execute(insert.format(near), trader)


@pytest.mark.parametrize("value", ["'infinity'", "'0001-01-01 00:00:00+14:00'", "'50000-01-01'"])
async def test_the_engine_may_not_set_its_times_beyond_the_horizon_in_plain_sql(
    database: Db, authenticator_conn: asyncpg.Connection, value: str
) -> None:
    async with api_client(api_settings(database)) as client:
        order_id = uuid.UUID((await approved_order(client))[0])
    with pytest.raises(asyncpg.PostgresError) as refused:
        async with as_role(authenticator_conn, "service_role") as conn:
            await conn.execute(f"UPDATE orders SET routed_at = {value} WHERE id = $1", order_id)
    assert (refused.value.sqlstate, refused.value.column_name) == ("OA422", "routedAt")
    with pytest.raises(asyncpg.PostgresError) as refused:
        async with as_role(authenticator_conn, "service_role") as conn:
            await conn.execute(
                'INSERT INTO fills (order_id, "timestamp", quantity_filled, price_at_fill, venue)'
                f" VALUES ($1, {value}, 1, 10, 'NYSE')",
                order_id,
            )
    assert (refused.value.sqlstate, refused.value.column_name) == ("OA422", "timestamp")


@pytest.mark.parametrize(
    ("at", "field"),
    [
        ("0001-01-01T00:00:00+14:00", "timestamp"),  # before the year 1 in UTC
        ("2001-01-01T00:00:00Z", "timestamp"),  # more than the horizon ago
    ],
)
async def test_record_fill_refuses_a_timestamp_beyond_the_horizon(
    database: Db, owner_conn: asyncpg.Connection, at: str, field: str
) -> None:
    async with api_client(api_settings(database)) as client:
        order_id, engine = await approved_order(client)
        body = await client.gql(FILL, {"id": order_id, "at": at}, token=engine)
        [error] = body["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, error
        recent = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        assert "errors" not in await client.gql(FILL, {"id": order_id, "at": recent}, token=engine)
    assert await owner_conn.fetchval("SELECT count(*) FROM fills") == 1


async def test_plain_sql_may_not_date_a_fill_in_the_future(
    database: Db, authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        order_id = uuid.UUID((await approved_order(client))[0])
    insert = (
        'INSERT INTO fills (order_id, "timestamp", quantity_filled, price_at_fill, venue)'
        " VALUES ($1, clock_timestamp() + $2, 1, 10, 'NYSE')"
    )
    for ahead in (timedelta(minutes=1), timedelta(seconds=6)):
        with pytest.raises(asyncpg.PostgresError) as refused:
            async with as_role(authenticator_conn, "service_role") as conn:
                await conn.execute(insert, order_id, ahead)
        error = refused.value
        assert (error.sqlstate, error.column_name) == ("OA422", "timestamp"), ahead
        assert error.message == "timestamp cannot be in the future"
    assert await owner_conn.fetchval("SELECT count(*) FROM fills") == 0
    # A clock a little ahead of the database's (another host's) is not the future.
    async with as_role(authenticator_conn, "service_role", commit=True) as conn:
        await conn.execute(insert, order_id, timedelta(seconds=2))
    assert await owner_conn.fetchval("SELECT count(*) FROM fills") == 1


async def test_the_api_refuses_a_fill_a_minute_ahead_of_its_clock(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        order_id, engine = await approved_order(client)
        ahead = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        body = await client.gql(FILL, {"id": order_id, "at": ahead}, token=engine)
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "timestamp"}, error
    assert error["message"] == "timestamp cannot be in the future"


# --- cursors and the compiled read path's errors -----------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("document", [ORDERS, LOGS], ids=["orders", "executionLogs"])
@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_a_cursor_out_of_range_is_bad_user_input_on_after_both_ways(
    two: tuple[Client, Client], role: str, document: str, at: str
) -> None:
    resolvers, fast = two
    assert "errors" not in await fast.gql(document, {}, token=token(fast, role))
    assert (document, None) in graphql_endpoint(fast.app).compiled.plans
    bodies = []
    for client in (resolvers, fast):
        response = await client.post(document, {"after": cursor(at)}, token=token(client, role))
        assert response.status_code == 200
        bodies.append(response.json())
    [error] = bodies[0]["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}
    assert bodies[1] == bodies[0]


async def test_a_compiled_read_that_fails_has_the_resolvers_error_shape(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    timeout = {"statement_timeout_ms": 300}
    only = api_settings(database, compiled_queries=False, **timeout)
    document = "{ mine: orders(first: 5) { edges { node { id } } } }"
    async with api_client(only) as resolvers, api_client(api_settings(database, **timeout)) as fast:
        caller = uuid.uuid4()
        assert "errors" not in await fast.gql(document, token=fast.token(caller))
        async with orders_locked(owner_conn):
            bodies = [
                (await client.post(document, token=client.token(caller))).json()
                for client in (resolvers, fast)
            ]
    [error] = bodies[0]["errors"]
    assert error["path"] == ["mine"], error
    assert error["locations"], error
    assert without_request_id(bodies[1]) == without_request_id(bodies[0])


# --- media type and credentials ------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/jsonx",
        "application/json-seq",
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/application/json",
        "application/json; charset=latin-1",
        "Application/JSON",  # Strawberry's test is case-sensitive; so is ours, to agree
        None,
    ],
)
async def test_a_body_not_declared_as_json_is_refused_with_415(
    two: tuple[Client, Client], content_type: str | None
) -> None:
    query = b'{"query": "{ viewer { role } }"}'
    for client in two:
        assert "errors" not in await client.gql("{ viewer { role } }")  # learned, on fast
        headers = {"content-type": content_type} if content_type else {}
        response = await client.http.post("/graphql", content=query, headers=headers)
        assert response.status_code == 415, response.text
        [error] = response.json()["errors"]
        assert "application/json" in error["message"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT"}


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=UTF-8", "application/json;"]
)
async def test_application_json_with_or_without_parameters_is_accepted(
    two: tuple[Client, Client], content_type: str
) -> None:
    for client in two:
        response = await client.http.post(
            "/graphql",
            content=b'{"query": "{ viewer { role } }"}',
            headers={"content-type": content_type},
        )
        assert response.json() == {"data": {"viewer": {"role": "anon"}}}


@pytest.mark.parametrize("same", [True, False], ids=["the same token", "two tokens"])
async def test_two_authorization_headers_are_refused_with_401(
    two: tuple[Client, Client], same: bool
) -> None:
    for client in two:
        first = client.token(uuid.uuid4())
        second = first if same else client.token(uuid.uuid4())
        assert "errors" not in await client.gql("{ viewer { role } }", token=first)
        response = await client.http.post(
            "/graphql",
            json={"query": "{ viewer { role } }"},
            headers=[("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")],
        )
        assert response.status_code == 401, response.text
        [error] = response.json()["errors"]
        assert error["message"] == (
            "invalid token: more than one Authorization header: send exactly one credential"
        )
        assert error["extensions"] == {"code": "UNAUTHENTICATED"}


async def until_closed(ws: AsyncWebSocketSession) -> None:
    while True:  # the legacy protocol sends connection_error before it closes
        await ws.receive_json(timeout=5)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_websocket_upgrade_with_two_authorization_headers_is_refused(
    database: Db, protocol: str
) -> None:
    async with harness(database) as h:
        bearer = f"Bearer {h.token(uuid.uuid4())}"
        headers = httpx.Headers([("Authorization", bearer), ("Authorization", bearer)])
        async with aconnect_ws(
            "http://test/graphql", h.http, subprotocols=[protocol], headers=headers
        ) as ws:
            await ws.send_json({"type": "connection_init", "payload": {}})
            with pytest.raises(WebSocketDisconnect) as closed:
                await until_closed(ws)
        assert closed.value.code == 4401
        assert "more than one Authorization header" in (closed.value.reason or "")


# --- the migration ---------------------------------------------------------------------------


async def test_the_downgrade_of_009_gives_back_008_exactly(cluster: pg.Cluster) -> None:
    trip = await round_trip(cluster, "008", "009")
    assert trip.after != trip.before
    assert "Running downgrade 009 -> 008" in trip.downgrade_log
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)


async def test_the_upgrade_refuses_rows_no_reader_can_decode(cluster: pg.Cluster) -> None:
    database = Db(cluster, await pg.create_empty_database(cluster))
    try:
        assert alembic(database, "upgrade", "008").returncode == 0
        conn = await asyncpg.connect(database.dsn())
        try:
            await conn.execute(
                "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price,"
                " expires_at) VALUES ($1, 'AAPL', 'BUY', 1, 'LIMIT', 10, 'infinity')",
                uuid.uuid4(),
            )
        finally:
            await conn.close()
        up = alembic(database, "upgrade", "009")
        assert up.returncode != 0
        assert "orders.expires_at: 1 rows" in up.stderr, up.stderr
    finally:
        await pg.drop_test_database(cluster, database.name)


async def test_the_downgrade_of_017_gives_back_what_came_before(cluster: pg.Cluster) -> None:
    trip = await round_trip(cluster, "016", "017")
    assert "Running downgrade 017 -> 016" in trip.downgrade_log
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)
