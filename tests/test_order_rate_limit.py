"""order_limits.max_orders_per_minute (migration 015): each trader's order rate.

Through the API (HTTP 429, RATE_LIMITED, retryAfterSeconds and Retry-After) and with plain
SQL as ``authenticated`` and ``service_role``: the database refuses the order over the rate
for every writer and writes nothing; replacements count, the engine's writes do not; a
trader at its limit never makes another trader wait. The compiled submitOrder gives the
resolvers' answer (tests/test_compiled_mutations.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from graphql import GraphQLError

from app.graphql import errors
from app.orders.errors import RateLimited
from tests import pg, privileges
from tests.api import Client, api_client, api_settings
from tests.conftest import Db
from tests.order_limits import CANCEL, INSERT, LIMIT, REPLACE, SUBMIT, insert_as, submit
from tests.revisions import round_trip
from tests.sql import as_role

TRADER = uuid.UUID("7b0c1f9e-0000-4000-8000-0000000000d1")
OTHER = uuid.UUID("7b0c1f9e-0000-4000-8000-0000000000d2")
RATE_MESSAGE = "order_limits.max_orders_per_minute"

APPROVE = "mutation($id: UUID!) { approveOrder(id: $id) { status } }"
FILL = (
    "mutation($id: UUID!) { recordFill(input: {orderId: $id, quantityFilled: 4,"
    ' priceAtFill: "10.00", venue: "TEST"}) { quantityFilled } }'
)


async def set_rate(owner: asyncpg.Connection, per_minute: int | None) -> None:
    await owner.execute("UPDATE order_limits SET max_orders_per_minute = $1", per_minute)


async def count(owner: asyncpg.Connection, trader: uuid.UUID) -> int:
    counted: int = await owner.fetchval("SELECT count(*) FROM orders WHERE trader_id = $1", trader)
    return counted


@pytest.fixture
async def client(database: Db) -> AsyncIterator[Client]:
    async with api_client(api_settings(database)) as api:
        yield api


# --- through the API --------------------------------------------------------------------------


async def test_an_order_over_the_rate_is_429_rate_limited_with_retry_after_and_writes_nothing(
    client: Client, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 3)
    for _ in range(3):
        assert "errors" not in await submit(client, TRADER)

    response = await client.post(SUBMIT, {"input": LIMIT}, token=client.token(TRADER))

    assert response.status_code == 429
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert set(error["extensions"]) == {"code", "retryAfterSeconds"}
    retry_after = error["extensions"]["retryAfterSeconds"]
    # The first order was placed a moment ago: its place frees in (almost) a minute.
    assert isinstance(retry_after, int)
    assert 55 <= retry_after <= 60
    assert response.headers["Retry-After"] == str(retry_after)
    assert RATE_MESSAGE in error["message"]
    assert "at most 3" in error["message"]
    assert await count(owner_conn, TRADER) == 3
    # Another trader has a window of its own.
    assert "errors" not in await submit(client, OTHER)


async def test_retry_after_is_when_the_oldest_order_in_the_window_leaves_it(
    client: Client, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 2)
    oldest, newest = [(await submit(client, TRADER))["data"]["submitOrder"]["id"] for _ in "ab"]
    # Backdated past orders_lifecycle (which stamps created_at and keeps it): the oldest
    # was placed 50 s ago, the newest 20 s ago.
    await owner_conn.execute("SET session_replication_role = replica")
    for order_id, age in ((oldest, 50), (newest, 20)):
        await owner_conn.execute(
            "UPDATE orders SET created_at = now() - make_interval(secs => $2) WHERE id = $1",
            uuid.UUID(order_id),
            age,
        )
    await owner_conn.execute("SET session_replication_role = origin")

    refused = await client.post(SUBMIT, {"input": LIMIT}, token=client.token(TRADER))
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["extensions"]["retryAfterSeconds"] in (10, 11)
    assert refused.headers["Retry-After"] in ("10", "11")

    # Once the oldest has left the window, a place is free again.
    await owner_conn.execute("SET session_replication_role = replica")
    await owner_conn.execute(
        "UPDATE orders SET created_at = now() - interval '61 seconds' WHERE id = $1",
        uuid.UUID(oldest),
    )
    await owner_conn.execute("SET session_replication_role = origin")
    assert "errors" not in await submit(client, TRADER)


async def test_a_document_whose_second_order_is_over_the_rate_writes_neither(
    client: Client, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 1)
    both = (
        "mutation($input: SubmitOrderInput!) {"
        " a: submitOrder(input: $input) { id } b: submitOrder(input: $input) { id } }"
    )

    response = await client.post(both, {"input": LIMIT}, token=client.token(TRADER))

    assert response.status_code == 429
    assert response.json()["data"] is None
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["RATE_LIMITED"]
    assert await count(owner_conn, TRADER) == 0


def test_over_websocket_the_error_carries_the_same_extensions_as_over_http() -> None:
    # Orders are submitted over HTTP only (WebSocket serves subscriptions); the one builder
    # of error bodies gives the WebSocket handlers the same extensions.
    refused = GraphQLError("too many", path=["submitOrder"], original_error=RateLimited("x", 7))
    over_http = errors.format_error(refused, "r1")
    over_websocket = errors.contract_error(refused, "r1").formatted

    assert over_http["extensions"] == {"code": "RATE_LIMITED", "retryAfterSeconds": 7}
    assert over_websocket["extensions"] == over_http["extensions"]
    assert errors.http_status([refused]) == 429
    assert errors.http_headers([refused]) == {"Retry-After": "7"}


async def test_without_a_limit_a_trader_may_submit_any_number_of_orders(
    client: Client, owner_conn: asyncpg.Connection
) -> None:
    assert await owner_conn.fetchval("SELECT max_orders_per_minute FROM order_limits") is None
    for _ in range(5):
        assert "errors" not in await submit(client, TRADER)


async def test_replacements_count_as_orders_and_are_refused_over_the_rate(
    client: Client, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 3)
    first, second = [(await submit(client, TRADER))["data"]["submitOrder"]["id"] for _ in "ab"]
    replaced = await client.gql(
        REPLACE, {"id": first, "input": {"price": "11.00"}}, token=client.token(TRADER)
    )
    assert replaced["data"]["replaceOrder"]["status"] == "PENDING", replaced

    # Three orders in the window (two and a replacement): a new order and a replacement of
    # the second are over the rate, and neither is written.
    response = await client.post(SUBMIT, {"input": LIMIT}, token=client.token(TRADER))
    assert response.status_code == 429
    again = await client.post(
        REPLACE, {"id": second, "input": {"price": "12.00"}}, token=client.token(TRADER)
    )
    assert again.status_code == 429, again.text
    [error] = again.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert again.headers["Retry-After"] == str(error["extensions"]["retryAfterSeconds"])
    assert await count(owner_conn, TRADER) == 3


async def test_an_idempotent_repeat_at_the_limit_answers_the_order_placed_before(
    client: Client, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 1)
    placed = await submit(client, TRADER, clientOrderId="once")

    repeated = await submit(client, TRADER, clientOrderId="once")

    assert repeated["data"]["submitOrder"]["id"] == placed["data"]["submitOrder"]["id"]
    assert await count(owner_conn, TRADER) == 1


async def test_the_engines_writes_and_a_cancel_are_never_limited(
    client: Client, owner_conn: asyncpg.Connection, authenticator_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 2)
    first, second = [(await submit(client, TRADER))["data"]["submitOrder"]["id"] for _ in "ab"]
    engine = client.token(None, "service_role")

    assert "errors" not in await client.gql(APPROVE, {"id": first}, token=engine)
    assert "errors" not in await client.gql(FILL, {"id": first}, token=engine)
    # The engine's own cancel (an expiry, a venue's cancel) is an update as service_role.
    async with as_role(authenticator_conn, "service_role", commit=True):
        await authenticator_conn.execute(
            "UPDATE orders SET status = 'CANCELLED', status_reason = 'venue' WHERE id = $1",
            uuid.UUID(first),
        )
    cancelled = await client.gql(CANCEL, {"id": second}, token=client.token(TRADER))
    assert cancelled["data"]["cancelOrder"]["status"] == "CANCELLED"

    # Both orders still count: the trader's next order is over the rate all the same.
    assert (
        await client.post(SUBMIT, {"input": LIMIT}, token=client.token(TRADER))
    ).status_code == 429


async def test_the_limit_must_be_positive_or_null(owner_conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await set_rate(owner_conn, 0)


# --- plain SQL, as each writer ----------------------------------------------------------------


@pytest.mark.parametrize("role", ["authenticated", "service_role"])
async def test_plain_sql_over_the_rate_is_refused_for_every_writer_and_writes_nothing(
    role: str, authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 2)
    for _ in range(2):
        await insert_as(authenticator_conn, role, TRADER)
    audit_rows = await owner_conn.fetchval("SELECT count(*) FROM execution_logs")

    with pytest.raises(asyncpg.PostgresError, match=RATE_MESSAGE) as refused:
        await insert_as(authenticator_conn, role, TRADER)

    assert refused.value.sqlstate == "OA429"
    assert 55 <= int(refused.value.detail) <= 60
    assert await count(owner_conn, TRADER) == 2
    assert await owner_conn.fetchval("SELECT count(*) FROM execution_logs") == audit_rows
    await insert_as(authenticator_conn, role, OTHER)


async def test_one_statement_inserting_several_orders_counts_each(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 2)
    with pytest.raises(asyncpg.PostgresError, match=RATE_MESSAGE):
        async with as_role(authenticator_conn, "authenticated", TRADER, commit=True):
            await authenticator_conn.execute(
                "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
                " SELECT $1, 'AAPL', 'BUY', 10, 'LIMIT', 10.00 FROM generate_series(1, 3)",
                TRADER,
            )
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 0


async def test_an_insert_under_repeatable_read_is_refused_while_a_limit_is_set(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 5)
    async with authenticator_conn.transaction(isolation="repeatable_read"):
        await authenticator_conn.execute(
            "SELECT set_config('role', 'authenticated', true),"
            " set_config('request.jwt.claims', $1, true)",
            f'{{"role": "authenticated", "sub": "{TRADER}"}}',
        )
        with pytest.raises(asyncpg.PostgresError, match="REPEATABLE READ") as refused:
            await authenticator_conn.fetchval(INSERT, TRADER)
    assert refused.value.sqlstate == "0A000"


# --- traders never wait for each other -------------------------------------------------------


async def connect_with_timeout(database: Db, timeout_ms: int) -> asyncpg.Connection:
    return await asyncpg.connect(
        database.dsn("authenticator"), server_settings={"statement_timeout": str(timeout_ms)}
    )


async def test_two_traders_at_their_limits_at_once_never_wait_for_each_other(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 2)
    holder, queued, other = [await connect_with_timeout(database, 500) for _ in "abc"]
    try:
        await insert_as(holder, "authenticated", TRADER)
        await insert_as(other, "authenticated", OTHER)
        async with as_role(holder, "authenticated", TRADER, commit=True):
            # The trader's last place, taken and not committed: its lock is held.
            await holder.fetchval(INSERT, TRADER)
            # The same trader's next insert waits for it (cancelled by the 500 ms timeout) ...
            with pytest.raises(asyncpg.QueryCanceledError):
                await insert_as(queued, "authenticated", TRADER)
            # ... another trader at its limit does not: its last place, then its refusal,
            # each well within the same 500 ms.
            await insert_as(other, "authenticated", OTHER)
            with pytest.raises(asyncpg.PostgresError, match=RATE_MESSAGE):
                await insert_as(other, "authenticated", OTHER)
    finally:
        for conn in (holder, queued, other):
            await conn.close()
    assert await count(owner_conn, TRADER) == 2
    assert await count(owner_conn, OTHER) == 2


async def test_an_insert_for_another_trader_takes_no_lock_on_that_traders_orders(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 5)
    intruder, victim = [await connect_with_timeout(database, 500) for _ in "ab"]
    try:
        async with as_role(intruder, "authenticated", OTHER):
            # Refused by the policy; the transaction stays open (aborted) on purpose.
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await intruder.fetchval(INSERT, TRADER)
            async with asyncio.timeout(2):
                await insert_as(victim, "authenticated", TRADER)
    finally:
        for conn in (intruder, victim):
            await conn.close()
    assert await count(owner_conn, TRADER) == 1


async def test_racing_inserts_of_one_trader_for_the_last_place_give_one_order(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    await set_rate(owner_conn, 1)
    first, second = [await asyncpg.connect(database.dsn("authenticator")) for _ in "ab"]
    try:
        async with as_role(first, "authenticated", TRADER, commit=True):
            await first.fetchval(INSERT, TRADER)
            racing = asyncio.create_task(insert_as(second, "authenticated", TRADER))
            await asyncio.sleep(0.3)
            assert not racing.done()  # queued behind the first, not counted beside it
        with pytest.raises(asyncpg.PostgresError, match=RATE_MESSAGE):
            await racing
    finally:
        for conn in (first, second):
            await conn.close()
    assert await count(owner_conn, TRADER) == 1


# --- the migration ----------------------------------------------------------------------------


async def test_the_downgrade_gives_back_exactly_what_the_previous_revision_made(
    cluster: pg.Cluster,
) -> None:
    trip = await round_trip(cluster, "014", "015")
    assert trip.after != trip.before
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)
