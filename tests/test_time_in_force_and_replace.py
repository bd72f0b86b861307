"""Migration 006 in plain SQL, as each role: time in force, stop-limit, expiry and replace.

On Supabase a trader writes ``orders`` past this API (Data API, pg_graphql, plain SQL as
``authenticated``), and the engine writes as service_role: every rule below must hold for
whoever writes, so each is tried here as the roles the API can assume (tests.sql.as_role,
logged in as the API's login role), on plain PostgreSQL and on the Supabase-like cluster
(where service_role has BYPASSRLS). Refusals are the SQLSTATEs the API maps: OA422 naming the
input field (BAD_USER_INPUT), OA409 (an illegal change), 23503 (not found: another
trader's order looks missing), 42501 (the role may not).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tests import pg, supabase
from tests.conftest import Db, SupabaseSession
from tests.sql import as_role

ALICE = uuid.UUID("a11ce000-0000-4000-8000-000000000006")
BOB = uuid.UUID("b0b00000-0000-4000-8000-000000000006")


@dataclass(frozen=True)
class World:
    owner: asyncpg.Connection
    api: asyncpg.Connection
    login_dsn: str


@pytest.fixture(scope="module", params=["postgresql", "supabase"])
async def world(
    request: pytest.FixtureRequest, cluster: pg.Cluster, supabase_cluster: SupabaseSession
) -> AsyncIterator[World]:
    # On the Supabase-like cluster service_role has BYPASSRLS: only the triggers' own checks
    # keep its writes to one trader's orders.
    if request.param == "supabase":
        name = await supabase.create_database(supabase_cluster.cluster)
        db: Any = supabase.SupabaseDb(supabase_cluster.cluster, name)
        login_dsn = db.dsn(supabase.LOGIN)
    else:
        name = await pg.create_test_database(cluster)
        db = Db(cluster, name)
        login_dsn = db.dsn("authenticator")
    owner = await asyncpg.connect(db.dsn())
    api = await asyncpg.connect(login_dsn)
    try:
        yield World(owner, api, login_dsn)
    finally:
        await api.close()
        await owner.close()
        if request.param == "supabase":
            await supabase.drop_database(db.cluster, name)
        else:
            await pg.drop_test_database(db.cluster, name)


def order(**changes: Any) -> dict[str, Any]:
    """A valid LIMIT buy of 100 ACME; changes make the case."""
    row: dict[str, Any] = {
        "symbol": "ACME",
        "side": "BUY",
        "quantity": 100,
        "order_type": "LIMIT",
        "price": Decimal("10.00"),
    }
    return row | changes


INSERT_RETURNING = (
    "id, quantity, status::text, time_in_force::text, expires_at, stop_price, replaces_id"
)


async def insert(
    world: World, row: dict[str, Any], *, role: str = "authenticated", trader: uuid.UUID = ALICE
) -> asyncpg.Record:
    """INSERT as ``role`` for ``trader``, committed."""
    row = {"trader_id": trader} | row
    casts = {"order_type": "::order_type_enum", "time_in_force": "::time_in_force_enum"}
    values = ", ".join(f"${i}{casts.get(c, '')}" for i, c in enumerate(row, start=1))
    async with as_role(world.api, role, trader, commit=True) as conn:
        record: asyncpg.Record = await conn.fetchrow(
            f"INSERT INTO orders ({', '.join(row)}) VALUES ({values}) RETURNING {INSERT_RETURNING}",
            *row.values(),
        )
    return record


async def refused(
    world: World, sql: str, *args: Any, role: str = "service_role", trader: uuid.UUID = ALICE
) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as error:
        async with as_role(world.api, role, trader) as conn:
            await conn.execute(sql, *args)
    return error.value


async def refused_insert(
    world: World, row: dict[str, Any], *, role: str = "authenticated", trader: uuid.UUID = ALICE
) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as error:
        await insert(world, row, role=role, trader=trader)
    return error.value


async def run(world: World, sql: str, *args: Any, role: str = "service_role") -> None:
    async with as_role(world.api, role, ALICE, commit=True) as conn:
        await conn.execute(sql, *args)


async def approve_and_route(world: World, order_id: uuid.UUID) -> None:
    await run(world, "UPDATE orders SET approved_at = now() WHERE id = $1", order_id)
    await run(world, "UPDATE orders SET routed_at = now() WHERE id = $1", order_id)


async def fill(world: World, order_id: uuid.UUID, quantity: int) -> None:
    await run(
        world,
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
        " VALUES ($1, $2, 10.00, 'XNAS')",
        order_id,
        quantity,
    )


async def row_of(world: World, order_id: uuid.UUID) -> asyncpg.Record:
    record: asyncpg.Record = await world.owner.fetchrow(
        "SELECT status::text, quantity, filled_quantity, replaces_id, replaced_by_id,"
        " approved_at FROM orders WHERE id = $1",
        order_id,
    )
    return record


async def audit_of(world: World, order_id: uuid.UUID) -> list[tuple[str, str | None]]:
    rows = await world.owner.fetch(
        "SELECT action::text, reason FROM execution_logs WHERE order_id = $1 ORDER BY seq",
        order_id,
    )
    return [(r["action"], r["reason"]) for r in rows]


# --- what a new order may say -----------------------------------------------------------------

TERMS: dict[str, tuple[dict[str, Any], str]] = {
    "stop limit without a stop price": ({"order_type": "STOP_LIMIT"}, "stopPrice"),
    "stop price on a limit order": ({"stop_price": Decimal("9.00")}, "stopPrice"),
    "stop price on a market order": (
        {"order_type": "MARKET", "price": None, "stop_price": Decimal("9.00")},
        "stopPrice",
    ),
    "stop price with three decimals": (
        {"order_type": "STOP_LIMIT", "stop_price": Decimal("9.005")},
        "stopPrice",
    ),
    "stop price zero": ({"order_type": "STOP_LIMIT", "stop_price": Decimal("0")}, "stopPrice"),
    "stop limit without a limit price": (
        {"order_type": "STOP_LIMIT", "stop_price": Decimal("9.00"), "price": None},
        "price",
    ),
    "IOC on a stop": ({"order_type": "STOP", "time_in_force": "IOC"}, "timeInForce"),
    "FOK on a stop limit": (
        {"order_type": "STOP_LIMIT", "stop_price": Decimal("9.00"), "time_in_force": "FOK"},
        "timeInForce",
    ),
    "IOC with an expiry": (
        {"time_in_force": "IOC", "expires_at": datetime.now(UTC) + timedelta(hours=1)},
        "expiresAt",
    ),
    "DAY with an expiry after the close": (
        {"time_in_force": "DAY", "expires_at": datetime.now(UTC) + timedelta(days=5)},
        "expiresAt",
    ),
    "time in force null": ({"time_in_force": None}, "timeInForce"),
}


@pytest.mark.parametrize("role", ["authenticated", "service_role"])
@pytest.mark.parametrize("case", TERMS.values(), ids=TERMS.keys())
async def test_an_impossible_combination_is_refused_naming_the_field(
    world: World, case: tuple[dict[str, Any], str], role: str
) -> None:
    changes, field = case
    error = await refused_insert(world, order(**changes), role=role)
    assert (error.sqlstate, error.column_name) == ("OA422", field), error


@pytest.mark.parametrize(
    "changes",
    [
        {"order_type": "STOP_LIMIT", "stop_price": Decimal("9.5")},
        {"order_type": "MARKET", "price": None, "time_in_force": "IOC"},
        {"time_in_force": "FOK"},
        {"order_type": "STOP", "time_in_force": "DAY"},
    ],
    ids=["stop-limit", "market-ioc", "limit-fok", "stop-day"],
)
async def test_the_possible_combinations_are_accepted(
    world: World, changes: dict[str, Any]
) -> None:
    stored = await insert(world, order(**changes))
    assert stored["status"] == "PENDING"
    if "stop_price" in changes:
        assert str(stored["stop_price"]) == "9.50"


async def test_an_order_that_says_nothing_is_gtc_with_no_expiry(world: World) -> None:
    stored = await insert(world, order())
    assert (stored["time_in_force"], stored["expires_at"]) == ("GTC", None)


async def test_a_day_order_expires_at_the_close_of_its_session(world: World) -> None:
    stored = await insert(world, order(time_in_force="DAY"))
    close = await world.owner.fetchval("SELECT session_close(now())")
    assert stored["expires_at"] == close
    earlier = datetime.now(UTC) + timedelta(minutes=1)
    if earlier < close:
        kept = await insert(world, order(time_in_force="DAY", expires_at=earlier))
        assert kept["expires_at"] == earlier


@pytest.mark.parametrize(
    ("moment", "close"),
    [
        # 2026-11-25 is a Wednesday; New York is on EST (UTC-5).
        ("2026-11-25 10:00-05", "2026-11-25 16:00-05"),
        ("2026-11-25 16:00-05", "2026-11-26 16:00-05"),  # at the close: the next day's
        ("2026-11-27 17:00-05", "2026-11-30 16:00-05"),  # Friday evening: Monday's
        ("2026-11-28 12:00-05", "2026-11-30 16:00-05"),  # Saturday
        ("2026-07-01 15:59-04", "2026-07-01 16:00-04"),  # summer time
    ],
)
async def test_the_session_close_rolls_over_to_the_next_trading_day(
    world: World, moment: str, close: str
) -> None:
    async with as_role(world.api, "service_role") as conn:
        got = await conn.fetchval("SELECT session_close($1::text::timestamptz)", moment)
        assert got == await conn.fetchval("SELECT $1::text::timestamptz", close)


async def test_the_owner_sets_the_close_and_a_zone_postgresql_does_not_know_is_refused(
    world: World,
) -> None:
    tx = world.owner.transaction()
    await tx.start()
    try:
        await world.owner.execute(
            "UPDATE trading_session SET close_time = '13:00', time_zone = 'Europe/London'"
        )
        assert await world.owner.fetchval(
            "SELECT session_close('2026-11-25 10:00+00') = '2026-11-25 13:00+00'"
        )
        with pytest.raises(asyncpg.InvalidParameterValueError, match="Mars/Olympus"):
            await world.owner.execute("UPDATE trading_session SET time_zone = 'Mars/Olympus'")
    finally:
        await tx.rollback()


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role", "compliance_auditor"])
async def test_no_api_role_may_change_the_session(world: World, role: str) -> None:
    error = await refused(world, "UPDATE trading_session SET close_time = '23:59'", role=role)
    assert error.sqlstate == "42501"


# --- expiry -------------------------------------------------------------------------------------

EXPIRE = "UPDATE orders SET status = 'EXPIRED' WHERE id = $1"


async def expiring_order(world: World) -> uuid.UUID:
    """A GTC order whose expiresAt has just passed."""
    stored = await insert(world, order(expires_at=datetime.now(UTC) + timedelta(milliseconds=30)))
    await asyncio.sleep(0.05)
    order_id: uuid.UUID = stored["id"]
    return order_id


async def test_the_engine_expires_an_order_past_its_expiry_and_the_audit_says_so(
    world: World,
) -> None:
    order_id = await expiring_order(world)
    await run(world, EXPIRE, order_id)
    assert (await row_of(world, order_id))["status"] == "EXPIRED"
    assert (await audit_of(world, order_id))[-1] == ("EXPIRED", "expired")


async def test_a_partly_filled_order_expires_and_its_fills_stand(world: World) -> None:
    order_id = await expiring_order(world)
    await approve_and_route(world, order_id)
    await fill(world, order_id, 30)
    await run(world, EXPIRE, order_id)
    row = await row_of(world, order_id)
    assert (row["status"], row["filled_quantity"]) == ("EXPIRED", 30)
    # The venue's executions before it heard of the expiry are still recorded.
    await fill(world, order_id, 20)
    row = await row_of(world, order_id)
    assert (row["status"], row["filled_quantity"]) == ("EXPIRED", 50)


@pytest.mark.parametrize(
    "expires_at", [None, datetime.now(UTC) + timedelta(days=1)], ids=["gtc", "later"]
)
async def test_an_order_before_its_expiry_cannot_expire(
    world: World, expires_at: datetime | None
) -> None:
    order_id = (await insert(world, order(expires_at=expires_at)))["id"]
    error = await refused(world, EXPIRE, order_id)
    assert error.sqlstate == "OA409"
    assert "has not reached its expiry" in str(error)


@pytest.mark.parametrize(
    ("role", "sqlstate"),
    [("authenticated", "42501"), ("compliance_auditor", "42501"), ("anon", "42501")],
)
async def test_only_the_engine_expires_orders(world: World, role: str, sqlstate: str) -> None:
    order_id = await expiring_order(world)
    error = await refused(world, EXPIRE, order_id, role=role)
    assert error.sqlstate == sqlstate
    assert (await row_of(world, order_id))["status"] == "PENDING"


@pytest.mark.parametrize(
    "change",
    ["status = 'CANCELLED'", "status = 'PENDING'", "approved_at = now()", "status = 'EXPIRED'"],
)
async def test_an_expired_order_is_final(world: World, change: str) -> None:
    order_id = await expiring_order(world)
    await run(world, EXPIRE, order_id)
    error = await refused(world, f"UPDATE orders SET {change} WHERE id = $1", order_id)
    assert error.sqlstate == "OA409"


@pytest.mark.parametrize(
    "change",
    ["time_in_force = 'DAY'", "stop_price = 1.00", "replaces_id = gen_random_uuid()"],
)
async def test_the_new_terms_never_change_after_submission(world: World, change: str) -> None:
    order_id = (await insert(world, order()))["id"]
    # No API role holds the column (42501); the owner, who does, meets the trigger.
    assert (
        await refused(world, f"UPDATE orders SET {change} WHERE id = $1", order_id)
    ).sqlstate == ("42501")
    with pytest.raises(asyncpg.PostgresError) as error:
        await world.owner.execute(f"UPDATE orders SET {change} WHERE id = $1", order_id)
    assert error.value.sqlstate in ("OA409", "23503")


# --- replace --------------------------------------------------------------------------------------

CONFIRM = "UPDATE orders SET status = 'REPLACED', replaced_by_id = $2 WHERE id = $1"


async def working(world: World, filled: int = 0, **changes: Any) -> uuid.UUID:
    order_id: uuid.UUID = (await insert(world, order(**changes)))["id"]
    if filled:
        await approve_and_route(world, order_id)
        await fill(world, order_id, filled)
    return order_id


async def replace(
    world: World, old: uuid.UUID, *, role: str = "authenticated", **changes: Any
) -> asyncpg.Record:
    return await insert(world, order(replaces_id=old, **changes), role=role)


async def confirm(world: World, old: uuid.UUID, new: uuid.UUID) -> None:
    async with as_role(world.api, "service_role", commit=True) as conn:
        await conn.execute(CONFIRM, old, new)


async def test_a_replacement_of_a_pending_order_takes_its_place_once_confirmed(
    world: World,
) -> None:
    old = await working(world)
    new = await replace(world, old, price=Decimal("10.50"))
    assert (new["status"], new["quantity"], new["replaces_id"]) == ("PENDING", 100, old)
    assert (await row_of(world, old))["status"] == "PENDING"  # until the venue confirms

    await confirm(world, old, new["id"])

    replaced = await row_of(world, old)
    assert (replaced["status"], replaced["replaced_by_id"]) == ("REPLACED", new["id"])
    assert (await audit_of(world, old))[-1] == ("REPLACED", f"replaced by order {new['id']}")
    assert (await audit_of(world, new["id"])) == [("SUBMITTED", f"replaces order {old}")]
    # Confirmed, it is an ordinary working order.
    await approve_and_route(world, new["id"])
    await fill(world, new["id"], 100)
    assert (await row_of(world, new["id"]))["status"] == "FILLED"


@pytest.mark.parametrize(
    ("total", "stored"),
    [(100, 60), (41, 1), (250, 210)],
    ids=["same-total", "one-more", "more"],
)
async def test_the_quantity_of_a_replacement_is_the_total_and_what_remains_is_stored(
    world: World, total: int, stored: int
) -> None:
    old = await working(world, filled=40)
    new = await replace(world, old, quantity=total)
    assert new["quantity"] == stored
    await confirm(world, old, new["id"])
    row = await row_of(world, old)
    assert (row["status"], row["filled_quantity"]) == ("REPLACED", 40)


@pytest.mark.parametrize("total", [40, 10])
async def test_a_replacement_at_or_below_what_is_filled_is_bad_user_input(
    world: World, total: int
) -> None:
    old = await working(world, filled=40)
    error = await refused_insert(world, order(replaces_id=old, quantity=total))
    assert (error.sqlstate, error.column_name) == ("OA422", "quantity")
    assert "above the 40 already filled" in str(error)


async def test_the_total_counts_every_order_of_a_chain_of_replacements(world: World) -> None:
    first = await working(world, filled=40)
    second = (await replace(world, first, quantity=100))["id"]  # 60 to go
    await confirm(world, first, second)
    await approve_and_route(world, second)
    await fill(world, second, 20)
    third = await replace(world, second, quantity=100)  # 40 + 20 filled: 40 to go
    assert third["quantity"] == 40
    await run(world, "UPDATE orders SET status = 'CANCELLED' WHERE id = $1", third["id"])
    error = await refused_insert(world, order(replaces_id=second, quantity=60))
    assert error.column_name == "quantity"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"symbol": "OTHER"}, "symbol"),
        ({"side": "SELL"}, "side"),
        ({"order_type": "STOP"}, "orderType"),
    ],
)
async def test_a_replacement_changes_neither_symbol_side_nor_type(
    world: World, changes: dict[str, Any], field: str
) -> None:
    old = await working(world)
    error = await refused_insert(world, order(replaces_id=old, **changes))
    assert (error.sqlstate, error.column_name) == ("OA422", field)


async def test_a_replacement_is_checked_like_any_new_order(world: World) -> None:
    old = await working(world)
    error = await refused_insert(world, order(replaces_id=old, price=Decimal("10.001")))
    assert (error.sqlstate, error.column_name) == ("OA422", "price")


@pytest.mark.parametrize("role", ["authenticated", "service_role"])
async def test_another_traders_order_cannot_be_replaced_and_looks_missing(
    world: World, role: str
) -> None:
    bobs = (await insert(world, order(), trader=BOB))["id"]
    error = await refused_insert(world, order(replaces_id=bobs), role=role, trader=ALICE)
    assert error.sqlstate == "23503"
    missing = await refused_insert(world, order(replaces_id=uuid.uuid4()), role=role)
    assert (missing.sqlstate, str(missing).split()[0]) == ("23503", "order")


@pytest.mark.parametrize("role", ["anon", "compliance_auditor"])
async def test_roles_that_do_not_trade_cannot_replace(world: World, role: str) -> None:
    old = await working(world)
    assert (await refused_insert(world, order(replaces_id=old), role=role)).sqlstate == "42501"


@pytest.mark.parametrize(
    ("arrange", "status"),
    [
        ("UPDATE orders SET status = 'CANCELLED' WHERE id = $1", "CANCELLED"),
        ("UPDATE orders SET status = 'REJECTED' WHERE id = $1", "REJECTED"),
        ("fill all", "FILLED"),
        ("replace", "REPLACED"),
    ],
)
async def test_an_order_that_no_longer_works_cannot_be_replaced(
    world: World, arrange: str, status: str
) -> None:
    old = await working(world)
    if arrange == "fill all":
        await approve_and_route(world, old)
        await fill(world, old, 100)
    elif arrange == "replace":
        await confirm(world, old, (await replace(world, old))["id"])
    else:
        await run(world, arrange, old)
    assert (await row_of(world, old))["status"] == status
    error = await refused_insert(world, order(replaces_id=old))
    assert error.sqlstate == "OA409"


async def test_one_replacement_at_a_time_waits_for_the_venue(world: World) -> None:
    old = await working(world)
    first = await replace(world, old)
    error = await refused_insert(world, order(replaces_id=old, price=Decimal("11.00")))
    assert error.sqlstate == "OA409"
    assert "already has a replacement waiting" in str(error)
    # Withdrawn (the trader cancels it) or refused (the engine rejects it): the next may come.
    await run(
        world,
        "UPDATE orders SET status = 'CANCELLED' WHERE id = $1",
        first["id"],
        role="authenticated",
    )
    second = await replace(world, old, price=Decimal("11.00"))
    await run(world, "UPDATE orders SET status = 'REJECTED' WHERE id = $1", second["id"])
    third = await replace(world, old, price=Decimal("12.00"))
    await confirm(world, old, third["id"])


async def test_an_unconfirmed_replacement_cannot_itself_be_replaced(world: World) -> None:
    old = await working(world)
    new = await replace(world, old)
    error = await refused_insert(world, order(replaces_id=new["id"]))
    assert error.sqlstate == "OA409"
    assert "waits for the venue to confirm" in str(error)
    await confirm(world, old, new["id"])
    assert (await replace(world, new["id"]))["quantity"] == 100


async def test_an_unconfirmed_replacement_is_not_approved(world: World) -> None:
    old = await working(world)
    new = await replace(world, old)
    error = await refused(world, "UPDATE orders SET approved_at = now() WHERE id = $1", new["id"])
    assert error.sqlstate == "OA409"
    assert "not REPLACED by it yet" in str(error)


async def test_an_order_that_filled_after_the_replacement_was_requested_keeps_its_fills(
    world: World,
) -> None:
    old = await working(world, filled=10)
    new = await replace(world, old)  # total 100: 90 to go
    await fill(world, old, 5)  # the venue executed before it saw the replace
    error = await refused(world, CONFIRM, old, new["id"])
    assert error.sqlstate == "OA409"
    assert "filled after replacement" in str(error)
    # The engine rejects the replacement; the old order and its fills stand.
    await run(
        world,
        "UPDATE orders SET status = 'REJECTED', error_code = 'FILLED_FIRST' WHERE id = $1",
        new["id"],
    )
    row = await row_of(world, old)
    assert (row["status"], row["quantity"], row["filled_quantity"]) == ("PARTIAL", 100, 15)
    assert (await audit_of(world, new["id"]))[-1][0] == "REJECTED"


async def test_an_order_that_filled_completely_first_rejects_its_replacement(
    world: World,
) -> None:
    old = await working(world, filled=10)
    new = await replace(world, old)
    await fill(world, old, 90)
    error = await refused(world, CONFIRM, old, new["id"])
    assert error.sqlstate == "OA409"
    assert (await row_of(world, old))["status"] == "FILLED"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("another order", "does not replace it"),
        ("the replacement was cancelled", "can no longer take its place"),
        ("no replacement", "does not replace it"),
    ],
)
async def test_the_confirmation_names_the_order_that_replaces_it(
    world: World, case: str, message: str
) -> None:
    old = await working(world)
    new = (await replace(world, old))["id"]
    if case == "another order":
        new = (await insert(world, order()))["id"]
    elif case == "the replacement was cancelled":
        await run(world, "UPDATE orders SET status = 'CANCELLED' WHERE id = $1", new)
    sql = (
        CONFIRM
        if case != "no replacement"
        else "UPDATE orders SET status = 'REPLACED' WHERE id = $1"
    )
    args = (old, new) if case != "no replacement" else (old,)
    error = await refused(world, sql, *args)
    assert error.sqlstate == "OA409"
    assert message in str(error)


async def test_replaced_by_is_only_set_by_a_confirmation(world: World) -> None:
    old = await working(world)
    new = (await replace(world, old))["id"]
    error = await refused(world, "UPDATE orders SET replaced_by_id = $2 WHERE id = $1", old, new)
    assert error.sqlstate == "OA409"


@pytest.mark.parametrize(
    ("role", "sqlstate"),
    [("authenticated", "42501"), ("compliance_auditor", "42501"), ("anon", "42501")],
)
async def test_only_the_engine_confirms_a_replacement(
    world: World, role: str, sqlstate: str
) -> None:
    old = await working(world)
    new = (await replace(world, old))["id"]
    error = await refused(world, CONFIRM, old, new, role=role)
    assert error.sqlstate == sqlstate
    # Not even with the status alone, which the trader's column grant covers.
    assert (
        await refused(world, "UPDATE orders SET status = 'REPLACED' WHERE id = $1", old, role=role)
    ).sqlstate in ("42501", "OA409")
    assert (await row_of(world, old))["status"] == "PENDING"


@pytest.mark.parametrize(
    "write",
    [
        "UPDATE orders SET status = 'CANCELLED' WHERE id = $1",
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
        " VALUES ($1, 1, 10.00, 'XNAS')",
    ],
    ids=["cancel", "fill"],
)
async def test_a_replaced_order_is_final_and_takes_no_fills(world: World, write: str) -> None:
    old = await working(world, filled=10)
    await confirm(world, old, (await replace(world, old))["id"])
    assert (await refused(world, write, old)).sqlstate == "OA409"


async def test_a_new_order_cannot_claim_to_be_replaced(world: World) -> None:
    other = await working(world)
    with pytest.raises(asyncpg.PostgresError) as error:
        await world.owner.execute(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, replaced_by_id)"
            " VALUES ($1, 'ACME', 'BUY', 1, 'MARKET', $2)",
            ALICE,
            other,
        )
    assert error.value.sqlstate == "OA409"
    # No API role holds the column at all.
    error_api = await refused(
        world,
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, replaced_by_id)"
        " VALUES ($1, 'ACME', 'BUY', 1, 'MARKET', $2)",
        ALICE,
        other,
    )
    assert error_api.sqlstate == "42501"


async def test_the_audit_chain_verifies_after_every_new_kind_of_write(world: World) -> None:
    # 005's hash chain covers EXPIRED and REPLACED rows unchanged: recompute every row.
    await run(world, EXPIRE, await expiring_order(world))
    old = await working(world)
    await confirm(world, old, (await replace(world, old))["id"])
    mismatched = await world.owner.fetchval(
        "SELECT count(*) FROM execution_logs e"
        " WHERE e.hash <> sha256(convert_to(execution_logs_canonical(e), 'UTF8'))"
        " OR e.prev_hash IS DISTINCT FROM (SELECT p.hash FROM execution_logs p"
        "   WHERE p.order_id = e.order_id AND p.seq < e.seq ORDER BY p.seq DESC LIMIT 1)"
    )
    actions = await world.owner.fetchval(
        "SELECT array_agg(DISTINCT action::text ORDER BY action::text) FROM execution_logs"
    )
    assert mismatched == 0
    assert {"EXPIRED", "REPLACED"} <= set(actions)


# --- replace racing a fill ----------------------------------------------------------------------


@pytest.fixture
async def second_api(world: World) -> AsyncIterator[asyncpg.Connection]:
    """Another session of the API's login role, for writes that race."""
    conn = await asyncpg.connect(world.login_dsn)
    try:
        yield conn
    finally:
        await conn.close()


FILL = (
    "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
    " VALUES ($1, $2, 10.00, 'XNAS')"
)


async def test_a_fill_racing_a_replacement_request_is_seen_by_its_confirmation(
    world: World, second_api: asyncpg.Connection
) -> None:
    old = await working(world, filled=10)
    # The replacement is requested first (uncommitted); the venue's fill arrives meanwhile.
    async with as_role(world.api, "authenticated", ALICE, commit=True) as trader:
        new = await trader.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price,"
            " replaces_id) VALUES ($1, 'ACME', 'BUY', 100, 'LIMIT', 10.00, $2) RETURNING id",
            ALICE,
            old,
        )

        async def venue_fill() -> None:
            async with as_role(second_api, "service_role", commit=True) as engine:
                await engine.execute(FILL, old, 5)

        racing = asyncio.ensure_future(venue_fill())
        await asyncio.sleep(0.2)
        assert not racing.done(), "the fill must wait for the replacement's lock on the order"
    await racing
    assert (await row_of(world, new))["quantity"] == 90  # counted against 10 filled
    error = await refused(world, CONFIRM, old, new)
    assert "filled after replacement" in str(error)


async def test_a_replacement_requested_while_a_fill_commits_counts_that_fill(
    world: World, second_api: asyncpg.Connection
) -> None:
    old = await working(world, filled=10)
    async with as_role(second_api, "service_role", commit=True) as engine:
        await engine.execute(FILL, old, 5)  # uncommitted: holds the order's row

        async def request_replacement() -> uuid.UUID:
            stored = await replace(world, old)
            order_id: uuid.UUID = stored["id"]
            return order_id

        racing = asyncio.ensure_future(request_replacement())
        await asyncio.sleep(0.2)
        assert not racing.done(), "the replacement must wait for the fill"
    new = await racing
    assert (await row_of(world, new))["quantity"] == 85  # total 100: 15 filled
    await confirm(world, old, new)
    assert (await row_of(world, old))["status"] == "REPLACED"
