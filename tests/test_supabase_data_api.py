"""docs/deploying/supabase.md's Data API claims, each shown on the Supabase-like database.

What pg_graphql would list to anon and authenticated and what row level security leaves
them; what the Data API's roles (PostgREST and pg_graphql run as them) can do in SQL; the
two roles the migration leaves after a downgrade; and the login the API refuses.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from alembic import command
from app.db.migrations import PROJECT_ROOT, alembic_config
from app.db.session import UnsafeLoginRole
from app.main import create_app
from tests import supabase
from tests.conftest import SupabaseSession
from tests.sql import as_role
from tests.test_api_isolation import World
from tests.test_supabase import world  # noqa: F401  (the module's fixture, reused)
from tests.test_supabase_tokens import supabase_settings
from tests.test_tokens import JWKSServer, jwk, jwks_server, make_token, rsa_key  # noqa: F401

HOOK = PROJECT_ROOT / "examples" / "supabase" / "compliance_auditor_hook.sql"
# The claims Supabase Auth refuses to sign without, whatever its hook returns (supabase/auth,
# internal/tokens/service.go, the hook output's schema).
AUTH_REQUIRED_CLAIMS = {"aud", "exp", "iat", "sub", "email", "phone", "role", "aal"}
AUTH_REQUIRED_CLAIMS |= {"session_id", "is_anonymous"}
VIEWER_AND_ORDERS = "{ viewer { role } orders(first: 50) { edges { node { id traderId } } } }"


# --- pg_graphql ---------------------------------------------------------------------------------

# pg_graphql lists a relation to a role that may SELECT any of its columns (its security
# page: visibility follows privileges); splinter's lints 0026/0027 check the same.
SELECTABLE = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                  AND NOT a.attisdropped AND has_column_privilege($1, c.oid, a.attnum, 'SELECT'))
 ORDER BY 1
"""
LISTED = {
    "anon": ["execution_logs", "fills", "market_prices", "orders", "position_view", "positions"],
    "authenticated": [
        *("execution_logs", "fills", "market_prices", "order_limits", "orders"),
        *("position_view", "positions", "trading_session"),
    ],
}


@pytest.mark.parametrize("role", sorted(LISTED))
async def test_pg_graphql_would_list_these_tables_and_row_level_security_hides_the_rows(
    world: World,  # noqa: F811
    role: str,
) -> None:
    conn = await asyncpg.connect(world.db.dsn(supabase.LOGIN))
    try:
        listed = [r["relname"] for r in await conn.fetch(SELECTABLE, role)]
        assert listed == LISTED[role]
        forced = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relname = ANY($1::text[])"
            " AND relrowsecurity AND relforcerowsecurity",
            listed,
        )
        # position_view is a view: security_invoker, so the tables' policies apply through it.
        assert len(forced) == len(listed) - 1
        invoker = await conn.fetchval(
            "SELECT 'security_invoker=true' = ANY(reloptions) FROM pg_class"
            " WHERE relname = 'position_view'"
        )
        assert invoker is True
        async with as_role(conn, role, None if role == "anon" else uuid.uuid4()) as tx:
            for table in ("orders", "fills", "execution_logs", "positions", "position_view"):
                assert await tx.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await conn.close()


# --- what the Data API's roles can do in SQL ------------------------------------------------


async def test_anon_may_not_read_the_order_limits(world: World) -> None:  # noqa: F811
    conn = await asyncpg.connect(world.db.dsn(supabase.LOGIN))
    try:
        async with as_role(conn, "anon") as tx:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await tx.fetchval("SELECT count(*) FROM order_limits")
    finally:
        await conn.close()


INSERT_ORDER = (
    "INSERT INTO orders (trader_id, client_order_id, symbol, side, quantity, order_type)"
    " VALUES ($1, $2, 'AAPL', 'BUY', $3, 'MARKET') RETURNING id"
)


async def test_a_user_inserts_and_cancels_their_own_order_in_sql_and_each_write_is_audited(
    world: World,  # noqa: F811
) -> None:
    user = uuid.uuid4()
    conn = await asyncpg.connect(world.db.dsn(supabase.LOGIN))
    try:
        async with as_role(conn, "authenticated", user) as tx:
            order_id = await tx.fetchval(INSERT_ORDER, user, "c-1", 5)
            cancelled = await tx.execute(
                "UPDATE orders SET status = 'CANCELLED' WHERE id = $1", order_id
            )
            assert cancelled == "UPDATE 1"
            actions = await tx.fetch(
                "SELECT action::text FROM execution_logs WHERE order_id = $1 ORDER BY seq",
                order_id,
            )
            assert [r["action"] for r in actions] == ["SUBMITTED", "CANCELLED"]
            with pytest.raises(asyncpg.UniqueViolationError):
                await tx.fetchval(INSERT_ORDER, user, "c-1", 5)
    finally:
        await conn.close()


async def test_a_user_cannot_insert_in_sql_an_order_for_another_trader_or_breaking_a_rule(
    world: World,  # noqa: F811
) -> None:
    user = uuid.uuid4()
    conn = await asyncpg.connect(world.db.dsn(supabase.LOGIN))
    try:
        for trader, quantity in ((world.b, 5), (user, 0)):
            async with as_role(conn, "authenticated", user) as tx:
                with pytest.raises(asyncpg.PostgresError):
                    await tx.fetchval(INSERT_ORDER, trader, None, quantity)
    finally:
        await conn.close()


async def test_a_user_cannot_cancel_another_traders_order_in_sql(world: World) -> None:  # noqa: F811
    conn = await asyncpg.connect(world.db.dsn(supabase.LOGIN))
    try:
        async with as_role(conn, "authenticated", world.a) as tx:
            done = await tx.execute(
                "UPDATE orders SET status = 'CANCELLED' WHERE id = $1", uuid.UUID(world.b_open)
            )
        assert done == "UPDATE 0"
    finally:
        await conn.close()


async def test_service_role_reads_every_row_but_writes_no_column_a_trader_chose(
    world: World,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(world.db.dsn(supabase.LOGIN))
    try:
        async with as_role(conn, "service_role") as tx:
            ids = {str(r["id"]) for r in await tx.fetch("SELECT id FROM orders")}
            assert world.a_orders | world.b_orders <= ids
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await tx.execute(
                    "UPDATE orders SET quantity = 1 WHERE id = $1", uuid.UUID(world.b_open)
                )
    finally:
        await conn.close()


async def test_no_role_of_the_api_or_the_data_api_may_delete_an_order_or_change_its_id(
    world: World,  # noqa: F811
) -> None:
    # Why replaced_by_id has no index (splinter's unindexed foreign key): its foreign key is
    # only ever looked up from the other side (orders.id) unless an order is deleted or its id
    # changes, and no role may do either; every lookup of a replacement goes through id or
    # replaces_id (app/engine/order_rows.py, migration 006).
    conn = await asyncpg.connect(world.db.dsn())
    try:
        allowed = await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])"
            " AND (has_table_privilege(rolname, 'orders', 'DELETE')"
            "      OR has_column_privilege(rolname, 'orders', 'id', 'UPDATE'))",
            ["anon", "authenticated", "service_role", "compliance_auditor", "authenticator"],
        )
    finally:
        await conn.close()
    assert allowed == []


# --- the migration's own roles, and the login it refuses -----------------------------------------


async def test_a_downgrade_leaves_the_two_roles_it_created_and_postgres_membership_holding_nothing(
    supabase_cluster: SupabaseSession,
) -> None:
    cluster = supabase_cluster.cluster
    name = await supabase.create_database(cluster, template=supabase.PLATFORM)
    try:
        url = cluster.url(name).render_as_string(hide_password=False)
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
        conn = await asyncpg.connect(cluster.dsn(name))
        try:
            left = await conn.fetch(
                "SELECT rolname FROM pg_roles"
                " WHERE rolname IN ('compliance_auditor', 'order_audit_writer') ORDER BY 1"
            )
            assert [r["rolname"] for r in left] == ["compliance_auditor", "order_audit_writer"]
            assert await conn.fetchval(
                "SELECT pg_has_role(current_user, 'order_audit_writer', 'MEMBER')"
            )
            # Holding nothing here: no object owned, no privilege on any object of public.
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_class c, pg_roles r"
                " WHERE r.rolname IN ('compliance_auditor', 'order_audit_writer')"
                " AND c.relnamespace = 'public'::regnamespace"
                " AND (c.relowner = r.oid OR c.relacl::text LIKE '%' || r.rolname || '=%')"
            )
            functions = await conn.fetchval(
                "SELECT count(*) FROM pg_proc p, pg_roles r"
                " WHERE r.rolname IN ('compliance_auditor', 'order_audit_writer')"
                " AND (p.proowner = r.oid OR p.proacl::text LIKE '%' || r.rolname || '=%')"
            )
            assert (held, functions) == (0, 0)
        finally:
            await conn.close()
    finally:
        await supabase.drop_database(cluster, name)


async def test_the_api_refuses_to_serve_as_postgres_which_owns_the_tables_and_bypasses_rls(
    supabase_database: supabase.SupabaseDb,
) -> None:
    settings = supabase_settings(
        supabase_database,
        API_DATABASE_URL=supabase_database.owner_url.render_as_string(hide_password=False),
    )
    app = create_app(settings)
    try:
        with pytest.raises(UnsafeLoginRole, match="has BYPASSRLS and owns the order tables"):
            async with app.router.lifespan_context(app):
                pytest.fail("the app started as postgres")
    finally:
        await app.state.database.dispose()
