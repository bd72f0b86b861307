"""The audit trail and the fills stay append-only for roles that skip row level security.

On Supabase, service_role has BYPASSRLS and the migration owner (postgres) too: the restrictive
policies ``execution_logs_immutable*`` do not apply to them. What holds instead are the
privileges (no API role holds UPDATE, DELETE or TRUNCATE on either table, nor INSERT on the
audit trail) and the triggers (which fire for everyone, the owner and superusers included).
service_role gets BYPASSRLS for this module only: roles are cluster-wide, so it is restored
afterwards (the tests of a session run one after the other).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from tests import pg
from tests.sql import as_role

TRADER = uuid.UUID("5e0c7a3b-8d1f-4b2a-9c6e-3f4a5b6c7d8e")
PERMISSION_DENIED = "42501"
APPEND_ONLY = "OA403"

REWRITES = {
    "update an audit row": "UPDATE public.execution_logs SET reason = 'nothing happened'",
    "delete audit rows": "DELETE FROM public.execution_logs",
    "truncate the audit trail": "TRUNCATE public.execution_logs",
    "insert an audit row": (
        "INSERT INTO public.execution_logs (order_id, trader_id, action, status)"
        " SELECT id, trader_id, 'FILLED', 'FILLED' FROM public.orders"
    ),
    "update a fill": "UPDATE public.fills SET price_at_fill = 0.01",
    "delete fills": "DELETE FROM public.fills",
    "truncate the fills": "TRUNCATE public.fills",
    "delete orders": "DELETE FROM public.orders",
    "truncate the orders": "TRUNCATE public.orders CASCADE",
}


@dataclass(frozen=True)
class Db:
    owner: asyncpg.Connection
    api: asyncpg.Connection
    order_id: uuid.UUID


@pytest.fixture(scope="module")
async def db(cluster: pg.Cluster) -> AsyncIterator[Db]:
    name = await pg.create_test_database(cluster)
    owner = await asyncpg.connect(cluster.dsn(name))
    api = await asyncpg.connect(cluster.dsn(name, "authenticator"))
    had_bypassrls = await owner.fetchval(
        "SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role'"
    )
    try:
        order_id = uuid.uuid4()
        async with as_role(api, "service_role", commit=True) as conn:
            await conn.execute(
                "INSERT INTO orders (id, trader_id, symbol, side, quantity, order_type)"
                " VALUES ($1, $2, 'ACME', 'BUY', 100, 'MARKET')",
                order_id,
                TRADER,
            )
            await conn.execute("UPDATE orders SET approved_at = now() WHERE id = $1", order_id)
            await conn.execute("UPDATE orders SET routed_at = now() WHERE id = $1", order_id)
            await conn.execute(
                "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
                " VALUES ($1, 40, 101.50, 'XNAS')",
                order_id,
            )
        await owner.execute("ALTER ROLE service_role BYPASSRLS")
        yield Db(owner, api, order_id)
    finally:
        await owner.execute(
            f"ALTER ROLE service_role {'BYPASSRLS' if had_bypassrls else 'NOBYPASSRLS'}"
        )
        await api.close()
        await owner.close()
        await pg.drop_test_database(cluster, name)


async def history(conn: asyncpg.Connection) -> list[tuple[object, ...]]:
    """Every audit row and fill, as the owner reads them."""
    logs = await conn.fetch(
        "SELECT id, order_id, action::text, status::text, reason, error_code"
        " FROM public.execution_logs ORDER BY id"
    )
    fills = await conn.fetch(
        "SELECT id, order_id, quantity_filled, price_at_fill FROM public.fills ORDER BY id"
    )
    return [tuple(r) for r in [*logs, *fills]]


async def test_service_role_really_bypasses_row_level_security(db: Db) -> None:
    async with as_role(db.api, "service_role") as conn:
        assert await conn.fetchval("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user")


@pytest.mark.parametrize("rewrite", REWRITES)
async def test_service_role_with_bypassrls_cannot_rewrite_history(db: Db, rewrite: str) -> None:
    before = await history(db.owner)
    with pytest.raises(asyncpg.PostgresError) as refused:
        async with as_role(db.api, "service_role", commit=True) as conn:
            await conn.execute(REWRITES[rewrite])
    assert refused.value.sqlstate == PERMISSION_DENIED
    assert await history(db.owner) == before


@pytest.mark.parametrize("rewrite", REWRITES)
async def test_the_owner_cannot_rewrite_history(db: Db, rewrite: str) -> None:
    """The migration owner (here a superuser: no privilege or policy applies) meets the triggers."""
    before = await history(db.owner)
    with pytest.raises(asyncpg.PostgresError) as refused:
        await db.owner.execute(REWRITES[rewrite])
    if rewrite.startswith("delete orders"):
        # Orders with an audit trail cannot go: the foreign keys restrict it (PostgreSQL 15
        # says foreign_key_violation, later versions restrict_violation).
        assert refused.value.sqlstate in ("23503", "23001")
    else:
        assert refused.value.sqlstate == APPEND_ONLY
    assert await history(db.owner) == before


async def test_service_role_with_bypassrls_still_appends_fills_with_their_audit(db: Db) -> None:
    async with as_role(db.api, "service_role") as conn:
        await conn.execute(
            "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
            " VALUES ($1, 10, 101.60, 'XNAS')",
            db.order_id,
        )
        order = await conn.fetchrow(
            "SELECT status::text, filled_quantity FROM orders WHERE id = $1", db.order_id
        )
        actions = await conn.fetchval(
            "SELECT array_agg(action::text ORDER BY timestamp) FROM execution_logs"
            " WHERE order_id = $1",
            db.order_id,
        )
    assert tuple(order) == ("PARTIAL", 50)
    assert actions == ["SUBMITTED", "APPROVED", "EXECUTED", "FILLED", "FILLED"]
