"""The product on a Supabase-like database (tests/supabase.py): migrated by a non-superuser
owner, next to roles and an auth schema that belong to the platform, served through a login
role of one's own, with service_role holding BYPASSRLS.

The isolation tests of test_api_isolation run here again, unchanged, on this setup.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from alembic import command
from app.db.migrations import alembic_config, head_revision
from tests import security_lints, supabase
from tests.api import api_client, api_settings
from tests.conftest import SupabaseSession
from tests.sql import as_role
from tests.test_api_isolation import (  # noqa: F401  (collected again, on this setup)
    APPROVE,
    CANCEL,
    FILL,
    SUBMIT,
    World,
    arranged_world,
    hints,
    ok,
    submit,
    test_a_trader_fetching_another_traders_order_gets_null,
    test_a_trader_lists_only_their_own_orders_fills_and_audit_rows,
    test_a_trader_sees_only_their_own_execution_logs,
    test_anon_sees_no_orders_fills_or_logs,
    test_cancelling_another_traders_order_is_not_found_and_changes_nothing,
    test_compliance_auditor_cannot_change_anything,
    test_filtering_on_another_trader_returns_nothing,
    test_service_role_and_compliance_auditor_see_every_trader,
)

AUTHENTICATOR_NOT_OURS = supabase.migration_001().AUTHENTICATOR_NOT_OURS

API_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
READS = """
query {
  viewer { role traderId }
  orders(first: 50) { edges { node { id traderId status fills { id } executionLogs { id } } } }
  executionLogs(first: 50) { edges { node { id orderId action } } }
}
"""


@pytest.fixture(scope="module")
async def world(supabase_cluster: SupabaseSession) -> AsyncIterator[World]:
    """test_api_isolation's world, on the Supabase-like setup."""
    cluster = supabase_cluster.cluster
    db = supabase.SupabaseDb(cluster, await supabase.create_database(cluster))
    try:
        async with arranged_world(db) as arranged:
            yield arranged
    finally:
        await supabase.drop_database(cluster, db.name)


# --- the migration ---------------------------------------------------------------------------


async def test_the_migration_ran_as_an_owner_that_is_no_superuser(
    supabase_database: supabase.SupabaseDb,
) -> None:
    conn = await asyncpg.connect(supabase_database.dsn())
    try:
        assert (
            await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            is False
        )
        owners = await conn.fetch(
            "SELECT DISTINCT relowner::regrole::text AS owner FROM pg_class"
            " WHERE relname IN ('orders', 'fills', 'execution_logs')"
        )
        assert [r["owner"] for r in owners] == [supabase.OWNER]
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == head_revision()
    finally:
        await conn.close()


def test_the_migration_changed_no_role_and_nothing_of_auth_it_did_not_create(
    supabase_cluster: SupabaseSession,
) -> None:
    # supautils refuses ALTER ROLE authenticator and GRANT ... TO authenticator on Supabase;
    # plain PostgreSQL 15 would let the owner do both, so the catalog is the witness.
    assert supabase_cluster.roles_after == supabase_cluster.roles_before
    objects = [entry["object"] for entry in supabase_cluster.roles_before]
    assert "role authenticator" in objects
    assert "function auth.uid()" in objects


def test_the_migration_says_in_one_line_that_authenticator_is_not_its_own(
    supabase_cluster: SupabaseSession,
) -> None:
    assert supabase_cluster.migration_log.count(AUTHENTICATOR_NOT_OURS) == 1


@pytest.fixture
def sent_to_the_server() -> Iterator[list[str]]:
    """Every statement and its parameters, as sent by any SQLAlchemy engine of this process."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append(f"{statement} {parameters!r}")

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def test_with_a_password_the_migration_applies_and_leaves_authenticator_alone(
    supabase_cluster: SupabaseSession,
    sent_to_the_server: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = supabase_cluster.cluster
    name = await supabase.create_database(cluster, template=supabase.PLATFORM)
    admin = await asyncpg.connect(cluster.dsn("postgres", supabase.ADMIN))
    try:
        before = await supabase.platform_catalog(cluster, name)
        password = "pw-that-must-not-travel-" + uuid.uuid4().hex
        monkeypatch.setenv("AUTHENTICATOR_PASSWORD", password)
        url = cluster.url(name).render_as_string(hide_password=False)
        with supabase.migration_log() as lines:
            await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        assert AUTHENTICATOR_NOT_OURS in lines
        assert sent_to_the_server, "the statement recorder saw nothing"
        assert not [s for s in sent_to_the_server if password in s]
        assert await admin.fetchval(
            "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'authenticator'"
        )
        assert await supabase.platform_catalog(cluster, name) == before
        # Downgrading works as this owner too, and keeps the platform's auth schema.
        await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
        assert await supabase.platform_catalog(cluster, name) == before
        conn = await asyncpg.connect(cluster.dsn(name))
        try:
            assert await conn.fetchval("SELECT to_regclass('orders')") is None
        finally:
            await conn.close()
    finally:
        await admin.close()
        await supabase.drop_database(cluster, name)


# --- the API, as every role ---------------------------------------------------------------------


@pytest.mark.parametrize("role", API_ROLES)
async def test_every_role_reads_viewer_orders_and_execution_logs(
    supabase_database: supabase.SupabaseDb, role: str
) -> None:
    async with api_client(api_settings(supabase_database)) as client:
        trader = uuid.uuid4()
        order_id = await submit(client, client.token(trader))
        sub = trader if role == "authenticated" else (None if role == "anon" else uuid.uuid4())
        data = ok(
            await client.gql(READS, token=client.token(sub, role) if role != "anon" else None)
        )
    assert data["viewer"]["role"] == role
    ids = {edge["node"]["id"] for edge in data["orders"]["edges"]}
    logs = {edge["node"]["orderId"] for edge in data["executionLogs"]["edges"]}
    if role == "anon":
        assert not ids
        assert not logs
    else:
        assert order_id in ids
        assert order_id in logs


async def test_a_trader_submits_and_cancels_and_the_engine_fills_through_the_api(
    supabase_database: supabase.SupabaseDb,
) -> None:
    async with api_client(api_settings(supabase_database)) as client:
        trader = uuid.uuid4()
        token, engine = client.token(trader), client.token(None, "service_role")
        filled = await submit(client, token, quantity=10)
        ok(await client.gql(APPROVE, {"id": filled}, token=engine))
        ok(await client.gql(FILL, {"id": filled, "q": 10}, token=engine))
        cancelled = await submit(client, token)
        body = ok(
            await client.gql(
                "mutation($id: UUID!) { cancelOrder(id: $id) { status } }",
                {"id": cancelled},
                token=token,
            )
        )
        assert body["cancelOrder"]["status"] == "CANCELLED"
        statuses = ok(
            await client.gql(
                "query($id: UUID!) { order(id: $id) { status } }", {"id": filled}, token=token
            )
        )
        assert statuses["order"]["status"] == "FILLED"


@pytest.mark.parametrize(
    ("role", "code"),
    [
        ("anon", "UNAUTHENTICATED"),
        ("service_role", "FORBIDDEN"),
        ("compliance_auditor", "FORBIDDEN"),
    ],
)
async def test_only_a_trader_submits_or_cancels(
    supabase_database: supabase.SupabaseDb, role: str, code: str
) -> None:
    async with api_client(api_settings(supabase_database)) as client:
        order_id = await submit(client, client.token(uuid.uuid4()))
        token = None if role == "anon" else client.token(uuid.uuid4(), role)
        for query, variables in (
            (
                SUBMIT,
                {"input": {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}},
            ),
            (CANCEL, {"id": order_id}),
        ):
            body = await client.gql(query, variables, token=token)
            assert [e["extensions"]["code"] for e in body["errors"]] == [code], body


# --- immutability where policies do not apply ----------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE execution_logs SET reason = 'rewritten'",
        "DELETE FROM execution_logs",
        "UPDATE fills SET quantity_filled = 1",
        "DELETE FROM fills",
    ],
)
async def test_service_role_with_bypassrls_cannot_rewrite_history(
    supabase_database: supabase.SupabaseDb, statement: str
) -> None:
    async with api_client(api_settings(supabase_database)) as client:
        order_id = await submit(client, client.token(uuid.uuid4()), quantity=5)
        engine = client.token(None, "service_role")
        ok(await client.gql(APPROVE, {"id": order_id}, token=engine))
        ok(await client.gql(FILL, {"id": order_id, "q": 5}, token=engine))
    conn = await asyncpg.connect(supabase_database.dsn(supabase.LOGIN))
    try:
        async with as_role(conn, "service_role") as tx:
            assert await tx.fetchval(
                "SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role'"
            )
            with pytest.raises(asyncpg.PostgresError) as refused:
                await tx.execute(statement)
        assert refused.value.sqlstate in ("42501", "OA403")
    finally:
        await conn.close()


async def test_the_owner_with_bypassrls_cannot_rewrite_the_audit_trail(
    supabase_database: supabase.SupabaseDb,
) -> None:
    async with api_client(api_settings(supabase_database)) as client:
        await submit(client, client.token(uuid.uuid4()))
    conn = await asyncpg.connect(supabase_database.dsn())
    try:
        assert await conn.fetchval("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user")
        for statement in ("UPDATE execution_logs SET reason = 'x'", "DELETE FROM execution_logs"):
            with pytest.raises(asyncpg.PostgresError) as refused:
                await conn.execute(statement)
            assert refused.value.sqlstate in ("42501", "OA403")
    finally:
        await conn.close()


async def test_the_own_login_role_is_ready_and_reads_the_change_feed(
    supabase_database: supabase.SupabaseDb,
) -> None:
    # The README's login role of one's own (Supabase's authenticator is the platform's): what
    # 002 and 004 grant to authenticator alone, the README's step 3 grants to it as well.
    from tests.test_subscriptions import harness, state, subscribed

    async with api_client(api_settings(supabase_database)) as client:
        ready = await client.http.get("/readyz")
        assert ready.status_code == 200, ready.text
    trader = uuid.uuid4()
    async with harness(supabase_database) as h:
        await h.changes.until_connected()
        async with subscribed(h, h.token(trader)) as stream:
            await h.subscribers(1)
            order_id = await h.submit(trader)
            order = await stream.order()
        assert order["id"] == order_id
        assert state(order) == ("PENDING", 0, "SUBMITTED")


@pytest.mark.parametrize("lint", security_lints.LINTS, ids=lambda lint: lint.__name__)
async def test_the_catalog_lints_find_nothing_on_supabase(
    supabase_database: supabase.SupabaseDb, lint: Any
) -> None:
    # The same lints as tests/test_security_catalog.py, where Supabase's default privileges
    # grant ALL on every new table, function and sequence to anon, authenticated and
    # service_role: whatever a migration forgot to revoke shows here.
    conn = await asyncpg.connect(supabase_database.dsn())
    try:
        assert await lint(conn) == []
    finally:
        await conn.close()


async def test_no_api_role_may_use_a_sequence_the_migrations_made(
    supabase_database: supabase.SupabaseDb,
) -> None:
    # Supabase's default privileges grant ALL on new sequences too: setval on the change
    # feed's would make every later audit insert collide (migration 004 revokes it).
    conn = await asyncpg.connect(supabase_database.dsn())
    try:
        granted = await conn.fetch(
            "SELECT r.rolname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace, pg_roles r"
            " WHERE c.relkind = 'S' AND n.nspname = 'public'"
            " AND r.rolname IN ('anon', 'authenticated', 'service_role', 'compliance_auditor')"
            " AND (has_sequence_privilege(r.oid, c.oid, 'UPDATE')"
            "      OR has_sequence_privilege(r.oid, c.oid, 'USAGE'))"
        )
        sequences = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'S' AND n.nspname = 'public'"
        )
    finally:
        await conn.close()
    assert sequences > 0  # execution_logs.seq's: the test looks at something
    assert [tuple(row) for row in granted] == []
