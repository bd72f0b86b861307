"""One (state, change) table run against the Python rules and against the database's trigger.

``app.orders.lifecycle`` states the rules the API and the engine act on;
``orders_enforce_lifecycle`` (migration 006's version) enforces them for every writer. Each
row here builds an order in a state by legal steps, then attempts one change as
service_role with plain SQL (rolled back): the trigger's verdict must be ``lifecycle``'s, and
a fill must leave the status ``lifecycle.status_after_fill`` predicts. The state the engine
reads (``app.engine.order_rows.LIFECYCLE_COLUMNS``) must be the one the steps built. Adding a
state or a change to either side without the other fails here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from app.engine.order_rows import LIFECYCLE_COLUMNS, ORDERS_WITH_STATE
from app.models.order import OrderStatusEnum as Status
from app.orders import lifecycle
from app.orders.lifecycle import Change, State
from tests import pg
from tests.sql import as_role

TRADER = uuid.UUID("0c3e6f1a-8b2d-4e5f-9a7c-1d2e3f4a5b6c")
QUANTITY = 100
REFUSED = "OA409"


@dataclass(frozen=True)
class Db:
    owner: asyncpg.Connection
    api: asyncpg.Connection
    """Logged in as authenticator, the API's login role."""


@pytest.fixture(scope="module")
async def db(cluster: pg.Cluster) -> AsyncIterator[Db]:
    name = await pg.create_test_database(cluster)
    owner = await asyncpg.connect(cluster.dsn(name))
    api = await asyncpg.connect(cluster.dsn(name, "authenticator"))
    try:
        yield Db(owner, api)
    finally:
        await api.close()
        await owner.close()
        await pg.drop_test_database(cluster, name)


# --- the steps that build a state, and the changes attempted from it ---------------------------

APPROVE = "UPDATE orders SET approved_at = now() WHERE id = $1"
ROUTE = "UPDATE orders SET routed_at = now() WHERE id = $1"
REJECT = "UPDATE orders SET status = 'REJECTED', status_reason = 'no' WHERE id = $1"
CANCEL = "UPDATE orders SET status = 'CANCELLED', status_reason = 'enough' WHERE id = $1"
FILL = (
    "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
    " VALUES ($1, $2, 10.00, 'NYSE')"
)


EXPIRE = "UPDATE orders SET status = 'EXPIRED', status_reason = 'expired' WHERE id = $1"
# The engine's confirmation, naming the replacement waiting for it (none: NULL, refused).
CONFIRM = (
    "UPDATE orders SET status = 'REPLACED', replaced_by_id ="
    " (SELECT r.id FROM orders r WHERE r.replaces_id = $1 AND r.status = 'PENDING')"
    " WHERE id = $1"
)
# Steps on the order that the order under test replaces (see ``AsReplacement``).
CONFIRM_PREDECESSOR = (
    "UPDATE orders SET status = 'REPLACED', replaced_by_id = $1"
    " WHERE id = (SELECT replaces_id FROM orders WHERE id = $1)"
)
# Steps the trader takes: a replacement of the order is requested (a total of 120 wanted).
REQUEST_REPLACEMENT = "request a replacement"
EXPIRING = "expires now"
"""First step of an order whose expires_at is reached (inserted with one a moment ahead)."""
AS_REPLACEMENT = "the order under test is a replacement"
"""First step: the order under test replaces a fresh order (and waits for confirmation)."""


def fill(quantity: int) -> tuple[str, int]:
    return (FILL, quantity)


# name -> (steps, the state lifecycle sees): every state an order can be in.
STATES: dict[str, tuple[list[Any], State]] = {
    "new": ([], State(Status.PENDING)),
    "approved": ([APPROVE], State(Status.PENDING, approved=True)),
    "routed": ([APPROVE, ROUTE], State(Status.PENDING, approved=True, routed=True)),
    "partial before routing": ([APPROVE, fill(40)], State(Status.PARTIAL, approved=True)),
    "partial": (
        [APPROVE, ROUTE, fill(40)],
        State(Status.PARTIAL, approved=True, routed=True),
    ),
    "filled": (
        [APPROVE, ROUTE, fill(QUANTITY)],
        State(Status.FILLED, approved=True, routed=True),
    ),
    "rejected": ([REJECT], State(Status.REJECTED)),
    "rejected after approval": ([APPROVE, REJECT], State(Status.REJECTED, approved=True)),
    "cancelled": ([CANCEL], State(Status.CANCELLED)),
    "cancelled after approval": ([APPROVE, CANCEL], State(Status.CANCELLED, approved=True)),
    "cancelled at the venue": (
        [APPROVE, ROUTE, CANCEL],
        State(Status.CANCELLED, approved=True, routed=True),
    ),
    "cancelled partial": (
        [APPROVE, ROUTE, fill(40), CANCEL],
        State(Status.CANCELLED, approved=True, routed=True),
    ),
    # Expiry (migration 006): only once expires_at is reached; a routed EXPIRED order still
    # takes late fills, like a cancelled one.
    "expiry reached": ([EXPIRING], State(Status.PENDING, expiry_reached=True)),
    "routed, expiry reached": (
        [EXPIRING, APPROVE, ROUTE],
        State(Status.PENDING, approved=True, routed=True, expiry_reached=True),
    ),
    "partial, expiry reached": (
        [EXPIRING, APPROVE, ROUTE, fill(40)],
        State(Status.PARTIAL, approved=True, routed=True, expiry_reached=True),
    ),
    "expired": ([EXPIRING, EXPIRE], State(Status.EXPIRED, expiry_reached=True)),
    "expired at the venue": (
        [EXPIRING, APPROVE, ROUTE, EXPIRE],
        State(Status.EXPIRED, approved=True, routed=True, expiry_reached=True),
    ),
    "expired partial": (
        [EXPIRING, APPROVE, ROUTE, fill(40), EXPIRE],
        State(Status.EXPIRED, approved=True, routed=True, expiry_reached=True),
    ),
    # Replace (migration 006): the order a replacement waits for, the replacement itself.
    "replacement requested": (
        [REQUEST_REPLACEMENT],
        State(Status.PENDING, replacement_waiting=True),
    ),
    "routed, replacement requested": (
        [APPROVE, ROUTE, REQUEST_REPLACEMENT],
        State(Status.PENDING, approved=True, routed=True, replacement_waiting=True),
    ),
    "partial, replacement requested": (
        [APPROVE, ROUTE, fill(40), REQUEST_REPLACEMENT],
        State(Status.PARTIAL, approved=True, routed=True, replacement_waiting=True),
    ),
    "filled after the replacement was requested": (
        [APPROVE, ROUTE, REQUEST_REPLACEMENT, fill(40)],
        State(
            Status.PARTIAL,
            approved=True,
            routed=True,
            replacement_waiting=True,
            filled_since_replacement=True,
        ),
    ),
    "replaced": ([REQUEST_REPLACEMENT, CONFIRM], State(Status.REPLACED)),
    "replaced at the venue": (
        [APPROVE, ROUTE, fill(40), REQUEST_REPLACEMENT, CONFIRM],
        State(Status.REPLACED, approved=True, routed=True),
    ),
    "an unconfirmed replacement": (
        [AS_REPLACEMENT],
        State(Status.PENDING, awaiting_confirmation=True),
    ),
    "a confirmed replacement": ([AS_REPLACEMENT, CONFIRM_PREDECESSOR], State(Status.PENDING)),
}

# A change as plain SQL; fills twice: one that leaves the order open, one that completes it.
CHANGES: dict[str, tuple[Change, str]] = {
    "approve": (Change.APPROVE, APPROVE),
    "route": (Change.ROUTE, ROUTE),
    "retry": (
        Change.RETRY,
        "UPDATE orders SET retry_attempt = retry_attempt + 1, error_code = 'BUSY' WHERE id = $1",
    ),
    "recover": (Change.RECOVER, "UPDATE orders SET recovered_at = clock_timestamp() WHERE id = $1"),
    "reject": (Change.REJECT, REJECT),
    "cancel": (Change.CANCEL, CANCEL),
    "expire": (Change.EXPIRE, EXPIRE),
    "confirm a replacement": (Change.REPLACE, CONFIRM),
    "fill 10": (Change.FILL, FILL),
    "fill the rest": (Change.FILL, FILL),
}


async def submit(
    db: Db,
    *,
    expires_in: float | None = None,
    replaces: uuid.UUID | None = None,
    quantity: int = QUANTITY,
) -> uuid.UUID:
    """An order as its trader submits it (``quantity``: a replacement's total)."""
    async with as_role(db.api, "authenticated", TRADER, commit=True) as conn:
        order_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price,"
            " expires_at, replaces_id)"
            " VALUES ($1, 'AAPL', 'BUY', $2, 'LIMIT', 10.50,"
            " now() + make_interval(secs => $3::double precision), $4) RETURNING id",
            TRADER,
            quantity,
            expires_in,
            replaces,
        )
    return order_id


async def build(db: Db, steps: list[Any]) -> uuid.UUID:
    if steps[:1] == [EXPIRING]:
        order_id = await submit(db, expires_in=0.05)
        await asyncio.sleep(0.1)
    elif steps[:1] == [AS_REPLACEMENT]:
        order_id = await submit(db, replaces=await submit(db))
    else:
        order_id = await submit(db)
    for step in steps:
        if step in (EXPIRING, AS_REPLACEMENT):
            continue
        if step == REQUEST_REPLACEMENT:
            await submit(db, replaces=order_id, quantity=QUANTITY + 20)
            continue
        sql, *args = (step,) if isinstance(step, str) else step
        async with as_role(db.api, "service_role", commit=True) as conn:
            await conn.execute(sql, order_id, *args)
    return order_id


async def attempt(db: Db, order_id: uuid.UUID, name: str) -> tuple[bool, Status | None]:
    """Whether the trigger takes change ``name`` (as service_role, rolled back), and the
    status the order then has."""
    _, sql = CHANGES[name]
    args: list[Any] = []
    if name.startswith("fill"):
        filled = await db.owner.fetchval(
            "SELECT filled_quantity FROM orders WHERE id = $1", order_id
        )
        args = [10 if name == "fill 10" else QUANTITY - filled]
    try:
        async with as_role(db.api, "service_role") as conn:
            tag = await conn.execute(sql, order_id, *args)
            status = await conn.fetchval("SELECT status::text FROM orders WHERE id = $1", order_id)
    except asyncpg.PostgresError as error:
        refusal = error.sqlstate
    else:
        assert tag in ("UPDATE 1", "INSERT 0 1"), f"{name}: {tag}: the order was not reached"
        return True, Status(status)
    # Anything but the lifecycle's refusal (a grant, a constraint) is a broken row here.
    assert refusal == REFUSED, f"{name}: refused with {refusal}"
    return False, None


def predicted(state: State, name: str, *, filled: int) -> tuple[bool, Status | None]:
    """``lifecycle``'s verdict on change ``name``, and the status the order then has."""
    change, _ = CHANGES[name]
    if not lifecycle.allows(state, change):
        return False, None
    if change is Change.FILL:
        filled = filled + 10 if name == "fill 10" else QUANTITY
        return True, lifecycle.status_after_fill(state, filled=filled, quantity=QUANTITY)
    return True, lifecycle.TARGET.get(change, state.status)


@pytest.mark.parametrize("state_name", list(STATES))
async def test_the_trigger_and_lifecycle_agree_on_every_change(db: Db, state_name: str) -> None:
    steps, state = STATES[state_name]
    order_id = await build(db, steps)
    assert await state_of(db, order_id) == state
    filled = await db.owner.fetchval("SELECT filled_quantity FROM orders WHERE id = $1", order_id)

    disagreements = []
    for name in CHANGES:
        if name == "fill the rest" and filled >= QUANTITY:
            continue  # nothing left to fill
        verdict = await attempt(db, order_id, name)
        expected = predicted(state, name, filled=filled)
        if verdict != expected:
            disagreements.append((name, {"trigger": verdict, "lifecycle": expected}))
    assert disagreements == []


async def state_of(db: Db, order_id: uuid.UUID) -> State:
    """The order's state as the engine reads it."""
    row = await db.owner.fetchrow(
        f"SELECT {LIFECYCLE_COLUMNS} FROM {ORDERS_WITH_STATE} WHERE o.id = $1", order_id
    )
    return State(
        Status(row["status"]),
        approved=row["approved"],
        routed=row["routed"],
        expiry_reached=row["expiry_reached"],
        awaiting_confirmation=row["awaiting_confirmation"],
        replacement_waiting=row["replacement_waiting"],
        filled_since_replacement=row["filled_since_replacement"],
    )


# The rows the two sides once disagreed on, and the ones the engine depends on, spelled out:
# (state, change, the status after it, or None when refused).
SPELLED_OUT: list[tuple[str, str, Status | None]] = [
    ("partial", "reject", None),  # part of it executed: it cannot be rejected ...
    ("partial", "cancel", Status.CANCELLED),  # ... only cancelled
    ("approved", "fill 10", Status.PARTIAL),
    ("approved", "fill the rest", Status.FILLED),
    ("partial", "fill 10", Status.PARTIAL),
    ("partial", "fill the rest", Status.FILLED),
    ("new", "fill 10", None),  # not approved
    ("cancelled at the venue", "fill 10", Status.CANCELLED),  # a late fill
    ("cancelled partial", "fill the rest", Status.FILLED),  # a late fill completing it
    ("cancelled after approval", "fill 10", None),  # never reached the venue
    ("cancelled at the venue", "cancel", None),
    ("filled", "recover", None),
    ("routed", "route", None),
    ("routed", "expire", None),  # expires_at not reached (none at all here)
    ("routed, expiry reached", "expire", Status.EXPIRED),
    ("partial, expiry reached", "expire", Status.EXPIRED),
    ("expired at the venue", "fill 10", Status.EXPIRED),  # a late fill
    ("expired partial", "fill the rest", Status.FILLED),  # a late fill completing it
    ("expired", "fill 10", None),  # never reached the venue
    ("expired at the venue", "cancel", None),
    ("replacement requested", "confirm a replacement", Status.REPLACED),
    ("partial, replacement requested", "confirm a replacement", Status.REPLACED),
    ("filled after the replacement was requested", "confirm a replacement", None),
    ("approved", "confirm a replacement", None),  # nothing replaces it
    ("replaced at the venue", "fill 10", None),  # nothing on REPLACED
    ("replaced at the venue", "cancel", None),
    ("an unconfirmed replacement", "approve", None),
    ("an unconfirmed replacement", "cancel", Status.CANCELLED),  # withdrawn by its trader
    ("a confirmed replacement", "approve", Status.PENDING),
]


@pytest.mark.parametrize(("state_name", "change_name", "after"), SPELLED_OUT)
async def test_the_rows_that_matter_most(
    db: Db, state_name: str, change_name: str, after: Status | None
) -> None:
    steps, state = STATES[state_name]
    filled = sum(step[1] for step in steps if isinstance(step, tuple))
    assert predicted(state, change_name, filled=filled) == (after is not None, after)
    order_id = await build(db, steps)
    assert await attempt(db, order_id, change_name) == (after is not None, after)


def test_the_engine_cancels_a_partial_order_it_would_reject() -> None:
    assert lifecycle.closing_status(Status.PARTIAL, Status.REJECTED) is Status.CANCELLED
    assert lifecycle.closing_status(Status.PENDING, Status.REJECTED) is Status.REJECTED
    assert lifecycle.closing_status(Status.PARTIAL, Status.CANCELLED) is Status.CANCELLED
