"""Migration 011: one SQL writer per order operation, called by every path.

``order_api_private.place_order`` and ``cancel_own_order`` write as the current role: plain
SQL as ``authenticated`` may call them and gains nothing by it, no other role may. An order
the rules refuse is returned as a refusal, so the caller's transaction stays usable: the
resolvers phrase it in the request transaction, and a later field of the same document runs
as before. 007's outer functions still raise it. The downgrade gives back exactly 010.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from app.orders.lifecycle import CANCELLABLE
from tests import pg, privileges
from tests.api import api_client, api_settings, statements_sent
from tests.conftest import Db
from tests.revisions import round_trip
from tests.sql import as_role
from tests.test_api_orders import SUBMIT as SUBMIT_DOCUMENT
from tests.test_api_orders import codes, ok, order_input
from tests.test_compiled_mutation_security import SUBMIT, claims
from tests.test_static_submit_order import document

PLACE = "SELECT inserted, refused, refused_field, (placed).* FROM order_api_private.place_order($1)"
CANCEL_OWN = "SELECT outcome, (placed).* FROM order_api_private.cancel_own_order($1, $2, $3)"
TOO_MANY = 1_000_000  # past the default limits (migration 003)


async def test_a_trader_places_and_cancels_through_the_writers_with_plain_sql(
    authenticator_conn: asyncpg.Connection,
) -> None:
    trader = uuid.uuid4()
    async with as_role(authenticator_conn, "authenticated", trader) as conn:
        placed = await conn.fetchrow(PLACE, document(trader, client_order_id="k"))
        again = await conn.fetchrow(PLACE, document(trader, client_order_id="k"))
        cancelled = await conn.fetchrow(CANCEL_OWN, placed["id"], "bye", CANCELLABLE)
    assert (placed["inserted"], placed["refused"], placed["trader_id"]) == (True, None, trader)
    assert (again["inserted"], again["id"]) == (False, placed["id"])
    assert (cancelled["outcome"], cancelled["status"]) == ("cancelled", "CANCELLED")


async def test_the_writers_give_a_trader_nothing_plain_sql_would_not(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    async with as_role(authenticator_conn, "authenticated", theirs, commit=True) as conn:
        their_order = (await conn.fetchrow(PLACE, document(theirs)))["id"]
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with as_role(authenticator_conn, "authenticated", mine) as conn:
            await conn.fetchrow(PLACE, document(theirs))
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="refused: status"):
        async with as_role(authenticator_conn, "authenticated", mine) as conn:
            await conn.fetchrow(PLACE, document(mine, status="FILLED"))
    async with as_role(authenticator_conn, "authenticated", mine, commit=True) as conn:
        hidden = await conn.fetchrow(CANCEL_OWN, their_order, "mine now", CANCELLABLE)
    assert (hidden["outcome"], hidden["id"]) == ("not_found", None)
    status = await owner_conn.fetchval("SELECT status::text FROM orders WHERE id = $1", their_order)
    assert status == "PENDING"


@pytest.mark.parametrize("role", ["anon", "service_role", "compliance_auditor"])
@pytest.mark.parametrize("call", ["place", "cancel"])
async def test_no_other_role_may_call_the_writers(
    authenticator_conn: asyncpg.Connection, role: str, call: str
) -> None:
    trader = uuid.uuid4()
    sql, args = (
        (PLACE, (document(trader),))
        if call == "place"
        else (CANCEL_OWN, (uuid.uuid4(), "r", CANCELLABLE))
    )
    async with as_role(authenticator_conn, role, trader) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.fetchrow(sql, *args)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await authenticator_conn.fetchrow(PLACE, document(trader))  # the login role itself


async def test_a_refused_order_leaves_the_callers_transaction_usable(
    authenticator_conn: asyncpg.Connection,
) -> None:
    trader = uuid.uuid4()
    async with as_role(authenticator_conn, "authenticated", trader) as conn:
        refused = await conn.fetchrow(PLACE, document(trader, quantity=TOO_MANY))
        after = await conn.fetchrow(PLACE, document(trader))
        count = await conn.fetchval("SELECT count(*) FROM orders")
    assert (refused["inserted"], refused["refused_field"], refused["id"]) == (
        False,
        "quantity",
        None,
    )
    assert refused["refused"].startswith("quantity must be between 1 and ")
    assert after["inserted"]
    assert count == 1  # the refused one was rolled back alone


async def test_the_outer_function_raises_the_refusal_as_before(
    authenticator_conn: asyncpg.Connection,
) -> None:
    trader = uuid.uuid4()
    sent = document(trader, quantity=TOO_MANY)
    with pytest.raises(asyncpg.PostgresError) as refused:
        await authenticator_conn.fetchrow(SUBMIT, "authenticated", claims(trader), sent)
    assert (refused.value.sqlstate, refused.value.column_name) == ("OA422", "quantity")
    assert refused.value.message.startswith("quantity must be between 1 and ")


async def test_a_limit_the_database_refuses_is_phrased_in_the_request_transaction(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    """The limits are not read before the write; the database refuses the order, and the
    resolvers read the limits in force after it, in the same transaction, for the words
    they always gave."""
    closing = await owner_conn.fetchval("SELECT public.session_close(now())")
    settings = api_settings(database, compiled_mutations=False)
    async with api_client(settings) as client:
        # Thirty days ahead: past today's close.
        variables = {"input": order_input(timeInForce="DAY")}
        with statements_sent(client) as sent:
            body = await client.gql(SUBMIT_DOCUMENT, variables, token=client.token(uuid.uuid4()))
    assert codes(body) == ["BAD_USER_INPUT"]
    [error] = body["errors"]
    # Python's words (the trigger's print the close as PostgreSQL does).
    assert error["message"] == (
        f"a DAY order ends at the session close ({closing.isoformat()}): expiresAt may not be later"
    )
    assert len(sent) == 3, sent
    assert "order_api_private.place_order(" in sent[1]
    assert "FROM order_limits" in sent[2]
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 0


async def test_a_submit_through_the_resolvers_sends_the_callers_settings_and_one_call(
    database: Db,
) -> None:
    """No read of the limits before the write: the order is validated with them left open."""
    settings = api_settings(database, compiled_mutations=False)
    async with api_client(settings) as client:
        token = client.token(uuid.uuid4())
        for time_in_force in ("GTC", "DAY"):
            variables: dict[str, Any] = {
                "input": order_input(
                    clientOrderId=time_in_force, timeInForce=time_in_force, expiresAt=None
                )
            }
            with statements_sent(client) as sent:
                ok(await client.gql(SUBMIT_DOCUMENT, variables, token=token))
            assert len(sent) == 2, sent
            assert "order_api_private.become(" in sent[0]
            assert "order_api_private.place_order(" in sent[1]


async def test_the_downgrade_gives_back_exactly_what_010_made(cluster: pg.Cluster) -> None:
    trip = await round_trip(cluster, "010", "011")
    assert trip.after != trip.before
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)
