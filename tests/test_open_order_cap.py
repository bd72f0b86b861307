"""order_limits.max_open_orders (migration 010): each trader's cap on open orders.

Through the API, and with plain SQL as ``authenticated`` and as ``service_role`` writing
for a trader: the database refuses the order over the cap for every writer, two racing
inserts of one trader cannot both take the last place, other traders never wait, and a
replacement (which takes the place of an open order) is never refused for it. The
compiled submitOrder gives the resolvers' answer (tests/test_compiled_mutations.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests import pg, privileges
from tests.api import Client, api_client, api_settings
from tests.conftest import Db
from tests.order_limits import CANCEL, INSERT, REPLACE, insert_as, submit
from tests.revisions import round_trip
from tests.sql import as_role

TRADER = uuid.UUID("7b0c1f9e-0000-4000-8000-0000000000c1")
OTHER = uuid.UUID("7b0c1f9e-0000-4000-8000-0000000000c2")
CAP_MESSAGE = "order_limits.max_open_orders"


async def set_cap(owner: asyncpg.Connection, cap: int | None) -> None:
    await owner.execute("UPDATE order_limits SET max_open_orders = $1", cap)


@pytest.fixture
async def client(database: Db) -> AsyncIterator[Client]:
    async with api_client(api_settings(database)) as api:
        yield api


# --- through the API --------------------------------------------------------------------------


async def test_an_order_over_the_cap_is_bad_user_input_naming_the_limit_and_nothing_is_written(
    client: Client, owner_conn: asyncpg.Connection
) -> None:
    await set_cap(owner_conn, 2)
    first = await submit(client, TRADER)
    await submit(client, TRADER)

    refused = await submit(client, TRADER)

    [error] = refused["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "input"}
    assert CAP_MESSAGE in error["message"]
    assert "at most 2" in error["message"]
    assert refused["data"] is None
    assert (
        await owner_conn.fetchval("SELECT count(*) FROM orders WHERE trader_id = $1", TRADER) == 2
    )
    # Another trader has a cap of its own; a final order frees a place.
    assert "errors" not in await submit(client, OTHER)
    order_id = first["data"]["submitOrder"]["id"]
    cancelled = await client.gql(CANCEL, {"id": order_id}, token=client.token(TRADER))
    assert cancelled["data"]["cancelOrder"]["status"] == "CANCELLED"
    assert "errors" not in await submit(client, TRADER)


async def test_without_a_cap_a_trader_may_keep_any_number_of_orders_open(
    client: Client, owner_conn: asyncpg.Connection
) -> None:
    assert await owner_conn.fetchval("SELECT max_open_orders FROM order_limits") is None
    for _ in range(5):
        assert "errors" not in await submit(client, TRADER)


async def test_a_replacement_at_the_cap_is_accepted_as_it_takes_an_open_orders_place(
    client: Client, owner_conn: asyncpg.Connection
) -> None:
    await set_cap(owner_conn, 1)
    placed = await submit(client, TRADER)
    order_id = placed["data"]["submitOrder"]["id"]

    replaced = await client.gql(
        REPLACE,
        {"id": order_id, "input": {"quantity": 10, "price": "11.00"}},
        token=client.token(TRADER),
    )

    assert replaced["data"]["replaceOrder"]["status"] == "PENDING", replaced
    # While the replacement waits, both are open: a new order is over the cap.
    assert CAP_MESSAGE in (await submit(client, TRADER))["errors"][0]["message"]


async def test_the_cap_must_be_positive_or_null(owner_conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await set_cap(owner_conn, 0)


# --- plain SQL, as each writer ----------------------------------------------------------------


@pytest.mark.parametrize("role", ["authenticated", "service_role"])
async def test_plain_sql_over_the_cap_is_refused_for_every_writer(
    role: str, authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    await set_cap(owner_conn, 2)
    for _ in range(2):
        await insert_as(authenticator_conn, role, TRADER)

    with pytest.raises(asyncpg.PostgresError, match=CAP_MESSAGE) as refused:
        await insert_as(authenticator_conn, role, TRADER)

    assert refused.value.sqlstate == "OA422"
    await insert_as(authenticator_conn, role, OTHER)


async def test_one_statement_inserting_several_orders_counts_each(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    await set_cap(owner_conn, 2)
    with pytest.raises(asyncpg.PostgresError, match=CAP_MESSAGE):
        async with as_role(authenticator_conn, "authenticated", TRADER, commit=True):
            await authenticator_conn.execute(
                "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
                " SELECT $1, 'AAPL', 'BUY', 10, 'LIMIT', 10.00 FROM generate_series(1, 3)",
                TRADER,
            )
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 0


async def test_two_racing_inserts_for_the_last_place_give_one_order(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    await set_cap(owner_conn, 2)
    first, second, other = [await asyncpg.connect(database.dsn("authenticator")) for _ in "abc"]
    try:
        await insert_as(first, "authenticated", TRADER)  # one place left
        async with as_role(first, "authenticated", TRADER, commit=True):
            await first.fetchval(INSERT, TRADER)  # takes it; not committed yet
            racing = asyncio.create_task(insert_as(second, "authenticated", TRADER))
            await asyncio.sleep(0.3)
            assert not racing.done()  # queued behind the first, not counted beside it
            # Another trader is not queued behind this one.
            async with asyncio.timeout(2):
                await insert_as(other, "authenticated", OTHER)
        with pytest.raises(asyncpg.PostgresError, match=CAP_MESSAGE):
            await racing
    finally:
        for conn in (first, second, other):
            await conn.close()
    assert (
        await owner_conn.fetchval("SELECT count(*) FROM orders WHERE trader_id = $1", TRADER) == 2
    )


async def test_an_insert_under_repeatable_read_is_refused_while_a_cap_is_set(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    await set_cap(owner_conn, 5)
    async with authenticator_conn.transaction(isolation="repeatable_read"):
        await authenticator_conn.execute(
            "SELECT set_config('role', 'authenticated', true),"
            " set_config('request.jwt.claims', $1, true)",
            f'{{"role": "authenticated", "sub": "{TRADER}"}}',
        )
        with pytest.raises(asyncpg.PostgresError, match="REPEATABLE READ") as refused:
            await authenticator_conn.fetchval(INSERT, TRADER)
    assert refused.value.sqlstate == "0A000"


# --- the migration ----------------------------------------------------------------------------


async def test_the_downgrade_gives_back_exactly_what_009_made(cluster: pg.Cluster) -> None:
    trip = await round_trip(cluster, "009", "010")
    assert trip.after != trip.before
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)
