"""Migration 008's submit_order (a static INSERT) as an attacker would call it, with plain SQL.

The API's login role may send any document: the one the API sends (trader_id and every
submit field) is written by the static statement with every rule of the table; a key outside
those columns is refused and writes nothing (it must not be dropped silently, nor reach a
column 007's statement would have written); a partial document is written as 007 wrote it.
The downgrade gives back 007's function exactly. tests/test_compiled_mutation_security.py
holds the attacks common to both revisions (roles, temporary shadows, timeouts).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from app.orders import fields, queries
from app.orders.errors import Forbidden
from tests import pg, privileges
from tests.revisions import round_trip
from tests.test_compiled_mutation_security import SUBMIT, claims


def document(trader: uuid.UUID, **changes: Any) -> str:
    """A document as the API builds it: trader_id and every submit field."""
    order = {"trader_id": str(trader), "symbol": "ACME", "side": "BUY", "quantity": 5}
    order |= {"order_type": "LIMIT", "price": "10.00", "time_in_force": "GTC"}
    return json.dumps(dict.fromkeys(fields.SUBMIT_FIELDS) | order | changes)


async def orders(owner_conn: asyncpg.Connection) -> int:
    count = await owner_conn.fetchval("SELECT count(*) FROM public.orders")
    assert isinstance(count, int)
    return count


async def test_the_apis_document_is_written_and_repeated_idempotently(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    sent = document(trader, client_order_id="k")
    row = await authenticator_conn.fetchrow(SUBMIT, "authenticated", claims(trader), sent)
    again = await authenticator_conn.fetchrow(SUBMIT, "authenticated", claims(trader), sent)
    assert (row["inserted"], again["inserted"], again["id"]) == (True, False, row["id"])
    assert (row["trader_id"], row["status"], row["time_in_force"]) == (trader, "PENDING", "GTC")
    audit = await owner_conn.fetchval(
        "SELECT count(*) FROM public.execution_logs WHERE order_id = $1", row["id"]
    )
    assert audit == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"status": "FILLED"},  # columns a trader may not write
        {"filled_quantity": 5},
        {"approved_at": "2030-01-01T00:00:00Z"},
        {"id": "00000000-0000-4000-8000-000000000001"},  # ones 007 would have written
        {"replaces_id": "00000000-0000-4000-8000-000000000001"},
        {"no_such_column": 1},
        {"Symbol": "EVIL"},  # keys are exact: no case folding
    ],
)
async def test_a_key_outside_the_submit_fields_is_refused_and_writes_nothing(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection, extra: dict[str, Any]
) -> None:
    trader = uuid.uuid4()
    [key] = extra
    for sent in (document(trader, **extra), json.dumps({"trader_id": str(trader)} | extra)):
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
            await authenticator_conn.fetchrow(SUBMIT, "authenticated", claims(trader), sent)
        assert str(refused.value).endswith(f"refused: {key}")
    assert await orders(owner_conn) == 0
    # The API would report it as every privilege refusal, were it ever to send one.
    assert isinstance(queries.translate(refused.value.sqlstate, None, refused.value), Forbidden)


async def test_an_order_in_another_traders_name_is_refused(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await authenticator_conn.fetchrow(SUBMIT, "authenticated", claims(mine), document(theirs))
    # Their idempotency key under my name: my own order, theirs untouched and unseen.
    keyed = await authenticator_conn.fetchrow(
        SUBMIT, "authenticated", claims(theirs), document(theirs, client_order_id="k")
    )
    again = await authenticator_conn.fetchrow(
        SUBMIT, "authenticated", claims(mine), document(mine, client_order_id="k")
    )
    assert again["inserted"]
    assert (again["trader_id"], keyed["trader_id"]) == (mine, theirs)
    assert await orders(owner_conn) == 2


@pytest.mark.parametrize("role", ["anon", "compliance_auditor"])
async def test_other_roles_may_not_submit_through_the_static_statement(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection, role: str
) -> None:
    trader = uuid.uuid4()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await authenticator_conn.fetchrow(SUBMIT, role, claims(trader, role), document(trader))
    assert await orders(owner_conn) == 0
    assert await authenticator_conn.fetchval("SELECT current_user") == "authenticator"


@pytest.mark.parametrize(
    ("changes", "sqlstate"),
    [
        ({"quantity": 0}, "OA422"),  # the order rules (003)
        ({"quantity": 1000000}, "OA422"),  # the limits (003)
        ({"time_in_force": None}, "OA422"),  # sent null: not the column's default
        ({"order_type": "STOP_LIMIT"}, "OA422"),  # without a stopPrice (006)
        ({"quantity": "many"}, "22P02"),
        ({"symbol": "TOOLONGSYMBOL"}, "22001"),
    ],
)
async def test_no_rule_is_skipped_by_the_static_statement(
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
    changes: dict[str, Any],
    sqlstate: str,
) -> None:
    trader = uuid.uuid4()
    with pytest.raises(asyncpg.PostgresError) as refused:
        await authenticator_conn.fetchrow(
            SUBMIT, "authenticated", claims(trader), document(trader, **changes)
        )
    assert refused.value.sqlstate == sqlstate
    assert await orders(owner_conn) == 0


async def test_a_partial_document_is_written_as_007_wrote_it(
    authenticator_conn: asyncpg.Connection,
) -> None:
    """Keys left out take their column's default (time_in_force: GTC), as in 007."""
    trader = uuid.uuid4()
    sent = json.loads(document(trader))
    del sent["time_in_force"], sent["stop_loss"]
    row = await authenticator_conn.fetchrow(
        SUBMIT, "authenticated", claims(trader), json.dumps(sent)
    )
    assert (row["inserted"], row["time_in_force"], row["stop_loss"]) == (True, "GTC", None)


@pytest.mark.parametrize("sent", ["[]", '"order"', "null", "1"])
async def test_anything_but_an_object_is_refused(
    authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection, sent: str
) -> None:
    trader = uuid.uuid4()
    with pytest.raises(asyncpg.InvalidParameterValueError, match="must be a JSON object"):
        await authenticator_conn.fetchrow(SUBMIT, "authenticated", claims(trader), sent)
    assert await orders(owner_conn) == 0


async def test_the_downgrade_gives_back_007s_function_exactly(cluster: pg.Cluster) -> None:
    """007, then 008 (only submit_order's definition differs), then back to 007: the same
    functions (oid and definition), privileges and structure; then 008 again."""
    trip = await round_trip(cluster, "007", "008")
    changed = privileges.diff(trip.before, trip.after).splitlines()
    assert [line[0] for line in changed] == ["-", "+"], changed
    assert all(" order_api_private.submit_order(text,text,jsonb) " in c for c in changed)
    assert "Running downgrade 008 -> 007" in trip.downgrade_log
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)
