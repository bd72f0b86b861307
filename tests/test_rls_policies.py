"""Attacks on the row level security of orders, fills and execution_logs, in plain SQL.

Every attack runs through the API's login role (``authenticator``) with the role and claims set
transaction-locally, exactly as the API does (tests.sql.as_role): owners and superusers bypass
row level security, so a policy test run as the owner would prove nothing. Only the arrangement
commits, and it is done as the roles would do it: traders submit, service_role approves, routes
and fills. Every attack is rolled back, so the attacks of this module share one arranged database.

Refusals come in two kinds with the same SQLSTATE 42501: "permission denied" (the grants) and
"violates row-level security policy" (the policies); reads and writes of invisible rows are not
refused at all but see and touch nothing, which the tests tell apart by counting.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from tests import pg
from tests.sql import as_role

TABLES = ("orders", "fills", "execution_logs")
API_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
PRIVILEGE = "42501"
A = uuid.UUID("aaaaaaaa-1111-4111-8111-111111111111")
B = uuid.UUID("bbbbbbbb-2222-4222-8222-222222222222")
C = uuid.UUID("cccccccc-3333-4333-8333-333333333333")
"""A trader with no orders at all."""


# --- arranging, as the roles would -------------------------------------------------------------


async def submit(api: asyncpg.Connection, trader: uuid.UUID, **fields: Any) -> uuid.UUID:
    row: dict[str, Any] = {
        "trader_id": trader,
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 100,
        "order_type": "LIMIT",
        "price": 10,
    }
    row.update(fields)
    columns = ", ".join(row)
    values = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    async with as_role(api, "authenticated", trader, commit=True) as conn:
        order_id: uuid.UUID = await conn.fetchval(
            f"INSERT INTO orders ({columns}) VALUES ({values}) RETURNING id", *row.values()
        )
    return order_id


async def as_service(api: asyncpg.Connection, sql: str, *args: Any) -> Any:
    async with as_role(api, "service_role", commit=True) as conn:
        return await conn.fetchval(sql, *args)


async def approve_and_route(api: asyncpg.Connection, order_id: uuid.UUID) -> None:
    await as_service(api, "UPDATE orders SET approved_at = now() WHERE id = $1", order_id)
    await as_service(api, "UPDATE orders SET routed_at = now() WHERE id = $1", order_id)


async def fill(api: asyncpg.Connection, order_id: uuid.UUID, quantity: int) -> uuid.UUID:
    fill_id: uuid.UUID = await as_service(
        api,
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue, commission)"
        " VALUES ($1, $2, 10.05, 'NYSE', 0.40) RETURNING id",
        order_id,
        quantity,
    )
    return fill_id


@dataclass(frozen=True)
class Trader:
    id: uuid.UUID
    pending: uuid.UUID
    """Submitted, never approved."""
    partial: uuid.UUID
    """Approved, routed, 40 of 100 filled."""
    fill: uuid.UUID
    logs: frozenset[uuid.UUID]

    @property
    def orders(self) -> set[uuid.UUID]:
        return {self.pending, self.partial}


async def arrange_trader(api: asyncpg.Connection, trader: uuid.UUID) -> Trader:
    pending = await submit(api, trader, order_type="MARKET", price=None, quantity=10)
    partial = await submit(api, trader, symbol="MSFT")
    await approve_and_route(api, partial)
    fill_id = await fill(api, partial, 40)
    async with as_role(api, "compliance_auditor") as conn:
        logs = await conn.fetch("SELECT id FROM execution_logs WHERE trader_id = $1", trader)
    return Trader(trader, pending, partial, fill_id, frozenset(r["id"] for r in logs))


@dataclass(frozen=True)
class World:
    owner: asyncpg.Connection
    api: asyncpg.Connection
    """Logged in as authenticator, the API's login role."""
    a: Trader
    b: Trader

    def all_ids(self, table: str) -> set[uuid.UUID]:
        if table == "orders":
            return self.a.orders | self.b.orders
        if table == "fills":
            return {self.a.fill, self.b.fill}
        return set(self.a.logs | self.b.logs)

    def own_ids(self, trader: Trader, table: str) -> set[uuid.UUID]:
        ids = {"orders": trader.orders, "fills": {trader.fill}, "execution_logs": trader.logs}
        return set(ids[table])


@pytest.fixture(scope="module")
async def world(cluster: pg.Cluster) -> AsyncIterator[World]:
    name = await pg.create_test_database(cluster)
    owner = await asyncpg.connect(cluster.dsn(name))
    api = await asyncpg.connect(cluster.dsn(name, "authenticator"))
    try:
        a = await arrange_trader(api, A)
        b = await arrange_trader(api, B)
        yield World(owner, api, a, b)
    finally:
        await api.close()
        await owner.close()
        await pg.drop_test_database(cluster, name)


@pytest.fixture(autouse=True)
def _attacks_leave_no_trace(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "world" in request.fixturenames:
        w: World = request.getfixturevalue("world")
        assert not w.api.is_in_transaction()
        assert not w.owner.is_in_transaction()


# --- attacking ---------------------------------------------------------------------------------


async def ids_seen(
    w: World,
    role: str,
    sub: uuid.UUID | str | None,
    table: str,
    *,
    claims: dict[str, Any] | None = None,
) -> set[uuid.UUID]:
    async with as_role(w.api, role, sub, extra_claims=claims) as conn:
        return {r["id"] for r in await conn.fetch(f"SELECT id FROM {table}")}


async def outcome(
    w: World, role: str, sub: uuid.UUID | str | None, sql: str, *args: Any
) -> str | asyncpg.PostgresError:
    """The command tag of ``sql`` run as ``role`` (rolled back), or the error refusing it."""
    try:
        async with as_role(w.api, role, sub) as conn:
            tag: str = await conn.execute(sql, *args)
            return tag
    except asyncpg.PostgresError as error:
        return error


def assert_permission_denied(result: str | asyncpg.PostgresError) -> None:
    assert isinstance(result, asyncpg.PostgresError), f"not refused: {result}"
    assert result.sqlstate == PRIVILEGE, result
    assert "permission denied" in str(result), result


def assert_policy_violation(result: str | asyncpg.PostgresError) -> None:
    assert isinstance(result, asyncpg.PostgresError), f"not refused: {result}"
    assert result.sqlstate == PRIVILEGE, result
    assert "row-level security" in str(result), result


@asynccontextmanager
async def rolled_back(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that never commits, whatever happens inside it."""
    tx = conn.transaction()
    await tx.start()
    try:
        yield conn
    finally:
        await tx.rollback()


def bind(sql: str, **values: Any) -> tuple[str, list[Any]]:
    """``:name`` placeholders to asyncpg's ``$n``, passing only the values the SQL uses."""
    args: list[Any] = []
    for name, value in values.items():
        if f":{name}" in sql:
            args.append(value)
            sql = sql.replace(f":{name}", f"${len(args)}")
    return sql, args


async def order_state(w: World, order_id: uuid.UUID) -> asyncpg.Record:
    async with as_role(w.api, "compliance_auditor") as conn:
        row: asyncpg.Record = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    return row


async def counts(w: World) -> dict[str, int]:
    async with as_role(w.api, "compliance_auditor") as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


# --- traders: reading --------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
async def test_each_trader_sees_exactly_their_own_rows(world: World, table: str) -> None:
    for trader in (world.a, world.b):
        assert await ids_seen(world, "authenticated", trader.id, table) == world.own_ids(
            trader, table
        )


@pytest.mark.parametrize("table", TABLES)
async def test_a_trader_without_orders_sees_no_rows(world: World, table: str) -> None:
    assert await ids_seen(world, "authenticated", C, table) == set()


async def test_trader_cannot_read_another_traders_order_by_its_id(world: World) -> None:
    async with as_role(world.api, "authenticated", A) as conn:
        other = await conn.fetch("SELECT * FROM orders WHERE id = $1", world.b.partial)
        own = await conn.fetch("SELECT * FROM orders WHERE id = $1", world.a.partial)
        fills = await conn.fetch("SELECT * FROM fills WHERE order_id = $1", world.b.partial)
        logs = await conn.fetch("SELECT * FROM execution_logs WHERE order_id = $1", world.b.partial)

    assert (len(other), len(own), len(fills), len(logs)) == (0, 1, 0, 0)


# --- traders: orders ---------------------------------------------------------------------------

CANCEL = "UPDATE orders SET status = 'CANCELLED', status_reason = 'changed my mind' WHERE id = $1"


@pytest.mark.parametrize("which", ["pending", "partial"])
async def test_trader_can_cancel_their_own_open_order(world: World, which: str) -> None:
    order_id = getattr(world.a, which)
    async with as_role(world.api, "authenticated", A) as conn:
        tag = await conn.execute(CANCEL, order_id)
        status = await conn.fetchval("SELECT status FROM orders WHERE id = $1", order_id)

    assert (tag, status) == ("UPDATE 1", "CANCELLED")


@pytest.mark.parametrize("which", ["pending", "partial"])
async def test_trader_cannot_cancel_another_traders_order(world: World, which: str) -> None:
    order_id = getattr(world.b, which)
    before = await order_state(world, order_id)

    result = await outcome(world, "authenticated", A, CANCEL, order_id)

    assert result == "UPDATE 0"
    assert await order_state(world, order_id) == before


async def test_trader_cannot_cancel_another_traders_order_through_an_upsert(world: World) -> None:
    result = await outcome(
        world,
        "authenticated",
        A,
        "INSERT INTO orders (id, trader_id, symbol, side, quantity, order_type)"
        " VALUES ($1, $2, 'AAPL', 'BUY', 1, 'MARKET')"
        " ON CONFLICT (id) DO UPDATE SET status = 'CANCELLED'",
        world.b.pending,
        A,
    )

    assert_policy_violation(result)
    assert (await order_state(world, world.b.pending))["status"] == "PENDING"


async def test_trader_cancelling_every_order_cancels_only_their_own(world: World) -> None:
    before = {order_id: await order_state(world, order_id) for order_id in world.b.orders}

    result = await outcome(world, "authenticated", A, "UPDATE orders SET status = 'CANCELLED'")

    assert result == "UPDATE 2"  # their own two, nothing of B's
    assert {order_id: await order_state(world, order_id) for order_id in world.b.orders} == before


@pytest.mark.parametrize("which", ["own", "other"])
async def test_trader_cannot_delete_an_order(world: World, which: str) -> None:
    order_id = world.a.pending if which == "own" else world.b.pending

    result = await outcome(world, "authenticated", A, "DELETE FROM orders WHERE id = $1", order_id)

    assert_permission_denied(result)


async def test_trader_can_submit_an_order_for_themselves(world: World) -> None:
    async with as_role(world.api, "authenticated", A) as conn:
        row = await conn.fetchrow(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
            " VALUES ($1, 'IBM', 'SELL', 5, 'MARKET') RETURNING trader_id, status",
            A,
        )

    assert dict(row) == {"trader_id": A, "status": "PENDING"}


@pytest.mark.parametrize("victim", [B, C], ids=["trader-with-orders", "trader-without"])
async def test_trader_cannot_submit_an_order_for_another_trader(
    world: World, victim: uuid.UUID
) -> None:
    result = await outcome(
        world,
        "authenticated",
        A,
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
        " VALUES ($1, 'IBM', 'SELL', 5, 'MARKET')",
        victim,
    )

    assert_policy_violation(result)


@pytest.mark.parametrize(
    ("which", "status", "refused_by"),
    [
        ("pending", "FILLED", "OA409"),
        ("pending", "PARTIAL", "OA409"),
        # a legal transition for the engine: the lifecycle lets it pass, the policy does not
        ("pending", "REJECTED", PRIVILEGE),
        ("partial", "FILLED", "OA409"),
        ("partial", "PENDING", "OA409"),
        ("partial", "REJECTED", "OA409"),
    ],
)
async def test_trader_cannot_set_a_status_other_than_cancelled(
    world: World, which: str, status: str, refused_by: str
) -> None:
    order_id = getattr(world.a, which)
    before = await order_state(world, order_id)

    result = await outcome(
        world, "authenticated", A, f"UPDATE orders SET status = '{status}' WHERE id = $1", order_id
    )

    assert isinstance(result, asyncpg.PostgresError), result
    assert result.sqlstate == refused_by, result
    assert await order_state(world, order_id) == before


@pytest.mark.parametrize(
    "assignment",
    [
        "approved_at = now()",
        "routed_at = now()",
        "recovered_at = now()",
        "retry_attempt = 1",
        "error_code = 'X'",
        "filled_quantity = 10",
        "average_fill_price = 1",
        "quantity = 1",
        "price = 0.01",
        "symbol = 'GME'",
        "trader_id = 'bbbbbbbb-2222-4222-8222-222222222222'",
        "created_at = now() - interval '1 day'",
        "id = gen_random_uuid()",
    ],
)
async def test_trader_cannot_write_a_column_other_than_status_and_reason(
    world: World, assignment: str
) -> None:
    result = await outcome(
        world, "authenticated", A, f"UPDATE orders SET {assignment} WHERE id = $1", world.a.pending
    )

    assert_permission_denied(result)


async def test_trader_can_change_their_order_only_by_cancelling_it(world: World) -> None:
    result = await outcome(
        world,
        "authenticated",
        A,
        "UPDATE orders SET status_reason = 'venue confirmed' WHERE id = $1",
        world.a.pending,
    )

    assert isinstance(result, asyncpg.PostgresError), result


# --- traders: fills and the audit trail --------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
        " VALUES ($1, 1, 10, 'NYSE')",
        "UPDATE fills SET quantity_filled = 100 WHERE order_id = $1",
        "DELETE FROM fills WHERE order_id = $1",
        "INSERT INTO execution_logs (order_id, trader_id, action) VALUES ($1, $2, 'FILLED')",
        "UPDATE execution_logs SET reason = 'rewritten' WHERE order_id = $1",
        "DELETE FROM execution_logs WHERE order_id = $1",
    ],
    ids=["insert-fill", "update-fill", "delete-fill", "insert-log", "update-log", "delete-log"],
)
@pytest.mark.parametrize("which", ["own", "other"])
async def test_trader_cannot_write_fills_or_audit_rows(world: World, sql: str, which: str) -> None:
    trader = world.a if which == "own" else world.b
    args = (trader.partial, trader.id) if "$2" in sql else (trader.partial,)

    result = await outcome(world, "authenticated", A, sql, *args)

    assert_permission_denied(result)


# --- anon --------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
async def test_anonymous_caller_sees_no_row_of_any_table(world: World, table: str) -> None:
    assert await ids_seen(world, "anon", None, table) == set()


@pytest.mark.parametrize("table", TABLES)
async def test_anonymous_caller_with_a_sub_claim_still_sees_nothing(
    world: World, table: str
) -> None:
    assert await ids_seen(world, "anon", A, table) == set()


ANY_WRITE = {
    "insert-order": "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
    " VALUES (:trader, 'IBM', 'BUY', 1, 'MARKET')",
    "cancel-order": "UPDATE orders SET status = 'CANCELLED' WHERE id = :order",
    "approve-order": "UPDATE orders SET approved_at = now() WHERE id = :order",
    "delete-order": "DELETE FROM orders WHERE id = :order",
    "insert-fill": "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
    " VALUES (:order, 1, 10, 'NYSE')",
    "update-fill": "UPDATE fills SET venue = 'X' WHERE order_id = :order",
    "delete-fill": "DELETE FROM fills WHERE order_id = :order",
    "insert-log": "INSERT INTO execution_logs (order_id, trader_id, action)"
    " VALUES (:order, :trader, 'FILLED')",
    "update-log": "UPDATE execution_logs SET reason = 'x' WHERE order_id = :order",
    "delete-log": "DELETE FROM execution_logs WHERE order_id = :order",
}


@pytest.mark.parametrize("write", list(ANY_WRITE))
@pytest.mark.parametrize("role", ["anon", "compliance_auditor"])
async def test_readers_without_write_rights_cannot_write_anything(
    world: World, role: str, write: str
) -> None:
    before = await counts(world)
    sql, args = bind(ANY_WRITE[write], trader=A, order=world.a.partial)

    # with the sub of the order's trader: the most that claims could ever open up
    result = await outcome(world, role, A, sql, *args)

    assert_permission_denied(result)
    assert await counts(world) == before


# --- service_role and compliance_auditor -------------------------------------------------------


@pytest.mark.parametrize("role", ["service_role", "compliance_auditor"])
@pytest.mark.parametrize("table", TABLES)
async def test_service_and_auditor_read_every_row(world: World, role: str, table: str) -> None:
    assert await ids_seen(world, role, None, table) == world.all_ids(table)


async def test_service_role_submits_and_fills_orders_of_any_trader(world: World) -> None:
    async with as_role(world.api, "service_role") as conn:
        order_id = await conn.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
            " VALUES ($1, 'IBM', 'BUY', 10, 'MARKET') RETURNING id",
            C,
        )
        await conn.execute("UPDATE orders SET approved_at = now() WHERE id = $1", order_id)
        fill_owner = await conn.fetchval(
            "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
            " VALUES ($1, 10, 99.5, 'NASDAQ') RETURNING trader_id",
            order_id,
        )
        status = await conn.fetchval("SELECT status FROM orders WHERE id = $1", order_id)

    assert (fill_owner, status) == (C, "FILLED")


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM orders WHERE id = $1",
        "DELETE FROM fills WHERE order_id = $1",
        "UPDATE fills SET quantity_filled = 1 WHERE order_id = $1",
        "UPDATE orders SET quantity = 1000 WHERE id = $1",
        "UPDATE orders SET filled_quantity = 100 WHERE id = $1",
        "UPDATE orders SET trader_id = gen_random_uuid() WHERE id = $1",
        "INSERT INTO execution_logs (order_id, trader_id, action)"
        " VALUES ($1, gen_random_uuid(), 'FILLED')",
        "UPDATE execution_logs SET reason = 'rewritten' WHERE order_id = $1",
        "DELETE FROM execution_logs WHERE order_id = $1",
    ],
    ids=[
        "delete-order",
        "delete-fill",
        "update-fill",
        "change-quantity",
        "set-filled-quantity",
        "move-order",
        "insert-log",
        "update-log",
        "delete-log",
    ],
)
async def test_service_role_cannot_delete_rewrite_or_forge(world: World, sql: str) -> None:
    result = await outcome(world, "service_role", None, sql, world.a.partial)

    assert_permission_denied(result)


# --- the login role, forged and broken claims --------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    # SELECT *: the login role reads the change feed's three columns of execution_logs (004).
    [f"SELECT * FROM {t}" for t in TABLES]
    + [
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
        " VALUES (gen_random_uuid(), 'IBM', 'BUY', 1, 'MARKET')",
        "UPDATE orders SET status = 'CANCELLED'",
        "DELETE FROM execution_logs",
    ],
)
@pytest.mark.parametrize("with_claims", [False, True])
async def test_the_login_role_itself_has_no_rights_on_the_tables(
    world: World, sql: str, with_claims: bool
) -> None:
    async with rolled_back(world.api):
        if with_claims:
            await world.api.execute(
                "SELECT set_config('request.jwt.claims', $1, true)",
                json.dumps({"role": "service_role", "sub": str(A)}),
            )
        assert await world.api.fetchval("SELECT current_user") == "authenticator"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await world.api.execute(sql)


@pytest.mark.parametrize("role", ["the-owner", "pg_read_all_data", "pg_write_all_data"])
async def test_the_login_role_can_become_only_the_api_roles(world: World, role: str) -> None:
    if role == "the-owner":
        role = await world.owner.fetchval("SELECT current_user")

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        async with as_role(world.api, role):
            pass


async def test_the_login_role_is_no_member_of_the_table_owner(world: World) -> None:
    owner = await world.owner.fetchval("SELECT current_user")
    row = await world.api.fetchrow(
        "SELECT r.rolsuper, r.rolbypassrls, r.rolinherit, pg_has_role($1, 'MEMBER') AS member"
        " FROM pg_roles r WHERE r.rolname = current_user",
        owner,
    )

    assert dict(row) == {
        "rolsuper": False,
        "rolbypassrls": False,
        "rolinherit": False,
        "member": False,
    }


@pytest.mark.parametrize("table", TABLES)
async def test_claims_that_say_service_role_do_not_widen_an_authenticated_caller(
    world: World, table: str
) -> None:
    seen = await ids_seen(world, "authenticated", A, table, claims={"role": "service_role"})

    assert seen == world.own_ids(world.a, table)


async def test_claims_that_say_service_role_do_not_let_a_trader_approve(world: World) -> None:
    async with as_role(world.api, "authenticated", A, extra_claims={"role": "service_role"}) as c:
        assert await c.fetchval("SELECT auth.role()") == "service_role"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await c.execute("UPDATE orders SET approved_at = now() WHERE id = $1", world.a.pending)


@pytest.mark.parametrize("sub", ["' OR true --", "", "*"], ids=["injection", "empty", "star"])
@pytest.mark.parametrize("table", TABLES)
async def test_a_sub_that_is_not_a_uuid_is_refused_not_matched(
    world: World, table: str, sub: str
) -> None:
    with pytest.raises(asyncpg.InvalidTextRepresentationError, match="uuid"):
        await ids_seen(world, "authenticated", sub, table)


@pytest.mark.parametrize("sub", ["' OR true --", "", "*"], ids=["injection", "empty", "star"])
@pytest.mark.parametrize("table", TABLES)
async def test_anon_with_any_sub_sees_nothing_without_reading_it(
    world: World, table: str, sub: str
) -> None:
    # anon has no policy at all: its claims are never consulted, so nothing to match or refuse.
    assert await ids_seen(world, "anon", sub, table) == set()


@pytest.mark.parametrize("table", TABLES)
async def test_an_authenticated_caller_without_a_sub_sees_nothing(world: World, table: str) -> None:
    assert await ids_seen(world, "authenticated", None, table) == set()


async def test_an_authenticated_caller_without_claims_sees_nothing(world: World) -> None:
    async with rolled_back(world.api):
        await world.api.execute("SET LOCAL ROLE authenticated")
        seen = await world.api.fetchval("SELECT count(*) FROM orders")

    assert seen == 0


# --- the audit trail is immutable, for everyone ------------------------------------------------

REWRITES = {
    "update": "UPDATE execution_logs SET reason = 'rewritten'",
    "delete": "DELETE FROM execution_logs",
    "truncate-logs": "TRUNCATE execution_logs",
    "truncate-orders-cascade": "TRUNCATE orders CASCADE",
    "truncate-fills": "TRUNCATE fills",
}


@pytest.mark.parametrize("statement", list(REWRITES))
@pytest.mark.parametrize("role", API_ROLES)
async def test_no_api_role_can_rewrite_the_audit_trail(
    world: World, role: str, statement: str
) -> None:
    before = await counts(world)

    result = await outcome(world, role, A, REWRITES[statement])

    assert_permission_denied(result)
    assert await counts(world) == before


@pytest.mark.parametrize("statement", list(REWRITES))
async def test_not_even_the_owner_can_rewrite_the_audit_trail(world: World, statement: str) -> None:
    before = await counts(world)

    with pytest.raises(asyncpg.PostgresError) as refused:
        async with rolled_back(world.owner) as owner:
            await owner.execute(REWRITES[statement])

    # a superuser owner meets the trigger (OA403), any other owner its revoked privileges first
    assert refused.value.sqlstate in ("OA403", PRIVILEGE), refused.value
    assert await counts(world) == before


async def test_the_trigger_alone_refuses_the_owner_whatever_the_grants(world: World) -> None:
    owner = world.owner
    refusals: dict[str, str] = {}
    for name, sql in REWRITES.items():
        try:
            async with rolled_back(owner):
                await owner.execute(
                    "GRANT UPDATE, DELETE, TRUNCATE ON orders, fills, execution_logs"
                    " TO CURRENT_USER"
                )
                for table in TABLES:
                    await owner.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
                await owner.execute(sql)
        except asyncpg.PostgresError as error:
            refusals[name] = str(error.sqlstate)

    assert refusals == dict.fromkeys(REWRITES, "OA403")


async def test_the_policies_alone_refuse_a_role_that_was_granted_the_rights(world: World) -> None:
    owner = world.owner
    async with rolled_back(owner):
        await owner.execute("GRANT UPDATE, DELETE ON execution_logs TO service_role")
        await owner.execute("ALTER TABLE execution_logs DISABLE TRIGGER USER")
        await owner.execute(
            "SELECT set_config('role', 'service_role', true),"
            " set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)"
        )
        updated = await owner.execute("UPDATE execution_logs SET reason = 'rewritten'")
        deleted = await owner.execute("DELETE FROM execution_logs")
        visible = await owner.fetchval("SELECT count(*) FROM execution_logs")

    assert (updated, deleted) == ("UPDATE 0", "DELETE 0")
    assert visible == len(world.all_ids("execution_logs"))


async def test_not_even_the_owner_can_forge_an_audit_row(world: World) -> None:
    with pytest.raises(asyncpg.PostgresError):
        async with rolled_back(world.owner) as owner:
            await owner.execute(
                "INSERT INTO execution_logs (order_id, trader_id, action, status)"
                " VALUES ($1, $2, 'FILLED', 'FILLED')",
                world.a.pending,
                A,
            )


@pytest.mark.parametrize(
    ("which", "restricted_by"),
    [
        ("pending", "execution_logs_order_id_fkey"),  # it has no fills: the audit rows alone
        ("partial", r"(fills|execution_logs)_order_id_fkey"),
    ],
)
async def test_deleting_an_order_never_removes_its_audit_rows(
    world: World, which: str, restricted_by: str
) -> None:
    order_id = getattr(world.a, which)
    logs_before = await world.owner.fetchval(
        "SELECT count(*) FROM execution_logs WHERE order_id = $1", order_id
    )

    # PostgreSQL 15 reports a RESTRICT refusal as a foreign key violation, 18 as a restrict one.
    refused = (asyncpg.RestrictViolationError, asyncpg.ForeignKeyViolationError)
    with pytest.raises(refused, match=restricted_by):
        async with rolled_back(world.owner) as owner:
            await owner.execute("DELETE FROM orders WHERE id = $1", order_id)

    assert logs_before > 0
    assert (
        await world.owner.fetchval(
            "SELECT count(*) FROM execution_logs WHERE order_id = $1", order_id
        )
        == logs_before
    )


# --- the claims are read once per statement, and the indexes serve the policies --------------


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


async def explain(conn: asyncpg.Connection, sql: str, *, analyze: bool = False) -> dict[str, Any]:
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    document = json.loads(await conn.fetchval(f"EXPLAIN ({options}) {sql}"))
    root: dict[str, Any] = document[0]["Plan"]
    return root


def scan_filter(plan: dict[str, Any], table: str) -> str:
    """Every condition the plan applies to ``table``: a filter, or an index condition."""
    del table  # each plan here reads one table
    keys = ("Filter", "Index Cond", "Recheck Cond")
    return " ".join(str(n[k]) for n in plan_nodes(plan) for k in keys if k in n)


def claim_read_per_row(filter_: str) -> bool:
    # auth.uid() is an inlinable SQL function: evaluated per row it shows as its body
    return "current_setting" in filter_ or "auth.uid" in filter_ or "uid()" in filter_


async def insert_orders_as_owner(
    owner: asyncpg.Connection, count: int, traders: int, *, also: uuid.UUID, every: int
) -> None:
    """``count`` orders spread over ``traders`` traders, every ``every``-th one of ``also``."""
    await owner.execute(
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
        " SELECT CASE WHEN g % $3 = 0 THEN $4::uuid"
        "        ELSE ('00000000-0000-4000-8000-' || lpad((g % $2)::text, 12, '0'))::uuid END,"
        "        'AAPL', 'BUY', 10, 'MARKET'"
        " FROM generate_series(1, $1) AS g",
        count,
        traders,
        every,
        also,
    )
    await owner.execute("ANALYZE orders, execution_logs")


@pytest.mark.slow
async def test_the_policies_read_the_claims_once_per_statement_not_per_row(
    owner_conn: asyncpg.Connection, authenticator_conn: asyncpg.Connection
) -> None:
    await insert_orders_as_owner(owner_conn, 20_000, traders=500, also=A, every=100)

    async with as_role(authenticator_conn, "authenticated", A) as conn:
        plans = {
            table: await explain(conn, f"SELECT * FROM {table}", analyze=True)
            for table in ("orders", "execution_logs")
        }
        # the control: the same claim look-up written without (SELECT ...) around it
        per_row = await explain(conn, "SELECT * FROM orders WHERE trader_id = auth.uid()")

    for table, plan in plans.items():
        filter_ = scan_filter(plan, table)
        # PostgreSQL 18 names the InitPlan's output "(InitPlan 1).col1", 15 calls it "$0".
        assert "(InitPlan 1).col1" in filter_ or "$0" in filter_, filter_
        assert not claim_read_per_row(filter_), filter_
        init_plans = [n for n in plan_nodes(plan) if n.get("Parent Relationship") == "InitPlan"]
        assert init_plans, plan
        assert all(n["Actual Loops"] == 1 for n in init_plans), init_plans
        rows = next(n for n in plan_nodes(plan) if n.get("Relation Name") == table)
        assert rows["Actual Rows"] == 200, table  # 20,000 / 100, one audit row each
    assert claim_read_per_row(scan_filter(per_row, "orders"))


def history_index_scans(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    nodes = list(plan_nodes(plan))
    scans = [(n["Node Type"], n.get("Index Name")) for n in nodes if n.get("Relation Name")]
    sorts = [n["Node Type"] for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")]
    return scans + [(sort, None) for sort in sorts]


def profiling_query(trader: uuid.UUID) -> str:
    """The migration guide's: a trader's 20 most recent orders."""
    return f"SELECT * FROM orders WHERE trader_id = '{trader}' ORDER BY created_at DESC LIMIT 20"


HISTORY_INDEX_SCAN = [("Index Scan", "idx_orders_trader_created")]


@pytest.mark.slow
async def test_a_traders_recent_orders_are_read_through_the_history_index(
    owner_conn: asyncpg.Connection,
) -> None:
    # 1,000 traders with about 100 orders each, and trader A with 5,000
    await insert_orders_as_owner(owner_conn, 100_000, traders=1_000, also=A, every=20)
    typical = uuid.UUID("00000000-0000-4000-8000-000000000007")
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 100_000

    typical_plan = await explain(owner_conn, profiling_query(typical), analyze=True)
    busy_plan = await explain(owner_conn, profiling_query(A), analyze=True)

    assert history_index_scans(typical_plan) == HISTORY_INDEX_SCAN
    assert history_index_scans(busy_plan) == HISTORY_INDEX_SCAN
    assert typical_plan["Actual Rows"] == busy_plan["Actual Rows"] == 20


@pytest.mark.slow
async def test_a_busy_trader_reads_recent_orders_through_an_index_under_rls(
    owner_conn: asyncpg.Connection, authenticator_conn: asyncpg.Connection
) -> None:
    await insert_orders_as_owner(owner_conn, 20_000, traders=1_000, also=A, every=10)

    async with as_role(authenticator_conn, "authenticated", A) as conn:
        # what the API sends: the policy plus its own trader_id hint
        hinted = await explain(conn, profiling_query(A))
        # what a client relying on the policy alone sends
        unhinted = await explain(conn, "SELECT * FROM orders ORDER BY created_at DESC LIMIT 20")

    assert history_index_scans(hinted) == HISTORY_INDEX_SCAN
    assert ("Seq Scan", None) not in history_index_scans(unhinted)


# --- only the migration owner changes the schema -----------------------------------------------

SCHEMA_CHANGES = {
    "disable-rls": "ALTER TABLE orders DISABLE ROW LEVEL SECURITY",
    "no-force": "ALTER TABLE execution_logs NO FORCE ROW LEVEL SECURITY",
    "drop-policy": "DROP POLICY orders_trader_isolation ON orders",
    "new-policy": "CREATE POLICY mine ON orders FOR SELECT USING (true)",
    "disable-trigger": "ALTER TABLE execution_logs DISABLE TRIGGER USER",
    "drop-table": "DROP TABLE fills",
    "new-table": "CREATE TABLE public.shadow (id int)",
    "replace-auth": "CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql"
    " AS $$ SELECT NULL::uuid $$",
}


@pytest.mark.parametrize("role", [*API_ROLES, "authenticator"])
@pytest.mark.parametrize("sql", list(SCHEMA_CHANGES.values()), ids=list(SCHEMA_CHANGES))
async def test_no_api_role_can_change_the_schema_or_the_policies(
    world: World, role: str, sql: str
) -> None:
    if role == "authenticator":
        # The login role itself, before any SET ROLE.
        async with rolled_back(world.api) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
        return
    result = await outcome(world, role, A if role == "authenticated" else None, sql)
    assert isinstance(result, asyncpg.InsufficientPrivilegeError), result


@pytest.mark.parametrize("role", API_ROLES)
async def test_no_api_role_can_grant_itself_a_right(world: World, role: str) -> None:
    # Without the grant option PostgreSQL only warns and grants nothing: check nothing was granted.
    async with as_role(world.api, role, A if role == "authenticated" else None) as conn:
        await conn.execute("GRANT UPDATE, DELETE ON execution_logs, fills TO authenticated")
        granted = await conn.fetchval(
            "SELECT has_table_privilege('authenticated', 'execution_logs', 'UPDATE')"
            " OR has_table_privilege('authenticated', 'fills', 'DELETE')"
        )
    assert granted is False
