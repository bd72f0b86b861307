"""An attacker's temporary objects never take the place of ours, whoever fires our triggers.

PostgreSQL searches the session's temporary schema *first* for relations and types unless a
search_path names ``pg_temp`` explicitly (last, where it is harmless). Migration 001's trigger
functions said ``search_path = pg_catalog, public``: a trader who created a temporary table
called ``execution_logs`` with a trigger on it had that trigger run as the migration owner
(a superuser) inside ``orders_write_audit``, orders went unaudited, and a temporary ``fills``
fed fake executions into the lifecycle's fill derivation.

Here every role the API can assume (logged in as ``authenticator``, role and claims set as
db/session.py sets them) shadows every table and type of ours with a temporary one (bait rows
included, and a trigger that reports ``current_user``), and the temporary functions it may
create, then makes each write that fires our trigger functions. The write must end exactly as
it does without the shadows (same rows, same audit trail, same refusal) and the attacker's
code must never run. Temporary objects need TEMPORARY on the database, which migration 002
revokes where it may: the attack grants it back to PUBLIC first (as on Supabase, where the
migration cannot revoke it), so that the search_path defence is proven on its own.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from tests import pg
from tests.sql import as_role

TRADER = uuid.UUID("0b6f1d2a-5c3e-4f7a-9b8c-1d2e3f4a5b6c")
API_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
SPY = "attacker code ran as"
PERMISSION_DENIED = "42501"

# The attacker's objects. Each shadow table gets bait rows for the order under attack and a
# trigger that reports who runs it; a BEFORE trigger returning NULL also swallows the write.
SPY_FUNCTION = f"""
CREATE FUNCTION pg_temp.spy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE WARNING '{SPY} % (superuser: %)', current_user,
        (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
    RETURN NULL;
END
$$
"""
# Every table and enum type of ours gets a temporary namesake, read from the catalog so that
# tables and types added by later migrations are shadowed too (columns spelled out: LIKE
# would need SELECT, which no API role has on alembic_version).
SHADOWED_TABLES = """
SELECT c.relname, format('CREATE TEMP TABLE %I (%s)', c.relname,
              string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)),
                         ', ' ORDER BY a.attnum))
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
   AND a.attnum > 0 AND NOT a.attisdropped
 GROUP BY c.relname ORDER BY c.relname
"""
SHADOWED_TYPES = """
SELECT format('CREATE TYPE pg_temp.%I AS ENUM (%s)', t.typname,
              string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumlabel))
  FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
 WHERE t.typnamespace = 'public'::regnamespace
 GROUP BY t.typname ORDER BY t.typname
"""
# Functions our trigger functions call by name. PostgreSQL never looks functions up in the
# temporary schema, whatever the search_path: these prove it stays so.
SHADOW_FUNCTIONS = (
    ("now()", "timestamptz", "'2000-01-01'::timestamptz"),
    ("pg_trigger_depth()", "integer", "99"),
    ("pg_notify(text, text)", "void", ""),
    ("round(numeric, integer)", "numeric", "0.01"),
)
# 100 shares at 0.01 for the order under attack: what 001's lifecycle function would derive.
BAIT_FILL = (
    "INSERT INTO pg_temp.fills (id, order_id, trader_id, quantity_filled, price_at_fill, venue,"
    " commission) VALUES (gen_random_uuid(), $1, $2, 100, 0.01, 'attacker', 0)"
)
BAIT_ORDER = (
    "INSERT INTO pg_temp.orders (id, trader_id, symbol, side, quantity, order_type, status)"
    " VALUES ($1, gen_random_uuid(), 'EVIL', 'BUY', 100, 'MARKET', 'FILLED')"
)


@dataclass(frozen=True)
class Shadows:
    tables: dict[str, str]
    """Table name -> the CREATE TEMP TABLE statement of its namesake."""
    types: list[str]


async def read_shadows(owner: asyncpg.Connection) -> Shadows:
    tables = {r[0]: r[1] for r in await owner.fetch(SHADOWED_TABLES)}
    types = [r[0] for r in await owner.fetch(SHADOWED_TYPES)]
    assert {"orders", "fills", "execution_logs", "alembic_version"} <= set(tables)
    assert types, "no type to shadow"
    return Shadows(tables, types)


async def create_shadows(conn: asyncpg.Connection, order_id: uuid.UUID, shadows: Shadows) -> None:
    await conn.execute(SPY_FUNCTION)
    for table, statement in shadows.tables.items():
        await conn.execute(statement)
        await conn.execute(
            f"CREATE TRIGGER spy BEFORE INSERT OR UPDATE OR DELETE ON pg_temp.{table}"
            " FOR EACH ROW EXECUTE FUNCTION pg_temp.spy()"
        )
        await conn.execute(
            f"CREATE TRIGGER spy_statement BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE"
            f" ON pg_temp.{table} FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.spy()"
        )
    # Bait goes in with the spies switched off, so that only our functions can trip them.
    for table in ("orders", "fills"):
        await conn.execute(f"ALTER TABLE pg_temp.{table} DISABLE TRIGGER USER")
    await conn.execute(BAIT_ORDER, order_id)
    await conn.execute(BAIT_FILL, order_id, TRADER)
    for table in ("orders", "fills"):
        await conn.execute(f"ALTER TABLE pg_temp.{table} ENABLE TRIGGER USER")
    for statement in shadows.types:
        await conn.execute(statement)
    for signature, returns, value in SHADOW_FUNCTIONS:
        await conn.execute(
            f"CREATE FUNCTION pg_temp.{signature} RETURNS {returns} LANGUAGE plpgsql AS $$"
            f" BEGIN RAISE WARNING '{SPY} %', current_user; RETURN {value}; END $$"
        )


# --- the writes that fire our trigger functions, as each role makes them --------------------


@dataclass(frozen=True)
class Write:
    """One normal write; $1 is the order under attack (arranged in the state ``given``)."""

    sql: str
    given: str


WRITES: dict[str, Write] = {
    "submit": Write(
        "INSERT INTO public.orders (id, trader_id, symbol, side, quantity, order_type)"
        " VALUES ($1, '" + str(TRADER) + "', 'ACME', 'BUY', 100, 'MARKET')",
        given="nothing",
    ),
    "cancel": Write(
        "UPDATE public.orders SET status = 'CANCELLED', status_reason = 'changed my mind'"
        " WHERE id = $1",
        given="routed",
    ),
    # 001 let a temporary fills table turn this into "CANCELLED, 100 filled @ 0.01".
    "touch a cancelled routed order": Write(
        "UPDATE public.orders SET status = 'CANCELLED' WHERE id = $1",
        given="cancelled after routing",
    ),
    "approve": Write(
        "UPDATE public.orders SET approved_at = now() WHERE id = $1",
        given="pending",
    ),
    "route": Write(
        "UPDATE public.orders SET routed_at = now() WHERE id = $1",
        given="approved",
    ),
    "reject": Write(
        "UPDATE public.orders SET status = 'REJECTED', error_code = 'RISK' WHERE id = $1",
        given="pending",
    ),
    # 001 let a temporary fills table turn this into "FILLED 100 @ 0.01" with no fills.
    "re-derive": Write(
        "UPDATE public.orders SET status = status WHERE id = $1",
        given="routed",
    ),
    "fill": Write(
        "INSERT INTO public.fills (order_id, quantity_filled, price_at_fill, venue)"
        " VALUES ($1, 40, 101.50, 'XNAS')",
        given="routed",
    ),
    # Migration 006: a replacement, its confirmation, an expiry.
    "replace": Write(
        "INSERT INTO public.orders (trader_id, symbol, side, quantity, order_type, replaces_id)"
        " VALUES ('" + str(TRADER) + "', 'ACME', 'BUY', 100, 'MARKET', $1)",
        given="pending",
    ),
    "confirm a replacement": Write(
        "UPDATE public.orders SET status = 'REPLACED',"
        " replaced_by_id = (SELECT r.id FROM public.orders r WHERE r.replaces_id = $1)"
        " WHERE id = $1",
        given="replacement requested",
    ),
    "expire": Write(
        "UPDATE public.orders SET status = 'EXPIRED' WHERE id = $1",
        given="past its expiry",
    ),
    "submit expiring": Write(
        "INSERT INTO public.orders (id, trader_id, symbol, side, quantity, order_type, expires_at)"
        " VALUES ($1, '" + str(TRADER) + "', 'ACME', 'BUY', 100, 'MARKET',"
        " now() + interval '20 milliseconds')",
        given="nothing",
    ),
    # No API role may change the audit trail or the fills: the privileges refuse it before
    # execution_logs_refuse_change could run (it guards the owner; see UNREACHABLE).
    "rewrite the audit trail": Write(
        "UPDATE public.execution_logs SET reason = 'nothing happened' WHERE order_id = $1",
        given="routed",
    ),
    "delete a fill": Write(
        "DELETE FROM public.fills WHERE order_id = $1",
        given="partially filled",
    ),
    "truncate the orders": Write(
        "TRUNCATE public.orders, public.fills, public.execution_logs",
        given="routed",
    ),
    # Only the migrating owner stores trusted documents (python -m app documents add).
    "remove a trusted document": Write(
        "DELETE FROM order_api_private.trusted_documents WHERE id = $1::uuid::text",
        given="nothing",
    ),
}

# Trigger functions no API role can fire: every write that would is refused by the privileges.
UNREACHABLE = {
    "execution_logs_refuse_change": (
        "rewrite the audit trail",
        "delete a fill",
        "truncate the orders",
    ),
    "trusted_documents_changed": ("remove a trusted document",),
}

ARRANGE: dict[str, tuple[str, ...]] = {
    "nothing": (),
    "pending": ("submit",),
    "approved": ("submit", "approve"),
    "routed": ("submit", "approve", "route"),
    "partially filled": ("submit", "approve", "route", "fill"),
    "cancelled after routing": ("submit", "approve", "route", "cancel"),
    "replacement requested": ("submit", "replace"),
    "past its expiry": ("submit expiring",),
}


@dataclass(frozen=True)
class Db:
    name: str
    owner: asyncpg.Connection
    api: asyncpg.Connection
    shadows: Shadows


@pytest.fixture(scope="module")
async def db(cluster: pg.Cluster) -> AsyncIterator[Db]:
    name = await pg.create_test_database(cluster)
    owner = await asyncpg.connect(cluster.dsn(name))
    # As on Supabase, where the migration cannot take TEMPORARY from PUBLIC.
    await owner.execute(f"GRANT TEMPORARY ON DATABASE {name} TO PUBLIC")
    # Counts the calls of our plpgsql functions, so that what a write fires is measured.
    await owner.execute(f"ALTER DATABASE {name} SET track_functions = 'pl'")
    api = await asyncpg.connect(cluster.dsn(name, "authenticator"))
    try:
        yield Db(name, owner, api, await read_shadows(owner))
    finally:
        await api.close()
        await owner.close()
        await pg.drop_test_database(cluster, name)


async def arrange(db: Db, given: str) -> uuid.UUID:
    order_id = uuid.uuid4()
    for step in ARRANGE[given]:
        async with as_role(db.api, "service_role", TRADER, commit=True) as conn:
            await conn.execute(WRITES[step].sql, order_id)
        if step == "submit expiring":
            await asyncio.sleep(0.05)  # past its expiry for the next transaction's now()
    return order_id


async def state(conn: asyncpg.Connection, order_id: uuid.UUID) -> dict[str, Any]:
    """The order, its fills and its audit trail, read as service_role (sees every row)."""
    await conn.execute(
        "SELECT set_config('role', 'service_role', true),"
        " set_config('request.jwt.claims', $1, true)",
        json.dumps({"role": "service_role"}),
    )
    order = await conn.fetchrow(
        "SELECT trader_id, status::text, filled_quantity, average_fill_price, status_reason,"
        " error_code, approved_at IS NOT NULL AS approved, routed_at IS NOT NULL AS routed"
        " FROM public.orders WHERE id = $1",
        order_id,
    )
    fills = await conn.fetch(
        "SELECT trader_id, quantity_filled, price_at_fill, venue FROM public.fills"
        " WHERE order_id = $1 ORDER BY quantity_filled",
        order_id,
    )
    audit = await conn.fetch(
        "SELECT action::text, status::text, reason, error_code FROM public.execution_logs"
        ' WHERE order_id = $1 ORDER BY "timestamp"',
        order_id,
    )
    return {
        "order": dict(order) if order else None,
        "fills": [dict(f) for f in fills],
        "audit": [dict(a) for a in audit],
    }


@dataclass(frozen=True)
class Outcome:
    error: str | None
    """The SQLSTATE the write failed with, or None."""
    state: dict[str, Any]
    reports: list[str]
    """What the attacker's code reported from wherever it ran."""
    fired: set[str]
    """The plpgsql functions that ran during the write."""


async def attempt(
    db: Db, role: str, write: Write, order_id: uuid.UUID, *, shadowed: bool
) -> Outcome:
    """Make ``write`` as ``role``, with or without the attacker's shadows in place."""
    reports: list[str] = []

    def listen(_: Any, message: asyncpg.PostgresLogMessage) -> None:
        if SPY in str(message):
            reports.append(str(message))

    listener: Callable[[Any, asyncpg.PostgresLogMessage], None] = listen
    db.api.add_log_listener(listener)
    try:
        async with as_role(db.api, role, TRADER) as conn:
            if shadowed:
                await create_shadows(conn, order_id, db.shadows)
            error: str | None = None
            try:
                async with conn.transaction():
                    await conn.execute(write.sql, *([order_id] if "$1" in write.sql else []))
            except asyncpg.PostgresError as exc:
                error = exc.sqlstate
            fired = {
                r["funcname"]
                for r in await conn.fetch("SELECT funcname FROM pg_stat_xact_user_functions")
            }
            after = await state(conn, order_id)
    finally:
        db.api.remove_log_listener(listener)
    return Outcome(error, after, reports, fired)


CASES = [pytest.param(role, name, id=f"{role}-{name}") for role in API_ROLES for name in WRITES]


@pytest.mark.parametrize(("role", "write_name"), CASES)
async def test_temporary_shadows_change_nothing_and_never_run(
    db: Db, role: str, write_name: str
) -> None:
    write = WRITES[write_name]
    order_id = await arrange(db, write.given)
    assert await db.owner.fetchval(
        "SELECT has_database_privilege($1, current_database(), 'TEMPORARY')", role
    ), "the attack needs TEMPORARY: it proves the search_path on its own"

    expected = await attempt(db, role, write, order_id, shadowed=False)
    attacked = await attempt(db, role, write, order_id, shadowed=True)

    assert attacked.reports == [], (
        f"the attacker's code ran inside our functions: {attacked.reports}"
    )
    assert (attacked.error, attacked.state) == (expected.error, expected.state), (
        "the shadows changed what the write did"
    )


async def test_the_writes_above_fire_every_trigger_and_definer_function(db: Db) -> None:
    """A new trigger or SECURITY DEFINER function must get a write here that fires it."""
    created = {
        r["proname"]
        for r in await db.owner.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast%'"
            " AND (p.prosecdef OR p.prorettype = 'trigger'::regtype)"
        )
    }
    fired: set[str] = set()
    for role in API_ROLES:
        for name, write in WRITES.items():
            order_id = await arrange(db, write.given)
            outcome = await attempt(db, role, write, order_id, shadowed=False)
            fired |= outcome.fired
            if any(name in writes for writes in UNREACHABLE.values()):
                assert outcome.error == PERMISSION_DENIED, (role, name, outcome.error)
    assert fired.isdisjoint(UNREACHABLE)
    # Helpers they call (e.g. 003's orders_checked_money) fire too; what matters is that
    # every trigger and definer function is reached by some write.
    assert created <= fired | set(UNREACHABLE)


async def test_the_writes_above_succeed_for_their_writers(db: Db) -> None:
    """The attack compares outcomes: make sure the interesting ones are successes."""
    for role, names in {
        "authenticated": ("submit", "cancel", "replace"),
        "service_role": (
            *("submit", "approve", "route", "reject", "re-derive", "fill"),
            *("replace", "confirm a replacement", "expire"),
        ),
    }.items():
        for name in names:
            write = WRITES[name]
            order_id = await arrange(db, write.given)
            outcome = await attempt(db, role, write, order_id, shadowed=False)
            assert outcome.error is None, (role, name, outcome.error)
            assert outcome.state["audit"], (role, name)
