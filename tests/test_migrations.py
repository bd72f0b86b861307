"""Migration 001 as the migration guide runs it: upgrade, verify, downgrade, verify gone, upgrade."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest

from app.db.migrations import PROJECT_ROOT, head_revision
from tests import pg
from tests.conftest import Db

ENUMS = {
    "order_type_enum": ["MARKET", "LIMIT", "STOP"],
    "order_status_enum": ["PENDING", "FILLED", "PARTIAL", "REJECTED", "CANCELLED"],
    "action_enum": [
        "SUBMITTED",
        "APPROVED",
        "EXECUTED",
        "FILLED",
        "REJECTED",
        "CANCELLED",
        "RECOVERED",
    ],
}
INDEXES = {
    "idx_orders_trader_created": "(trader_id, created_at DESC)",
    "idx_orders_status": "(status)",
    "idx_orders_trader_status": "(trader_id, status)",
    "idx_fills_order": "(order_id)",
    "idx_fills_timestamp": '("timestamp" DESC)',
    "idx_execution_logs_trader_timestamp": '(trader_id, "timestamp" DESC)',
    "idx_execution_logs_order": "(order_id)",
    "idx_execution_logs_action": "(action)",
}
POLICIES = {  # the guide's five, and one per role and command beside them
    "orders_trader_isolation",
    "fills_trader_isolation",
    "execution_logs_trader_isolation",
    "execution_logs_immutable",
    "execution_logs_immutable_delete",
    "orders_trader_submit",
    "orders_trader_cancel",
    "orders_service_role",
    "orders_compliance_read",
    "fills_service_role",
    "fills_compliance_read",
    "execution_logs_service_role_read",
    "execution_logs_compliance_read",
    "execution_logs_audit_insert",
}


def alembic(
    database: Db, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "DATABASE_URL": database.owner_url.render_as_string(hide_password=False),
        "PATH": "/usr/bin:/bin",
        **(extra_env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


async def schema_state(conn: asyncpg.Connection) -> dict[str, object]:
    tables = {
        r["tablename"]: (r["rowsecurity"], r["forcerowsecurity"])
        for r in await conn.fetch(
            "SELECT c.relname AS tablename, c.relrowsecurity AS rowsecurity,"
            " c.relforcerowsecurity AS forcerowsecurity FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
            " AND c.relname IN ('orders', 'fills', 'execution_logs')"
        )
    }
    enums = {
        r["typname"]: list(r["labels"])
        for r in await conn.fetch(
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels"
            " FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid"
            " WHERE t.typname = ANY($1::text[]) GROUP BY t.typname",
            list(ENUMS),
        )
    }
    indexes = {
        r["indexname"]: r["indexdef"]
        for r in await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        )
    }
    policies = {
        r["policyname"]
        for r in await conn.fetch(
            "SELECT policyname FROM pg_policies"
            " WHERE tablename IN ('orders', 'fills', 'execution_logs')"
        )
    }
    return {"tables": tables, "enums": enums, "indexes": indexes, "policies": policies}


def assert_migrated(state: dict[str, object]) -> None:
    assert state["tables"] == {
        "orders": (True, True),
        "fills": (True, True),
        "execution_logs": (True, True),
    }
    assert state["enums"] == ENUMS
    indexes = state["indexes"]
    assert isinstance(indexes, dict)
    for name, columns in INDEXES.items():
        assert name in indexes, name
        assert indexes[name].endswith(f"USING btree {columns}"), indexes[name]
    assert state["policies"] == POLICIES


@pytest.fixture
async def empty_database(cluster: pg.Cluster) -> Db:
    name = f"e_{pg.uuid.uuid4().hex[:12]}"
    await pg.admin_execute(cluster, f"CREATE DATABASE {name}")
    yield Db(cluster, name)  # type: ignore[misc]
    await pg.drop_test_database(cluster, name)


async def test_guide_sequence_upgrade_downgrade_upgrade(empty_database: Db) -> None:
    up = alembic(empty_database, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    assert "Running upgrade  -> 001, Create order execution tables" in up.stderr

    conn = await asyncpg.connect(empty_database.dsn())
    try:
        assert_migrated(await schema_state(conn))

        current = alembic(empty_database, "current")
        assert f"{head_revision()} (head)" in current.stdout

        # The guide's "downgrade -1", once per revision above 001, then once for 001.
        for _ in range(10):
            down = alembic(empty_database, "downgrade", "-1")
            assert down.returncode == 0, down.stderr
            if "Running downgrade 001 -> , Create order execution tables" in down.stderr:
                break
        else:
            pytest.fail("downgrade -1 never reached 001")
        gone = await schema_state(conn)
        assert gone["tables"] == {}
        assert gone["enums"] == {}
        assert gone["policies"] == set()
        assert not any(name.startswith("idx_") for name in gone["indexes"])  # type: ignore[attr-defined]
        assert await conn.fetchval("SELECT to_regprocedure('auth.uid()')") is None
        assert await conn.fetchval("SELECT to_regnamespace('auth')") is None
        assert alembic(empty_database, "current").stdout.strip() == ""

        again = alembic(empty_database, "upgrade", "head")
        assert again.returncode == 0, again.stderr
        assert_migrated(await schema_state(conn))
    finally:
        await conn.close()


async def test_downgrade_keeps_an_auth_schema_it_found(empty_database: Db) -> None:
    conn = await asyncpg.connect(empty_database.dsn())
    try:
        # What Supabase provides before our migration runs.
        await conn.execute(
            "CREATE SCHEMA auth;"
            " CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS"
            " $$ SELECT (nullif(current_setting('request.jwt.claims', true), '')::jsonb"
            " ->> 'sub')::uuid $$;"
        )
        assert alembic(empty_database, "upgrade", "head").returncode == 0
        assert alembic(empty_database, "downgrade", "base").returncode == 0
        assert await conn.fetchval("SELECT to_regprocedure('auth.uid()') IS NOT NULL")
        # The functions it had to add itself are gone again.
        assert await conn.fetchval("SELECT to_regprocedure('auth.jwt()')") is None
    finally:
        await conn.close()


def test_offline_sql_needs_no_database() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head", "--sql"],
        cwd=PROJECT_ROOT,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sql = result.stdout
    assert "CREATE TABLE orders" in sql
    assert "CREATE POLICY execution_logs_immutable ON execution_logs" in sql
    assert (
        f"UPDATE alembic_version SET version_num='{head_revision()}'" in sql
        or "INSERT INTO alembic_version" in sql
    )


def test_history_lists_the_migration() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "history", "--verbose"],
        cwd=PROJECT_ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"Rev: {head_revision()} (head)" in result.stdout
    assert "Rev: 001" in result.stdout
    assert "Create order execution tables" in result.stdout


async def test_stamp_marks_the_revision_without_running_it(empty_database: Db) -> None:
    # The guide's troubleshooting: "alembic stamp head" after a manual apply, "stamp base" when stuck.
    assert alembic(empty_database, "stamp", "head").returncode == 0
    assert f"{head_revision()} (head)" in alembic(empty_database, "current").stdout
    conn = await asyncpg.connect(empty_database.dsn())
    try:
        assert await conn.fetchval("SELECT to_regclass('orders')") is None
    finally:
        await conn.close()
    assert alembic(empty_database, "stamp", "base").returncode == 0
    assert alembic(empty_database, "current").stdout.strip() == ""


async def test_authenticator_password_is_set_at_migration_time_and_never_printed(
    empty_database: Db,
) -> None:
    env = {"AUTHENTICATOR_PASSWORD": "s3cret-for-the-login-role"}
    up = alembic(empty_database, "upgrade", "head", extra_env=env)
    assert up.returncode == 0, up.stderr
    assert "s3cret" not in up.stdout + up.stderr
    conn = await asyncpg.connect(empty_database.dsn())
    try:
        assert await conn.fetchval(
            "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'authenticator'"
        )
        assert await conn.fetchval(
            "SELECT rolcanlogin AND NOT rolsuper AND NOT rolbypassrls AND NOT rolinherit"
            " FROM pg_roles WHERE rolname = 'authenticator'"
        )
        # The password is cluster-wide: leave the cluster as the other tests expect it.
        await conn.execute("ALTER ROLE authenticator PASSWORD NULL")
    finally:
        await conn.close()
    offline = alembic(empty_database, "upgrade", "head", "--sql", extra_env=env)
    assert "s3cret" not in offline.stdout
