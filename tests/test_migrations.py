"""The migrations as the migration guide runs them: upgrade, verify, downgrade, verify gone, upgrade.

The guide describes migration 001: its sequence runs against revision 001, then the later
revisions (002 security hardening, 004 change feed) go on top and come off again, each
downgrade giving back what the revision below made.
"""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest

from app.db.migrations import PROJECT_ROOT, head_revision
from tests import pg, privileges
from tests.conftest import Db
from tests.sql import as_role

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
# Migration 006 adds labels (and a type) on top of the guide's.
ENUMS_AT_HEAD = {
    "order_type_enum": [*ENUMS["order_type_enum"], "STOP_LIMIT"],
    "order_status_enum": [*ENUMS["order_status_enum"], "EXPIRED", "REPLACED"],
    "action_enum": [*ENUMS["action_enum"], "EXPIRED", "REPLACED"],
    "time_in_force_enum": ["DAY", "GTC", "IOC", "FOK"],
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
POLICIES_AT_HEAD = POLICIES | {
    "execution_logs_change_feed",  # 004
    "execution_logs_chain_head",  # 005
    "orders_position_keeper",  # 012: the positions trigger reads a fill's order
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
            list(ENUMS_AT_HEAD),
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


def assert_migrated(
    state: dict[str, object],
    policies: set[str] = POLICIES,
    enums: dict[str, list[str]] = ENUMS,
) -> None:
    assert state["tables"] == {
        "orders": (True, True),
        "fills": (True, True),
        "execution_logs": (True, True),
    }
    assert state["enums"] == enums
    indexes = state["indexes"]
    assert isinstance(indexes, dict)
    for name, columns in INDEXES.items():
        assert name in indexes, name
        assert indexes[name].endswith(f"USING btree {columns}"), indexes[name]
    assert state["policies"] == policies


@pytest.fixture
async def empty_database(cluster: pg.Cluster) -> Db:
    name = await pg.create_empty_database(cluster)
    yield Db(cluster, name)  # type: ignore[misc]
    await pg.drop_test_database(cluster, name)


async def test_guide_sequence_upgrade_downgrade_upgrade(empty_database: Db) -> None:
    up = alembic(empty_database, "upgrade", "001")
    assert up.returncode == 0, up.stderr
    assert "Running upgrade  -> 001, Create order execution tables" in up.stderr

    conn = await asyncpg.connect(empty_database.dsn())
    try:
        assert_migrated(await schema_state(conn))

        current = alembic(empty_database, "current")
        assert current.stdout.split() == ["001"]

        down = alembic(empty_database, "downgrade", "-1")
        assert down.returncode == 0, down.stderr
        assert "Running downgrade 001 -> , Create order execution tables" in down.stderr
        gone = await schema_state(conn)
        assert gone["tables"] == {}
        assert gone["enums"] == {}
        assert gone["policies"] == set()
        assert not any(name.startswith("idx_") for name in gone["indexes"])  # type: ignore[attr-defined]
        assert await conn.fetchval("SELECT to_regprocedure('auth.uid()')") is None
        assert await conn.fetchval("SELECT to_regnamespace('auth')") is None
        assert alembic(empty_database, "current").stdout.strip() == ""

        again = alembic(empty_database, "upgrade", "001")
        assert again.returncode == 0, again.stderr
        assert_migrated(await schema_state(conn))

        # The later revisions on top, and all the way down again.
        head = alembic(empty_database, "upgrade", "head")
        assert head.returncode == 0, head.stderr
        assert "Running upgrade 001 -> 002, Harden database security" in head.stderr
        assert_migrated(await schema_state(conn), POLICIES_AT_HEAD, ENUMS_AT_HEAD)
        assert "(head)" in alembic(empty_database, "current").stdout
        to_001 = alembic(empty_database, "downgrade", "001")
        assert to_001.returncode == 0, to_001.stderr
        assert "Running downgrade 002 -> 001, Harden database security" in to_001.stderr
        assert_migrated(await schema_state(conn))
        assert alembic(empty_database, "upgrade", "head").returncode == 0
        base = alembic(empty_database, "downgrade", "base")
        assert base.returncode == 0, base.stderr
        assert (await schema_state(conn))["tables"] == {}
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
    assert "SET search_path = pg_catalog, pg_temp" in sql
    # 006 adds enum labels without using them before commit: no COMMIT splits the script.
    assert "ALTER TYPE public.order_status_enum ADD VALUE 'EXPIRED'" in sql
    assert sql.count("COMMIT;") == 1
    assert "INSERT INTO alembic_version (version_num) VALUES ('001')" in sql
    assert (
        f"UPDATE alembic_version SET version_num='{head_revision()}'" in sql
        or "INSERT INTO alembic_version" in sql
    )


def test_offline_sql_is_each_revisions_sql_files_as_they_are() -> None:
    """Every file of alembic/versions/sql/ runs whole: the --sql output (upgrade, then
    downgrade) holds each one verbatim, comments included, so what a reviewer reads is
    what runs. (authenticator_password.sql's placeholder is filled in when it runs.)"""

    def offline(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "alembic", *args, "--sql"],
            cwd=PROJECT_ROOT,
            env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "", "AUTHENTICATOR_PASSWORD": "pw"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    printed = offline("upgrade", "head") + offline("downgrade", f"{head_revision()}:base")
    files = sorted((PROJECT_ROOT / "alembic" / "versions" / "sql").glob("*/*.sql"))
    assert len(files) > 10
    for path in files:
        text = path.read_text().rstrip()
        if path.name == "authenticator_password.sql":
            text = text.split(":'verifier'")[0]
            assert printed.count("PASSWORD 'SCRAM-SHA-256$") == 1
        assert text in printed, path


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
    assert "Harden database security" in result.stdout
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


async def test_downgrade_of_002_gives_back_exactly_what_001_made(
    cluster: pg.Cluster, empty_database: Db
) -> None:
    only_001 = await pg.create_empty_database(cluster)
    try:
        assert alembic(Db(cluster, only_001), "upgrade", "001").returncode == 0
        up = alembic(empty_database, "upgrade", "head")
        assert up.returncode == 0, up.stderr
        down = alembic(empty_database, "downgrade", "001")
        assert down.returncode == 0, down.stderr
        facts = {}
        for name in (only_001, empty_database.name):
            conn = await asyncpg.connect(cluster.dsn(name))
            try:
                facts[name] = await privileges.render(conn)
            finally:
                await conn.close()
        assert facts[empty_database.name] == facts[only_001], privileges.diff(
            facts[only_001], facts[empty_database.name]
        )
        # ... and 002 again on top of it.
        assert alembic(empty_database, "upgrade", "head").returncode == 0
    finally:
        await pg.drop_test_database(cluster, only_001)


async def test_temporary_is_taken_from_public_where_the_migration_owns_the_database(
    empty_database: Db,
) -> None:
    """Nothing here uses temporary objects; 002's downgrade gives PostgreSQL's default back."""
    roles = ("anon", "authenticated", "service_role", "compliance_auditor", "authenticator")
    temporary = (
        "SELECT r.rolname FROM pg_roles r WHERE r.rolname = ANY($1::text[])"
        " AND has_database_privilege(r.oid, current_database(), 'TEMPORARY') ORDER BY 1"
    )
    assert alembic(empty_database, "upgrade", "head").returncode == 0
    owner = await asyncpg.connect(empty_database.dsn())
    api = await asyncpg.connect(empty_database.dsn("authenticator"))
    try:
        assert await owner.fetch(temporary, roles) == []
        for role in roles[:4]:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with as_role(api, role):
                    await api.execute("CREATE TEMP TABLE execution_logs (id uuid)")

        assert alembic(empty_database, "downgrade", "001").returncode == 0
        assert [r["rolname"] for r in await owner.fetch(temporary, roles)] == sorted(roles)
    finally:
        await api.close()
        await owner.close()


@pytest.mark.parametrize("may_grant_create", [True, False])
async def test_a_migrating_role_that_does_not_own_the_database_says_temporary_stays(
    cluster: pg.Cluster, may_grant_create: bool
) -> None:
    """As on Supabase: a non-superuser migrates a database that belongs to someone else."""
    migrator = f"m_{pg.uuid.uuid4().hex[:8]}"
    name = await pg.create_empty_database(cluster)
    roles = "anon, authenticated, service_role, compliance_auditor, authenticator"
    await pg.admin_execute(
        cluster,
        f"CREATE ROLE {migrator} LOGIN CREATEROLE",
        # The roles exist already (roles are cluster-wide), created by someone else.
        f"GRANT {roles}, order_audit_writer, order_position_keeper TO {migrator} WITH ADMIN OPTION",
        f"GRANT CREATE ON DATABASE {name} TO {migrator}",
    )
    owner = await asyncpg.connect(cluster.dsn(name))
    try:
        option = " WITH GRANT OPTION" if may_grant_create else ""
        await owner.execute(f"GRANT CREATE ON SCHEMA public TO {migrator}{option}")
        up = alembic(
            Db(cluster, name),
            "upgrade",
            "head",
            extra_env={
                "DATABASE_URL": cluster.url(name, migrator).render_as_string(hide_password=False)
            },
        )
        if not may_grant_create:
            # orders_write_audit cannot be handed to order_audit_writer: say why, apply nothing.
            assert up.returncode != 0
            assert "may not grant CREATE on schema public" in up.stderr
            assert await owner.fetchval("SELECT to_regclass('public.orders')") is None
            return
        assert up.returncode == 0, up.stderr
        assert "TEMPORARY on this database stays granted to PUBLIC" in up.stderr
        assert await owner.fetchval(
            "SELECT has_database_privilege('anon', current_database(), 'TEMPORARY')"
        )
        assert (
            await owner.fetchval(
                "SELECT proowner::regrole::text FROM pg_proc WHERE oid = 'orders_write_audit'::regproc"
            )
            == "order_audit_writer"
        )
    finally:
        await owner.close()
        await pg.drop_test_database(cluster, name)
        await pg.admin_execute(cluster, f"DROP OWNED BY {migrator}", f"DROP ROLE {migrator}")


async def _structure(conn: asyncpg.Connection) -> list[str]:
    """What privileges.render leaves out: columns, constraints, indexes, enum labels."""
    rows = await conn.fetch(
        "SELECT format('column %s.%s %s %s %s', c.relname, a.attname,"
        "  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid))"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
        "   AND a.attnum > 0 AND NOT a.attisdropped"
        " UNION ALL SELECT format('constraint %s %s %s', conrelid::regclass, conname,"
        "  pg_get_constraintdef(oid)) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace"
        " UNION ALL SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'"
        " UNION ALL SELECT format('enum %s %s', t.typname, array_agg(e.enumlabel"
        "  ORDER BY e.enumsortorder)) FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid"
        " GROUP BY t.typname"
        " UNION ALL SELECT format('function %s %s', p.oid::regprocedure, md5(p.prosrc))"
        " FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace"
        " ORDER BY 1"
    )
    return [r[0] for r in rows]


async def test_downgrade_of_006_gives_back_exactly_what_005_made(
    cluster: pg.Cluster, empty_database: Db
) -> None:
    only_005 = await pg.create_empty_database(cluster)
    try:
        assert alembic(Db(cluster, only_005), "upgrade", "005").returncode == 0
        up = alembic(empty_database, "upgrade", "006")
        assert up.returncode == 0, up.stderr
        down = alembic(empty_database, "downgrade", "-1")
        assert down.returncode == 0, down.stderr
        assert "Running downgrade 006 -> 005" in down.stderr
        facts = {}
        for name in (only_005, empty_database.name):
            conn = await asyncpg.connect(cluster.dsn(name))
            try:
                facts[name] = await privileges.render(conn) + await _structure(conn)
            finally:
                await conn.close()
        assert facts[empty_database.name] == facts[only_005], privileges.diff(
            facts[only_005], facts[empty_database.name]
        )
        again = alembic(empty_database, "upgrade", "head")
        assert again.returncode == 0, again.stderr
    finally:
        await pg.drop_test_database(cluster, only_005)


@pytest.mark.parametrize(
    "row",
    [
        "'STOP_LIMIT', 10.00, 9.00, 'GTC'",  # a type 005 does not know
        "'MARKET', NULL, NULL, 'IOC'",  # a time in force it cannot honour
    ],
)
async def test_downgrade_of_006_refuses_to_lose_what_005_cannot_hold(
    empty_database: Db, row: str
) -> None:
    assert alembic(empty_database, "upgrade", "006").returncode == 0
    conn = await asyncpg.connect(empty_database.dsn())
    try:
        await conn.execute(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price, stop_price,"
            f" time_in_force) VALUES (gen_random_uuid(), 'ACME', 'BUY', 1, {row})"
        )
        down = alembic(empty_database, "downgrade", "-1")
        assert down.returncode != 0
        assert "revision 005 cannot represent: downgrade refused" in down.stderr
        assert alembic(empty_database, "current").stdout.split() == ["006"]
    finally:
        await conn.close()
