"""Migration 007's functions as an attacker would use them, with plain SQL.

``order_api_private.submit_order`` and ``cancel_order`` take the role to become as an argument,
so they must be reachable by the API's login role only, must refuse any role but the four API
roles, and must leave every rule to the caller's privileges and policies: no other trader's
order, no column a trader may not write, no skipped rule, and no role left behind after the
statement. Temporary objects named like ours change nothing (their search_path ends with
pg_temp and every name is qualified). A slow statement is cancelled by the statement timeout
the API's connections carry.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.db.migrations import PROJECT_ROOT
from app.orders.lifecycle import CANCELLABLE
from tests import pg, privileges
from tests.api import api_client, api_settings
from tests.conftest import Db
from tests.sql import as_role
from tests.test_security_attacks import SPY, create_shadows, read_shadows

API_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
SUBMIT = "SELECT inserted, (placed).* FROM order_api_private.submit_order($1, $2, $3::jsonb)"
CANCEL = "SELECT outcome, (placed).* FROM order_api_private.cancel_order($1, $2, $3, $4, $5)"
CALLS = {
    "submit": (SUBMIT, lambda who: ("authenticated", claims(who), order(who))),
    "cancel": (
        CANCEL,
        lambda who: ("authenticated", claims(who), uuid.uuid4(), "r", CANCELLABLE),
    ),
    "become": ("SELECT order_api_private.become($1, $2)", lambda who: ("service_role", "{}")),
}


def claims(sub: uuid.UUID | None, role: str = "authenticated") -> str:
    return json.dumps({"role": role, **({"sub": str(sub)} if sub else {})})


def order(trader: uuid.UUID, **changes: Any) -> str:
    fields = {
        "trader_id": str(trader),
        "symbol": "ACME",
        "side": "BUY",
        "quantity": 5,
        "order_type": "LIMIT",
        "price": "10.00",
    }
    return json.dumps(fields | changes)


@pytest.fixture
async def api(database: Db, owner_conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.cluster.dsn(database.name, "authenticator"))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.mark.parametrize("role", API_ROLES)
@pytest.mark.parametrize("call", sorted(CALLS))
async def test_no_api_role_may_call_the_functions(
    api: asyncpg.Connection, role: str, call: str
) -> None:
    """After SET ROLE, as PostgREST (or a compromised session) would be: refused."""
    sql, args = CALLS[call]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with as_role(api, role, uuid.uuid4()) as conn:
            await conn.fetchrow(sql, *args(uuid.uuid4()))


async def test_only_authenticator_has_the_outer_functions_and_traders_the_inner_ones(
    owner_conn: asyncpg.Connection,
) -> None:
    """The outer functions (007's: they become a role) for the login role only; migration
    011's inner writers, which write as the current role, for authenticated only."""
    rows = await owner_conn.fetch(
        "SELECT r.rolname, has_schema_privilege(r.oid, 'order_api_private', 'USAGE') AS usage,"
        " coalesce(array_agg(p.proname::text ORDER BY p.proname)"
        "   FILTER (WHERE has_function_privilege(r.oid, p.oid, 'EXECUTE')), '{}') AS execute"
        " FROM pg_roles r, pg_proc p WHERE p.pronamespace = 'order_api_private'::regnamespace"
        " AND r.rolname = ANY($1::text[]) GROUP BY r.rolname, r.oid ORDER BY 1",
        [*API_ROLES, "authenticator", "order_audit_writer"],
    )
    allowed = {r["rolname"]: r["execute"] for r in rows if r["usage"] or r["execute"]}
    assert allowed == {
        "authenticator": ["become", "cancel_order", "submit_order"],
        "authenticated": ["cancel_own_order", "place_order"],
    }
    assert not await owner_conn.fetchval(
        "SELECT bool_or(p.prosecdef) FROM pg_proc p"
        " WHERE p.pronamespace = 'order_api_private'::regnamespace"
    )


@pytest.mark.parametrize("role", ["postgres", "authenticator", "order_audit_writer", None, ""])
async def test_no_role_but_the_four_api_roles(api: asyncpg.Connection, role: str | None) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not an API role"):
        await api.fetchrow(SUBMIT, role, claims(uuid.uuid4()), order(uuid.uuid4()))
    assert await api.fetchval("SELECT current_user") == "authenticator"


async def test_inside_a_transaction_of_the_caller_the_role_lasts_to_its_end(
    api: asyncpg.Connection,
) -> None:
    """Why the API sends the call alone, in autocommit: the switch is transaction-local."""
    trader = uuid.uuid4()
    async with api.transaction():
        await api.fetchrow(SUBMIT, "authenticated", claims(trader), order(trader))
        assert await api.fetchval("SELECT current_user") == "authenticated"
    assert await api.fetchval("SELECT current_user") == "authenticator"


async def test_the_role_and_claims_end_with_the_statement(api: asyncpg.Connection) -> None:
    trader = uuid.uuid4()
    row = await api.fetchrow(SUBMIT, "authenticated", claims(trader), order(trader))
    assert row["inserted"]
    assert row["trader_id"] == trader
    after = await api.fetchrow(
        "SELECT current_user AS user, coalesce(current_setting('request.jwt.claims', true), '')"
        " AS claims"
    )
    assert dict(after) == {"user": "authenticator", "claims": ""}
    cancelled = await api.fetchrow(
        CANCEL, "authenticated", claims(trader), row["id"], "no", CANCELLABLE
    )
    assert cancelled["outcome"] == "cancelled"
    assert await api.fetchval("SELECT current_user") == "authenticator"


async def test_a_trader_cannot_reach_another_traders_order(api: asyncpg.Connection) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    placed = await api.fetchrow(SUBMIT, "authenticated", claims(theirs), order(theirs))
    # An order in someone else's name: the insert policy refuses it.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await api.fetchrow(SUBMIT, "authenticated", claims(mine), order(theirs))
    # Their order is invisible: not found, untouched.
    refused = await api.fetchrow(
        CANCEL, "authenticated", claims(mine), placed["id"], "mine now", CANCELLABLE
    )
    assert refused["outcome"] == "not_found"
    assert refused["id"] is None
    # Every state claimed cancellable: the lifecycle trigger still refuses a final one.
    await api.fetchrow(CANCEL, "authenticated", claims(theirs), placed["id"], "x", CANCELLABLE)
    with pytest.raises(asyncpg.PostgresError) as refused_again:
        await api.fetchrow(
            CANCEL, "authenticated", claims(theirs), placed["id"], "x", ["CANCELLED:false:false"]
        )
    assert refused_again.value.sqlstate == "OA409"
    # Their idempotency key, used by me: my own order, nothing of theirs returned.
    keyed = await api.fetchrow(
        SUBMIT, "authenticated", claims(theirs), order(theirs, client_order_id="k")
    )
    again = await api.fetchrow(
        SUBMIT, "authenticated", claims(mine), order(mine, client_order_id="k")
    )
    assert again["inserted"]
    assert again["id"] != keyed["id"]
    assert again["trader_id"] == mine


@pytest.mark.parametrize(
    ("changes", "sqlstate"),
    [
        ({"status": "FILLED"}, "42501"),  # a column a trader may not write
        ({"filled_quantity": 5}, "42501"),
        ({"approved_at": "2030-01-01T00:00:00Z"}, "42501"),
        ({"quantity": 0}, "OA422"),  # the order rules (003)
        ({"quantity": 1000000}, "OA422"),  # the limits (003)
        ({"symbol": "b@d"}, "OA422"),
    ],
)
async def test_no_rule_is_skipped(
    api: asyncpg.Connection, owner_conn: asyncpg.Connection, changes: dict[str, Any], sqlstate: str
) -> None:
    trader = uuid.uuid4()
    with pytest.raises(asyncpg.PostgresError) as refused:
        await api.fetchrow(SUBMIT, "authenticated", claims(trader), order(trader, **changes))
    assert refused.value.sqlstate == sqlstate
    assert await owner_conn.fetchval("SELECT count(*) FROM public.orders") == 0


@pytest.mark.parametrize("role", ["compliance_auditor", "anon"])
async def test_other_roles_through_the_function_have_their_own_rights_only(
    api: asyncpg.Connection, role: str
) -> None:
    """The function adds nothing to a role: these may not submit for a trader (nor, since
    migration 011, service_role: the inner writer is the traders' only)."""
    trader = uuid.uuid4()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await api.fetchrow(SUBMIT, role, claims(trader, role), order(trader))


async def test_an_order_gets_its_audit_row_and_chain(api: asyncpg.Connection) -> None:
    trader = uuid.uuid4()
    row = await api.fetchrow(SUBMIT, "authenticated", claims(trader), order(trader))
    await api.fetchrow(CANCEL, "authenticated", claims(trader), row["id"], "bye", CANCELLABLE)
    async with as_role(api, "service_role") as conn:
        audit = await conn.fetch(
            "SELECT action::text, reason, hash IS NOT NULL AS hashed,"
            " prev_hash IS NOT NULL AS linked FROM public.execution_logs"
            " WHERE order_id = $1 ORDER BY seq",
            row["id"],
        )
    assert [dict(a) for a in audit] == [
        {"action": "SUBMITTED", "reason": None, "hashed": True, "linked": False},
        {"action": "CANCELLED", "reason": "bye", "hashed": True, "linked": True},
    ]


async def test_temporary_shadows_change_nothing(
    database: Db, owner_conn: asyncpg.Connection, api: asyncpg.Connection
) -> None:
    """authenticator's session full of temporary namesakes of our tables, types and functions
    (as tests/test_security_attacks.py builds them): the functions write the real tables."""
    await owner_conn.execute(f"GRANT TEMPORARY ON DATABASE {database.name} TO PUBLIC")
    shadows = await read_shadows(owner_conn)
    trader = uuid.uuid4()
    reports: list[str] = []
    api.add_log_listener(lambda _, message: reports.append(str(message)))
    # Temporary objects outlive their transaction: each call below is its own (autocommit),
    # as the API sends them.
    await create_shadows(api, uuid.uuid4(), shadows)
    row = await api.fetchrow(
        SUBMIT, "authenticated", claims(trader), order(trader, client_order_id="s")
    )
    again = await api.fetchrow(
        SUBMIT, "authenticated", claims(trader), order(trader, client_order_id="s")
    )
    cancelled = await api.fetchrow(
        CANCEL, "authenticated", claims(trader), row["id"], "x", CANCELLABLE
    )
    assert (row["inserted"], again["inserted"], again["id"]) == (True, False, row["id"])
    assert cancelled["outcome"] == "cancelled"
    assert not [r for r in reports if SPY in r], reports
    stored = await owner_conn.fetchrow(
        "SELECT status::text, (SELECT count(*) FROM execution_logs l WHERE l.order_id = o.id)"
        " AS audit FROM orders o WHERE o.id = $1",
        row["id"],
    )
    assert dict(stored) == {"status": "CANCELLED", "audit": 2}


async def test_the_statement_timeout_bounds_a_compiled_mutation(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    """A compiled submitOrder waiting on a locked table is cancelled at STATEMENT_TIMEOUT_MS:
    its own implicit transaction has no setting to carry the timeout (and a session setting
    would outlive the request on a pooled connection), so the client's timeout sends the
    server a cancel, directly or through the pooler: 503, nothing written."""
    from tests.test_statement_timeouts import MARKET, TIMEOUT_MS, orders_locked, timed_out
    from tests.test_statement_timeouts import SUBMIT as SUBMIT_DOCUMENT

    settings = api_settings(database, statement_timeout_ms=TIMEOUT_MS)
    async with api_client(settings) as client:
        token = client.token(uuid.uuid4())
        learned = await client.post(SUBMIT_DOCUMENT, {"input": MARKET}, token=token)
        assert learned.status_code == 200, learned.text
        async with orders_locked(owner_conn):
            started = time.monotonic()
            response = await client.post(SUBMIT_DOCUMENT, {"input": MARKET}, token=token)
            elapsed = time.monotonic() - started
        timed_out(response)
        assert response.json()["errors"][0]["path"] == ["submitOrder"]
        # The statement's timeout, not the client's command timeout (one second more).
        assert elapsed < TIMEOUT_MS / 1000 + 0.7
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 1


async def test_the_downgrade_gives_back_exactly_the_revision_below(cluster: pg.Cluster) -> None:
    """007 on top of the revision below it, then off again: the same catalog facts."""
    from tests.test_migrations import alembic

    revision = (PROJECT_ROOT / "alembic/versions/007_compiled_order_writes.py").read_text()
    match = re.search(r'^down_revision: str \| None = "(\w+)"', revision, re.MULTILINE)
    assert match is not None
    below = match.group(1)
    names = [await pg.create_empty_database(cluster) for _ in range(2)]
    try:
        assert alembic(Db(cluster, names[0]), "upgrade", below).returncode == 0
        up = alembic(Db(cluster, names[1]), "upgrade", "007")
        assert up.returncode == 0, up.stderr
        down = alembic(Db(cluster, names[1]), "downgrade", below)
        assert down.returncode == 0, down.stderr
        facts = []
        for name in names:
            conn = await asyncpg.connect(cluster.dsn(name))
            try:
                facts.append(await privileges.render(conn))
                schemas = await conn.fetchval(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = 'order_api_private'"
                )
                assert schemas == 0
            finally:
                await conn.close()
        assert facts[1] == facts[0], privileges.diff(facts[0], facts[1])
        assert alembic(Db(cluster, names[1]), "upgrade", "007").returncode == 0
    finally:
        for name in names:
            await pg.drop_test_database(cluster, name)
