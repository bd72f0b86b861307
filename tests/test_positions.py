"""Positions (migration 012) against a reference written here, and who may read or write them.

The reference below knows nothing of the migration: it keeps FIFO lots and an average price
as the issue words them, in exact fractions, and rounds half to even at the end. Fills are
written as the engine writes them (service_role, plain SQL) and positions are read as the
API reads them (``trader_positions`` as each role).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import asyncpg
import pytest

from app.db.urls import libpq_url
from tests import pg, privileges
from tests.conftest import Db
from tests.revisions import round_trip
from tests.sql import as_role
from tests.test_migrations import alembic

SYMBOL = "ACME"


# --- the reference -------------------------------------------------------------------------------


def half_even(value: Fraction, places: int) -> Decimal:
    """``value`` to ``places`` decimals; a value exactly halfway goes to the even neighbour."""
    scaled = value * 10**places
    whole = scaled.numerator // scaled.denominator  # floor, also below zero
    rest = scaled - whole
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2 == 1):
        whole += 1
    return Decimal(whole).scaleb(-places)


def sign(n: int) -> int:
    return (n > 0) - (n < 0)


@dataclass
class Fifo:
    """Open lots, oldest first: [signed quantity, price]."""

    lots: list[list[Any]] = field(default_factory=list)
    realized: Fraction = Fraction(0)

    @property
    def held(self) -> int:
        return sum(q for q, _ in self.lots)

    def fill(self, signed: int, price: Fraction) -> None:
        if self.held == 0 or sign(self.held) == sign(signed):
            self.lots.append([signed, price])
            return
        left = abs(signed)
        while left and self.lots:
            quantity, entry = self.lots[0]
            taken = min(left, abs(quantity))
            self.realized += taken * (price - entry) * sign(quantity)
            left -= taken
            if taken == abs(quantity):
                self.lots.pop(0)
            else:
                self.lots[0][0] = quantity - sign(quantity) * taken
        if left:
            self.lots.append([sign(signed) * left, price])

    def expected(self) -> dict[str, Any]:
        cost = sum((abs(q) * p for q, p in self.lots), Fraction(0))
        held = self.held
        return {
            "quantity": held,
            "average_entry_price": half_even(cost / abs(held), 6) if held else None,
            "cost_basis": half_even(cost, 2),
            "realized_pnl": half_even(self.realized, 2),
        }


@dataclass
class Average:
    """One average entry price, moved by each fill that adds to the position; the average
    is the 6-decimal price the contract shows, and closing is priced at it."""

    held: int = 0
    entry: Fraction | None = None
    realized: Fraction = Fraction(0)

    def fill(self, signed: int, price: Fraction) -> None:
        if self.held == 0 or sign(self.held) == sign(signed):
            total = (self.entry or 0) * abs(self.held) + abs(signed) * price
            self.entry = Fraction(half_even(total / (abs(self.held) + abs(signed)), 6))
            self.held += signed
            return
        assert self.entry is not None
        closed = min(abs(signed), abs(self.held))
        self.realized += closed * (price - self.entry) * sign(self.held)
        before = self.held
        self.held += signed
        if self.held == 0:
            self.entry = None
        elif sign(self.held) != sign(before):
            self.entry = price  # crossed zero: the rest opens at the fill's price

    def expected(self) -> dict[str, Any]:
        return {
            "quantity": self.held,
            "average_entry_price": half_even(self.entry, 6) if self.entry is not None else None,
            "cost_basis": half_even((self.entry or 0) * abs(self.held), 2),
            "realized_pnl": half_even(self.realized, 2),
        }


# --- arranging, as the roles would ---------------------------------------------------------------


async def submit(
    conn: asyncpg.Connection, trader: uuid.UUID, side: str, quantity: int
) -> uuid.UUID:
    async with as_role(conn, "authenticated", trader, commit=True) as c:
        order_id: uuid.UUID = await c.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
            " VALUES ($1, $2, $3, $4, 'MARKET') RETURNING id",
            trader,
            SYMBOL,
            side,
            quantity,
        )
    async with as_role(conn, "service_role", commit=True) as c:
        await c.execute("UPDATE orders SET approved_at = now() WHERE id = $1", order_id)
        await c.execute("UPDATE orders SET routed_at = now() WHERE id = $1", order_id)
    return order_id


async def fill(
    conn: asyncpg.Connection,
    order_id: uuid.UUID,
    quantity: int,
    price: Decimal,
    commission: Decimal,
) -> None:
    async with as_role(conn, "service_role", commit=True) as c:
        await c.execute(
            "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue, commission)"
            " VALUES ($1, $2, $3, 'Test', $4)",
            order_id,
            quantity,
            price,
            commission,
        )


async def positions(
    conn: asyncpg.Connection,
    role: str,
    sub: uuid.UUID | None,
    trader: uuid.UUID | None,
    method: str = "FIFO",
) -> list[asyncpg.Record]:
    async with as_role(conn, role, sub) as c:
        rows: list[asyncpg.Record] = await c.fetch(
            "SELECT * FROM trader_positions($1, $2)", trader, method
        )
    return rows


def shown(row: asyncpg.Record) -> dict[str, Any]:
    return {k: row[k] for k in ("quantity", "average_entry_price", "cost_basis", "realized_pnl")}


# --- the reference, on random fills --------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_positions_follow_the_reference_on_random_fills_for_both_methods(
    authenticator_conn: asyncpg.Connection, seed: int
) -> None:
    draw = random.Random(seed)
    trader = uuid.uuid4()
    fifo, average = Fifo(), Average()
    commissions = Decimal(0)
    # Quantities include powers of two: their averages land on exact 6-decimal ties.
    sizes = [*range(1, 21), 32, 64, 128]
    working: dict[uuid.UUID, list[Any]] = {}  # order -> [signed direction, unfilled, cancelled]
    for step in range(40):
        if len(working) < 3 or draw.random() < 0.2:
            side = draw.choice(["BUY", "SELL"])
            quantity = draw.choice(sizes) * draw.randint(1, 3)
            order_id = await submit(authenticator_conn, trader, side, quantity)
            working[order_id] = [1 if side == "BUY" else -1, quantity, False]
            continue
        order_id = draw.choice(list(working))
        direction, unfilled, cancelled = working[order_id]
        if not cancelled and draw.random() < 0.15:
            # Cancelled with fills still to come from the venue: late fills count.
            async with as_role(authenticator_conn, "authenticated", trader, commit=True) as c:
                await c.execute("UPDATE orders SET status = 'CANCELLED' WHERE id = $1", order_id)
            working[order_id][2] = True
            continue
        quantity = draw.randint(1, unfilled) if draw.random() < 0.6 else unfilled
        price = Decimal(draw.randint(900, 1100)) / 100
        commission = Decimal(draw.randint(0, 150)) / 100
        await fill(authenticator_conn, order_id, quantity, price, commission)
        fifo.fill(direction * quantity, Fraction(price))
        average.fill(direction * quantity, Fraction(price))
        commissions += commission
        working[order_id][1] -= quantity
        if working[order_id][1] == 0:
            del working[order_id]
        for method, book in (("FIFO", fifo), ("AVERAGE_COST", average)):
            [row] = await positions(authenticator_conn, "authenticated", trader, None, method)
            assert shown(row) == book.expected(), (step, method)
            assert row["commissions"] == commissions
            assert row["symbol"] == SYMBOL
            assert row["trader_id"] == trader


async def test_a_fill_crossing_zero_closes_at_its_price_and_opens_the_rest(
    authenticator_conn: asyncpg.Connection,
) -> None:
    trader = uuid.uuid4()
    buy = await submit(authenticator_conn, trader, "BUY", 100)
    await fill(authenticator_conn, buy, 60, Decimal("10.00"), Decimal("1.00"))
    await fill(authenticator_conn, buy, 40, Decimal("11.00"), Decimal("1.00"))
    sell = await submit(authenticator_conn, trader, "SELL", 150)
    await fill(authenticator_conn, sell, 150, Decimal("12.00"), Decimal("0.50"))
    [fifo] = await positions(authenticator_conn, "authenticated", trader, None, "FIFO")
    [average] = await positions(authenticator_conn, "authenticated", trader, None, "AVERAGE_COST")
    for row in (fifo, average):
        assert row["quantity"] == -50
        assert row["average_entry_price"] == Decimal("12.000000")
        assert row["cost_basis"] == Decimal("600.00")
        # 60 x (12 - 10) + 40 x (12 - 11) = 160 by FIFO; 100 x (12 - 10.4) = 160 on average.
        assert row["realized_pnl"] == Decimal("160.00")
        assert row["commissions"] == Decimal("2.50")


async def test_a_closed_position_keeps_its_realized_pnl_and_commissions(
    authenticator_conn: asyncpg.Connection,
) -> None:
    trader = uuid.uuid4()
    sell = await submit(authenticator_conn, trader, "SELL", 10)
    await fill(authenticator_conn, sell, 10, Decimal("20.00"), Decimal("0.10"))
    buy = await submit(authenticator_conn, trader, "BUY", 10)
    await fill(authenticator_conn, buy, 10, Decimal("18.50"), Decimal("0.10"))
    [row] = await positions(authenticator_conn, "authenticated", trader, None)
    assert (row["quantity"], row["average_entry_price"], row["cost_basis"]) == (0, None, 0)
    assert (row["realized_pnl"], row["commissions"]) == (Decimal("15.00"), Decimal("0.20"))


@pytest.mark.parametrize(
    ("value", "places", "rounded"),
    [
        ("0.125", 2, "0.12"),
        ("0.135", 2, "0.14"),
        ("-0.125", 2, "-0.12"),
        ("-0.135", 2, "-0.14"),
        ("2.5", 0, "2"),
        ("3.5", 0, "4"),
        ("0.1251", 2, "0.13"),
        ("1.0000005", 6, "1.000000"),
        ("1.0000015", 6, "1.000002"),
        ("7", 2, "7.00"),
    ],
)
async def test_money_rounds_half_to_even(
    owner_conn: asyncpg.Connection, value: str, places: int, rounded: str
) -> None:
    result = await owner_conn.fetchval(
        "SELECT public.round_half_even($1::numeric, $2)", value, places
    )
    assert str(result) == rounded


# --- market prices -------------------------------------------------------------------------------


async def test_market_value_and_unrealized_pnl_need_a_market_price(
    authenticator_conn: asyncpg.Connection,
) -> None:
    trader = uuid.uuid4()
    buy = await submit(authenticator_conn, trader, "BUY", 3)
    await fill(authenticator_conn, buy, 3, Decimal("10.01"), Decimal(0))
    [row] = await positions(authenticator_conn, "authenticated", trader, None)
    assert (row["market_price"], row["market_value"], row["unrealized_pnl"]) == (None, None, None)
    async with as_role(authenticator_conn, "service_role", commit=True) as c:
        await c.execute(
            "INSERT INTO market_prices (symbol, price) VALUES ($1, 10.50)"
            " ON CONFLICT (symbol) DO UPDATE SET price = excluded.price",
            SYMBOL,
        )
    [row] = await positions(authenticator_conn, "authenticated", trader, None)
    assert row["market_price"] == Decimal("10.50")
    assert row["market_value"] == Decimal("31.50")
    assert row["unrealized_pnl"] == Decimal("1.47")


# --- who may read and write ----------------------------------------------------------------------


@pytest.fixture
async def two_traders(authenticator_conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    for trader in (alice, bob):
        order_id = await submit(authenticator_conn, trader, "BUY", 5)
        await fill(authenticator_conn, order_id, 5, Decimal("10.00"), Decimal(0))
    return alice, bob


async def test_a_trader_reads_only_its_own_positions_whatever_trader_it_names(
    authenticator_conn: asyncpg.Connection, two_traders: tuple[uuid.UUID, uuid.UUID]
) -> None:
    alice, bob = two_traders
    for method in ("FIFO", "AVERAGE_COST"):
        own = await positions(authenticator_conn, "authenticated", alice, None, method)
        assert [r["trader_id"] for r in own] == [alice]
        assert await positions(authenticator_conn, "authenticated", alice, bob, method) == []
    async with as_role(authenticator_conn, "authenticated", alice) as c:
        assert {r[0] for r in await c.fetch("SELECT trader_id FROM positions")} == {alice}


async def test_anon_reads_no_positions(
    authenticator_conn: asyncpg.Connection, two_traders: tuple[uuid.UUID, uuid.UUID]
) -> None:
    alice, _ = two_traders
    assert await positions(authenticator_conn, "anon", None, None) == []
    assert await positions(authenticator_conn, "anon", None, alice) == []
    async with as_role(authenticator_conn, "anon") as c:
        assert await c.fetch("SELECT * FROM positions") == []


@pytest.mark.parametrize("role", ["service_role", "compliance_auditor"])
async def test_roles_that_see_every_trader_must_name_one(
    authenticator_conn: asyncpg.Connection, two_traders: tuple[uuid.UUID, uuid.UUID], role: str
) -> None:
    _alice, bob = two_traders
    assert [r["trader_id"] for r in await positions(authenticator_conn, role, None, bob)] == [bob]
    with pytest.raises(asyncpg.PostgresError) as refused:
        await positions(authenticator_conn, role, None, None)
    assert refused.value.sqlstate == "OA422"
    assert refused.value.column_name == "traderId"


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role", "compliance_auditor"])
@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO positions (trader_id, method, symbol, quantity, updated_at)"
        " VALUES ($1, 'FIFO', 'ACME', 1000, now())",
        "UPDATE positions SET realized_pnl = 1000000 WHERE trader_id = $1",
        "DELETE FROM positions WHERE trader_id = $1",
        "INSERT INTO position_lots (trader_id, symbol, lot, quantity, price)"
        " VALUES ($1, 'ACME', 99, 1, 1)",
        # The trigger's own function, on a fill made up or replayed.
        "SELECT public.positions_apply_fill(f) FROM fills f WHERE f.trader_id = $1",
    ],
)
async def test_no_api_role_writes_a_position(
    authenticator_conn: asyncpg.Connection,
    two_traders: tuple[uuid.UUID, uuid.UUID],
    role: str,
    statement: str,
) -> None:
    alice, _ = two_traders
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with as_role(authenticator_conn, role, alice) as c:
            await c.execute(statement, alice)


@pytest.mark.parametrize("role", ["anon", "authenticated", "compliance_auditor"])
async def test_only_the_engine_reports_market_prices(
    authenticator_conn: asyncpg.Connection, role: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with as_role(authenticator_conn, role, uuid.uuid4()) as c:
            await c.execute("INSERT INTO market_prices (symbol, price) VALUES ('ACME', 1)")
    async with as_role(authenticator_conn, "service_role") as c:
        await c.execute("INSERT INTO market_prices (symbol, price) VALUES ('ACME', 1)")


async def test_racing_fills_of_two_orders_in_one_symbol_are_both_applied(
    database: Db, authenticator_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    first = await submit(authenticator_conn, trader, "BUY", 10)
    second = await submit(authenticator_conn, trader, "SELL", 4)
    other = await asyncpg.connect(libpq_url(database.api_url), statement_cache_size=0)
    try:
        async with as_role(authenticator_conn, "service_role", commit=True) as c:
            await c.execute(
                "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
                " VALUES ($1, 10, 10.00, 'Test')",
                first,
            )
            # The second fill waits for the first's position rows, then applies on top.
            racing = other.execute(
                "BEGIN; SELECT set_config('role', 'service_role', true);"
                f" INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
                f" VALUES ('{second}', 4, 11.00, 'Test'); COMMIT;"
            )
            task = asyncio.ensure_future(racing)
            await asyncio.sleep(0.2)
            assert not task.done()
        await task
    finally:
        await other.close()
    [row] = await positions(authenticator_conn, "authenticated", trader, None)
    assert (row["quantity"], row["realized_pnl"]) == (6, Decimal("4.00"))


async def test_the_downgrade_gives_back_exactly_what_011_made(cluster: pg.Cluster) -> None:
    trip = await round_trip(cluster, "011", "012")
    assert trip.after != trip.before
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)


async def test_the_upgrade_replays_the_fills_recorded_before_it(cluster: pg.Cluster) -> None:
    database = Db(cluster, await pg.create_empty_database(cluster))
    try:
        assert alembic(database, "upgrade", "011").returncode == 0
        conn = await asyncpg.connect(libpq_url(database.api_url))
        trader = uuid.uuid4()
        try:
            buy = await submit(conn, trader, "BUY", 10)
            await fill(conn, buy, 6, Decimal("10.00"), Decimal("0.50"))
            await fill(conn, buy, 4, Decimal("12.00"), Decimal("0.50"))
            sell = await submit(conn, trader, "SELL", 15)
            await fill(conn, sell, 15, Decimal("11.00"), Decimal("0.25"))
            up = alembic(database, "upgrade", "head")
            assert up.returncode == 0, up.stderr
            [row] = await positions(conn, "authenticated", trader, None, "FIFO")
        finally:
            await conn.close()
        # 6 x (11 - 10) + 4 x (11 - 12) = 2, and 5 short at 11.
        assert (row["quantity"], row["realized_pnl"], row["cost_basis"]) == (-5, 2, 55)
        assert row["commissions"] == Decimal("1.25")
    finally:
        await pg.drop_test_database(cluster, database.name)
