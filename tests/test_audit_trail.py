"""The audit trail the database writes by itself, and the lifecycle it enforces.

Every event of an order (submit, approve, failed routing attempt, route, recover, fill, cancel,
reject) must leave exactly one execution_logs row, written by the triggers in the same
transaction, whoever caused it; illegal changes are refused with SQLSTATE OA409 whoever writes
them (a trader, the engine as service_role, the owner); racing fills cannot overfill.

The events are caused as the API causes them, through the login role with the role and claims
set per transaction (tests.sql.as_role); the audit rows are read back as compliance_auditor.
Each test works on orders of its own, so the tests of this module share one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tests import pg
from tests.sql import as_role

LIFECYCLE = "OA409"
TRADER = uuid.UUID("7a1c9e52-4d0b-4c8e-9f3a-2b6d8e1f0a44")
LOG_FIELDS = ("action", "status", "reason", "error_code", "retry_attempt")


@dataclass(frozen=True)
class Db:
    owner: asyncpg.Connection
    api: asyncpg.Connection
    """Logged in as authenticator, the API's login role."""
    api2: asyncpg.Connection
    """A second API connection, for races."""


@pytest.fixture(scope="module")
async def db(cluster: pg.Cluster) -> AsyncIterator[Db]:
    name = await pg.create_test_database(cluster)
    conns = [
        await asyncpg.connect(cluster.dsn(name)),
        await asyncpg.connect(cluster.dsn(name, "authenticator")),
        await asyncpg.connect(cluster.dsn(name, "authenticator")),
    ]
    try:
        yield Db(*conns)
    finally:
        for conn in conns:
            await conn.close()
        await pg.drop_test_database(cluster, name)


# --- causing events, as the API does -----------------------------------------------------------

Step = tuple[str, str, tuple[Any, ...]]
"""(role, SQL with $1 = the order id, further arguments)."""


def trader(sql: str, *args: Any) -> Step:
    return ("authenticated", sql, args)


def engine(sql: str, *args: Any) -> Step:
    return ("service_role", sql, args)


APPROVE = engine("UPDATE orders SET approved_at = now() WHERE id = $1")
ROUTE = engine("UPDATE orders SET routed_at = now() WHERE id = $1")
RECOVER = engine("UPDATE orders SET recovered_at = clock_timestamp() WHERE id = $1")


def attempt_failed(error_code: str, reason: str | None = None) -> Step:
    return engine(
        "UPDATE orders SET retry_attempt = retry_attempt + 1, error_code = $2,"
        " status_reason = $3 WHERE id = $1",
        error_code,
        reason,
    )


def fill(quantity: int, price: str = "10.00", venue: str = "NYSE") -> Step:
    return engine(
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue, commission)"
        " VALUES ($1, $2, $3, $4, 0.35)",
        quantity,
        Decimal(price),
        venue,
    )


def cancel(reason: str, by: str = "authenticated") -> Step:
    return (
        by,
        "UPDATE orders SET status = 'CANCELLED', status_reason = $2 WHERE id = $1",
        (reason,),
    )


def reject(reason: str, error_code: str) -> Step:
    return engine(
        "UPDATE orders SET status = 'REJECTED', status_reason = $2, error_code = $3 WHERE id = $1",
        reason,
        error_code,
    )


async def submit(db: Db, *, quantity: int = 100, by: str = "authenticated") -> uuid.UUID:
    async with as_role(db.api, by, TRADER, commit=True) as conn:
        order_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
            " VALUES ($1, 'AAPL', 'BUY', $2, 'LIMIT', 10.50) RETURNING id",
            TRADER,
            quantity,
        )
    return order_id


async def run(db: Db, order_id: uuid.UUID, *steps: Step) -> None:
    for role, sql, args in steps:
        async with as_role(db.api, role, TRADER, commit=True) as conn:
            await conn.execute(sql, order_id, *args)


async def audit_rows(db: Db, order_id: uuid.UUID) -> list[dict[str, Any]]:
    async with as_role(db.api, "compliance_auditor") as conn:
        rows = await conn.fetch(
            "SELECT * FROM execution_logs WHERE order_id = $1 ORDER BY timestamp, created_at",
            order_id,
        )
    return [dict(r) for r in rows]


def entries(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(r[f] for f in LOG_FIELDS) for r in rows]


async def order(db: Db, order_id: uuid.UUID) -> dict[str, Any]:
    async with as_role(db.api, "compliance_auditor") as conn:
        row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    return dict(row)


# --- one audit row per event -------------------------------------------------------------------

FAILED = attempt_failed("VENUE_TIMEOUT", "venue did not answer within 5s")

EVENTS = {
    # name: (steps before, the event, the audit rows it must add)
    "approve": ([], APPROVE, [("APPROVED", "PENDING", None, None, None)]),
    "failed routing attempt": (
        [APPROVE],
        FAILED,
        [("EXECUTED", "PENDING", "venue did not answer within 5s", "VENUE_TIMEOUT", 1)],
    ),
    "failed routing attempt without a reason": (
        [APPROVE],
        attempt_failed("VENUE_DOWN"),
        [("EXECUTED", "PENDING", "transient venue error; will retry", "VENUE_DOWN", 1)],
    ),
    "second failed routing attempt": (
        [APPROVE, FAILED],
        attempt_failed("VENUE_TIMEOUT", "still no answer"),
        [("EXECUTED", "PENDING", "still no answer", "VENUE_TIMEOUT", 2)],
    ),
    "route": ([APPROVE], ROUTE, [("EXECUTED", "PENDING", "sent to venue", None, 0)]),
    "route after a failed attempt": (
        [APPROVE, FAILED],
        ROUTE,
        [("EXECUTED", "PENDING", "sent to venue", None, 1)],
    ),
    "recover": (
        [APPROVE, ROUTE],
        RECOVER,
        [("RECOVERED", "PENDING", "resumed after an interrupted worker", None, None)],
    ),
    "recover a partially filled order": (
        [APPROVE, ROUTE, fill(40)],
        RECOVER,
        [("RECOVERED", "PARTIAL", "resumed after an interrupted worker", None, None)],
    ),
    "partial fill": ([APPROVE, ROUTE], fill(40), [("FILLED", "PARTIAL", None, None, None)]),
    "another partial fill": (
        [APPROVE, ROUTE, fill(40)],
        fill(20, venue="NASDAQ"),
        [("FILLED", "PARTIAL", None, None, None)],
    ),
    "final fill": (
        [APPROVE, ROUTE, fill(40)],
        fill(60, venue="Mock"),
        [("FILLED", "FILLED", None, None, None)],
    ),
    "complete fill at once": (
        [APPROVE, ROUTE],
        fill(100),
        [("FILLED", "FILLED", None, None, None)],
    ),
    "trader cancels": (
        [],
        cancel("changed my mind"),
        [("CANCELLED", "CANCELLED", "changed my mind", None, None)],
    ),
    "trader cancels a partially filled order": (
        [APPROVE, ROUTE, fill(40)],
        cancel("enough"),
        [("CANCELLED", "CANCELLED", "enough", None, None)],
    ),
    "engine cancels an expired order": (
        [APPROVE, FAILED],
        cancel("expired", by="service_role"),
        [("CANCELLED", "CANCELLED", "expired", None, None)],
    ),
    "reject before approval": (
        [],
        reject("insufficient buying power", "INSUFFICIENT_FUNDS"),
        [("REJECTED", "REJECTED", "insufficient buying power", "INSUFFICIENT_FUNDS", 0)],
    ),
    "reject after failed attempts": (
        [APPROVE, FAILED, FAILED],
        reject("venue unreachable", "VENUE_UNREACHABLE"),
        [("REJECTED", "REJECTED", "venue unreachable", "VENUE_UNREACHABLE", 2)],
    ),
    "last attempt fails and rejects in one statement": (
        [APPROVE, FAILED],
        engine(
            "UPDATE orders SET retry_attempt = 2, status = 'REJECTED', error_code = 'RETRIES',"
            " status_reason = 'gave up' WHERE id = $1"
        ),
        [("REJECTED", "REJECTED", "gave up", "RETRIES", 2)],
    ),
    # not events: nothing to log
    "a status that does not change": (
        [],
        engine("UPDATE orders SET status = status WHERE id = $1"),
        [],
    ),
    "an engine note": (
        [APPROVE],
        engine("UPDATE orders SET status_reason = 'queued' WHERE id = $1"),
        [],
    ),
}


@pytest.mark.parametrize(("before", "event", "expected"), list(EVENTS.values()), ids=list(EVENTS))
async def test_each_event_writes_exactly_its_audit_row(
    db: Db, before: list[Step], event: Step, expected: list[tuple[Any, ...]]
) -> None:
    order_id = await submit(db)
    await run(db, order_id, *before)
    earlier = await audit_rows(db, order_id)

    await run(db, order_id, event)

    rows = await audit_rows(db, order_id)
    assert rows[: len(earlier)] == earlier
    added = rows[len(earlier) :]
    assert entries(added) == expected
    assert all((r["order_id"], r["trader_id"]) == (order_id, TRADER) for r in added)
    if added:
        assert added[0]["status"] == (await order(db, order_id))["status"]


@pytest.mark.parametrize("by", ["authenticated", "service_role"])
async def test_submitting_an_order_writes_one_submitted_row(db: Db, by: str) -> None:
    order_id = await submit(db, by=by)

    assert entries(await audit_rows(db, order_id)) == [("SUBMITTED", "PENDING", None, None, None)]


async def test_the_whole_lifecycle_reads_back_in_order(db: Db) -> None:
    order_id = await submit(db)

    await run(db, order_id, APPROVE, FAILED, ROUTE, RECOVER, fill(30), fill(70, "10.50"))

    assert [r[:2] for r in entries(await audit_rows(db, order_id))] == [
        ("SUBMITTED", "PENDING"),
        ("APPROVED", "PENDING"),
        ("EXECUTED", "PENDING"),
        ("EXECUTED", "PENDING"),
        ("RECOVERED", "PENDING"),
        ("FILLED", "PARTIAL"),
        ("FILLED", "FILLED"),
    ]
    final = await order(db, order_id)
    assert (final["status"], final["filled_quantity"]) == ("FILLED", 100)
    assert final["average_fill_price"] == Decimal("10.350000")  # (30 * 10 + 70 * 10.5) / 100


async def test_several_events_in_one_statement_each_get_their_row_in_order(db: Db) -> None:
    order_id = await submit(db)

    await run(
        db,
        order_id,
        engine("UPDATE orders SET approved_at = now(), routed_at = now() WHERE id = $1"),
    )

    assert [r[0] for r in entries(await audit_rows(db, order_id))] == [
        "SUBMITTED",
        "APPROVED",
        "EXECUTED",
    ]


async def test_a_reason_a_trader_wrote_never_becomes_the_engines_reason(db: Db) -> None:
    order_id = await submit(db)
    await run(db, order_id, APPROVE)
    note = trader("UPDATE orders SET status_reason = 'venue confirmed the fill' WHERE id = $1")
    with contextlib.suppress(asyncpg.PostgresError):  # refusing the note is as good a fix
        await run(db, order_id, note)

    await run(db, order_id, engine("UPDATE orders SET retry_attempt = 1 WHERE id = $1"), RECOVER)

    assert [r[2] for r in entries(await audit_rows(db, order_id))[-2:]] == [
        "transient venue error; will retry",
        "resumed after an interrupted worker",
    ]


# --- fills drive the order ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "quantity"),
    [
        pytest.param([], 10, id="not-approved"),
        pytest.param([APPROVE, ROUTE], 101, id="beyond-quantity"),
        pytest.param([APPROVE, ROUTE, fill(60)], 41, id="beyond-what-is-left"),
        pytest.param([APPROVE, ROUTE, fill(100)], 1, id="order-filled"),
        pytest.param([APPROVE, cancel("no")], 1, id="order-cancelled"),
        pytest.param([reject("risk", "RISK")], 1, id="order-rejected"),
    ],
)
async def test_a_fill_the_order_cannot_take_is_refused_and_leaves_no_trace(
    db: Db, before: list[Step], quantity: int
) -> None:
    order_id = await submit(db)
    await run(db, order_id, *before)
    state, logs = await order(db, order_id), await audit_rows(db, order_id)

    with pytest.raises(asyncpg.PostgresError) as refused:
        await run(db, order_id, fill(quantity))

    assert refused.value.sqlstate == LIFECYCLE
    assert await order(db, order_id) == state
    assert await audit_rows(db, order_id) == logs


async def test_a_fill_that_just_completes_the_order_is_taken(db: Db) -> None:
    order_id = await submit(db)
    await run(db, order_id, APPROVE, ROUTE, fill(60))

    await run(db, order_id, fill(40))

    assert (await order(db, order_id))["status"] == "FILLED"


async def test_the_fill_carries_the_orders_trader_whatever_the_engine_says(db: Db) -> None:
    order_id = await submit(db)
    await run(db, order_id, APPROVE)

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with as_role(db.api, "service_role") as conn:
            await conn.execute(
                "INSERT INTO fills (order_id, trader_id, quantity_filled, price_at_fill, venue)"
                " VALUES ($1, gen_random_uuid(), 1, 10, 'NYSE')",
                order_id,
            )
    await run(db, order_id, fill(1))

    async with as_role(db.api, "compliance_auditor") as conn:
        owners = await conn.fetch("SELECT trader_id FROM fills WHERE order_id = $1", order_id)
    assert [r["trader_id"] for r in owners] == [TRADER]


@pytest.mark.parametrize(
    "rewrite",
    [
        "UPDATE fills SET quantity_filled = 1 WHERE order_id = $1",
        "DELETE FROM fills WHERE order_id = $1",
    ],
    ids=["update", "delete"],
)
async def test_not_even_the_owner_can_rewrite_a_fill(db: Db, rewrite: str) -> None:
    order_id = await submit(db)
    await run(db, order_id, APPROVE, fill(40))

    with pytest.raises(asyncpg.PostgresError):
        async with rolled_back(db.owner) as owner:
            await owner.execute(rewrite, order_id)


# --- illegal transitions -----------------------------------------------------------------------

STATES: dict[str, list[Step]] = {
    "submitted": [],
    "approved": [APPROVE],
    "retrying": [APPROVE, FAILED],
    "routed": [APPROVE, ROUTE],
    "recovered": [APPROVE, ROUTE, RECOVER],
    "partial": [APPROVE, ROUTE, fill(40)],
    "filled": [APPROVE, ROUTE, fill(100)],
    "rejected": [reject("risk check", "RISK")],
    "cancelled": [cancel("changed my mind")],
    "cancelled-partial": [APPROVE, ROUTE, fill(40), cancel("enough")],
}

CHANGES: dict[str, str] = {
    # name: SET clause
    "to PENDING": "status = 'PENDING'",
    "to PARTIAL": "status = 'PARTIAL'",
    "to FILLED": "status = 'FILLED'",
    "to REJECTED": "status = 'REJECTED'",
    "to CANCELLED": "status = 'CANCELLED'",
    "note": "status_reason = 'edited'",
    "approve": "approved_at = now() + interval '1 second'",
    "unapprove": "approved_at = NULL",
    "route": "routed_at = now() + interval '1 second'",
    "unroute": "routed_at = NULL",
    "retry": "retry_attempt = retry_attempt + 1",
    "retry down": "retry_attempt = retry_attempt - 1",
    "recover": "recovered_at = now() + interval '1 second'",
    "unrecover": "recovered_at = NULL",
    "recover backwards": "recovered_at = recovered_at - interval '1 hour'",
    "error code": "error_code = 'EDITED'",
    "quantity": "quantity = quantity + 1",
    "price": "price = price + 1",
    "symbol": "symbol = 'GME'",
    "side": "side = 'SELL'",
    "trader": "trader_id = gen_random_uuid()",
    "created": "created_at = created_at - interval '1 day'",
    "expiry": "expires_at = now() + interval '7 days'",
    "client order id": "client_order_id = 'renamed'",
    "id": "id = gen_random_uuid()",
}
WHAT_WAS_ORDERED = [
    "quantity",
    "price",
    "symbol",
    "side",
    "trader",
    "created",
    "expiry",
    "client order id",
    "id",
]
TERMINAL = ["filled", "rejected", "cancelled", "cancelled-partial"]

ILLEGAL: dict[str, list[str]] = {
    "submitted": ["to PARTIAL", "to FILLED", "route", "retry", "recover", *WHAT_WAS_ORDERED],
    "approved": ["to PARTIAL", "to FILLED", "approve", "unapprove", "retry down", "quantity"],
    "retrying": ["retry down", "unapprove", "to FILLED", "symbol"],
    "routed": ["route", "unroute", "unapprove", "to PARTIAL", "to FILLED", "price"],
    "recovered": ["unrecover", "recover backwards", "unapprove", "side"],
    "partial": [
        "to PENDING",
        "to FILLED",
        "to REJECTED",
        "route",
        "approve",
        "unapprove",
        "retry down",
        "trader",
    ],
    **{
        state: [
            "to PENDING",
            "to PARTIAL",
            "to FILLED",
            "to REJECTED",
            "to CANCELLED",
            "note",
            "approve",
            "route",
            "retry",
            "recover",
            "error code",
            "created",
        ]
        for state in TERMINAL
    },
}

# The columns each writer may name in an UPDATE (the grants of migration 001); a writer without
# the grant is stopped by the privilege check before the lifecycle is ever asked.
MAY_WRITE = {
    "authenticated": {"status", "status_reason"},
    "service_role": {
        "status",
        "status_reason",
        "error_code",
        "retry_attempt",
        "approved_at",
        "routed_at",
        "recovered_at",
    },
    "owner": None,
}


def column_of(change: str) -> str:
    return CHANGES[change].split(" = ")[0]


def writers_of(change: str) -> list[str]:
    return [w for w, cols in MAY_WRITE.items() if cols is None or column_of(change) in cols]


@asynccontextmanager
async def rolled_back(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    tx = conn.transaction()
    await tx.start()
    try:
        yield conn
    finally:
        await tx.rollback()


async def attempt(db: Db, writer: str, order_id: uuid.UUID, change: str) -> str:
    """The SQLSTATE refusing ``change`` by ``writer``, or "ok"; always rolled back."""
    sql = f"UPDATE orders SET {CHANGES[change]} WHERE id = $1"
    try:
        if writer == "owner":
            async with rolled_back(db.owner) as owner:
                # the trader's claims: an owner without superuser is bound by FORCE RLS
                await owner.execute(
                    "SELECT set_config('request.jwt.claims', $1, true)",
                    json.dumps({"role": "authenticated", "sub": str(TRADER)}),
                )
                tag = await owner.execute(sql, order_id)
        else:
            async with as_role(db.api, writer, TRADER) as conn:
                tag = await conn.execute(sql, order_id)
    except asyncpg.PostgresError as error:
        return str(error.sqlstate)
    assert tag == "UPDATE 1", f"{writer}: {tag}: the order was not even reached"
    return "ok"


@pytest.mark.parametrize(
    ("state", "change"),
    [(state, change) for state, changes in ILLEGAL.items() for change in changes],
)
async def test_an_illegal_change_is_refused_whoever_writes_it(
    db: Db, state: str, change: str
) -> None:
    order_id = await submit(db)
    await run(db, order_id, *STATES[state])
    before, logs = await order(db, order_id), await audit_rows(db, order_id)

    outcomes = {
        writer: await attempt(db, writer, order_id, change) for writer in writers_of(change)
    }

    assert outcomes == dict.fromkeys(writers_of(change), LIFECYCLE)
    assert await order(db, order_id) == before
    assert await audit_rows(db, order_id) == logs


LEGAL: list[tuple[str, str, str]] = [
    # the same builder, states and writers, and changes the lifecycle allows
    ("submitted", "approve", "service_role"),
    ("submitted", "to REJECTED", "service_role"),
    ("submitted", "to CANCELLED", "authenticated"),
    ("submitted", "note", "owner"),
    ("approved", "route", "service_role"),
    ("approved", "retry", "service_role"),
    ("retrying", "retry", "owner"),
    ("routed", "recover", "service_role"),
    ("recovered", "recover", "service_role"),
    ("partial", "to CANCELLED", "authenticated"),
    ("partial", "recover", "service_role"),
]


@pytest.mark.parametrize(("state", "change", "writer"), LEGAL)
async def test_a_legal_change_from_the_same_state_is_accepted(
    db: Db, state: str, change: str, writer: str
) -> None:
    order_id = await submit(db)
    await run(db, order_id, *STATES[state])

    assert await attempt(db, writer, order_id, change) == "ok"


def test_every_state_has_illegal_changes_and_every_change_a_writer() -> None:
    assert set(ILLEGAL) == set(STATES)
    assert all(writers_of(change) for change in CHANGES)
    assert {c for changes in ILLEGAL.values() for c in changes} == set(CHANGES)


# --- racing fills ------------------------------------------------------------------------------


async def wait_until_blocked(owner: asyncpg.Connection, pid: int) -> None:
    for _ in range(500):
        if await owner.fetchval("SELECT cardinality(pg_blocking_pids($1)) > 0", pid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


CANCEL_SQL = "UPDATE orders SET status = 'CANCELLED', status_reason = 'race' WHERE id = $1"
FILL_SQL = (
    "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
    " VALUES ($1, $2, 10.00, 'NYSE')"
)


async def race(db: Db, order_id: uuid.UUID, first: int, second: int) -> list[Any]:
    """Two engine connections fill one order; the first holds the order's row lock while the
    second inserts, and commits only once the second waits for it."""
    first_holds_lock = asyncio.Event()

    async def fill_first() -> None:
        async with as_role(db.api, "service_role", commit=True) as conn:
            await conn.execute(FILL_SQL, order_id, first)
            first_holds_lock.set()
            await wait_until_blocked(db.owner, db.api2.get_server_pid())

    async def fill_second() -> None:
        await first_holds_lock.wait()
        async with as_role(db.api2, "service_role", commit=True) as conn:
            await conn.execute(FILL_SQL, order_id, second)

    return list(
        await asyncio.wait_for(
            asyncio.gather(fill_first(), fill_second(), return_exceptions=True), timeout=10
        )
    )


async def test_racing_fills_cannot_overfill_an_order(db: Db) -> None:
    order_id = await submit(db)
    await run(db, order_id, APPROVE, ROUTE)

    first, second = await race(db, order_id, 60, 60)

    assert first is None
    assert isinstance(second, asyncpg.PostgresError), second
    assert second.sqlstate == LIFECYCLE
    final = await order(db, order_id)
    assert (final["filled_quantity"], final["status"]) == (60, "PARTIAL")
    async with as_role(db.api, "compliance_auditor") as conn:
        assert await conn.fetchval("SELECT count(*) FROM fills WHERE order_id = $1", order_id) == 1
    assert [r[:2] for r in entries(await audit_rows(db, order_id))][-1] == ("FILLED", "PARTIAL")


async def test_racing_fills_that_fit_are_both_applied_in_turn(db: Db) -> None:
    order_id = await submit(db)
    await run(db, order_id, APPROVE, ROUTE)

    assert await race(db, order_id, 60, 40) == [None, None]

    final = await order(db, order_id)
    assert (final["filled_quantity"], final["status"]) == (100, "FILLED")
    assert [r[:2] for r in entries(await audit_rows(db, order_id))][-2:] == [
        ("FILLED", "PARTIAL"),
        ("FILLED", "FILLED"),
    ]


async def test_a_fill_racing_the_cancel_of_a_routed_order_is_recorded_not_lost(db: Db) -> None:
    order_id = await submit(db)
    await run(db, order_id, APPROVE, ROUTE)
    cancel_holds_lock = asyncio.Event()

    async def cancel_first() -> None:
        async with as_role(db.api, "authenticated", TRADER, commit=True) as conn:
            await conn.execute(CANCEL_SQL, order_id)
            cancel_holds_lock.set()
            await wait_until_blocked(db.owner, db.api2.get_server_pid())

    async def fill_second() -> None:
        await cancel_holds_lock.wait()
        async with as_role(db.api2, "service_role", commit=True) as conn:
            await conn.execute(FILL_SQL, order_id, 10)

    cancelled, filled = await asyncio.wait_for(
        asyncio.gather(cancel_first(), fill_second(), return_exceptions=True), timeout=10
    )

    # The venue executed before the cancel reached it: a fact the ledger must keep.
    assert (cancelled, filled) == (None, None)
    final = await order(db, order_id)
    assert (final["status"], final["filled_quantity"]) == ("CANCELLED", 10)
    assert entries(await audit_rows(db, order_id))[-2:] == [
        ("CANCELLED", "CANCELLED", "race", None, None),
        ("FILLED", "CANCELLED", None, None, None),
    ]


async def test_late_fills_that_complete_a_cancelled_order_make_it_filled(db: Db) -> None:
    order_id = await submit(db, quantity=30)
    await run(db, order_id, APPROVE, ROUTE, fill(10), cancel("changed my mind"))
    await run(db, order_id, fill(20))
    final = await order(db, order_id)
    assert (final["status"], final["filled_quantity"]) == ("FILLED", 30)
    assert entries(await audit_rows(db, order_id))[-1] == ("FILLED", "FILLED", None, None, None)


async def test_an_order_cancelled_before_it_reached_the_venue_takes_no_fill(db: Db) -> None:
    order_id = await submit(db)
    await run(db, order_id, APPROVE, cancel("changed my mind"))
    with pytest.raises(asyncpg.PostgresError) as refused:
        await run(db, order_id, fill(10))
    assert refused.value.sqlstate == LIFECYCLE
    assert (await order(db, order_id))["filled_quantity"] == 0


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE orders SET status_reason = 'rewritten' WHERE id = $1",
        "UPDATE orders SET recovered_at = clock_timestamp() WHERE id = $1",
        "UPDATE orders SET status = 'REJECTED' WHERE id = $1",
        "UPDATE orders SET retry_attempt = retry_attempt + 1 WHERE id = $1",
    ],
)
async def test_a_cancelled_routed_order_takes_fills_and_nothing_else(db: Db, change: str) -> None:
    order_id = await submit(db)
    await run(db, order_id, APPROVE, ROUTE, cancel("changed my mind"))
    with pytest.raises(asyncpg.PostgresError) as refused:
        await run(db, order_id, engine(change))
    assert refused.value.sqlstate == LIFECYCLE
