"""The execution engine against a real database and the paper venue.

Orders are placed as a trader (``authenticated``), the engine works as
``service_role`` through the API's login role, and the audit trail is read back
as the owner. The venue runs on a temporary SQLite file with a fake clock of
one-second ticks, so fills happen exactly when a test moves the clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.db.session import Database, create_engine
from app.db.urls import async_url
from app.engine.paper import PaperVenue, execution_id_for
from app.engine.risk import (
    RISK_MAX_NOTIONAL,
    RISK_MAX_QUANTITY,
    RISK_SYMBOL_NOT_ALLOWED,
    RiskLimits,
    check_order,
)
from app.engine.run import run_worker
from app.engine.venue import ExecutionReport, Venue, VenueOrder
from app.engine.worker import Worker, lease_key
from app.settings import Settings
from tests.sql import as_role

TRADER = uuid.UUID("7b0c1f9e-0000-4000-8000-000000000001")

# About a year before the real time, on a multiple of 1,000 one-second ticks: a multiple of
# every price series' period below, so each series starts at its row for tick 0. Not 1970:
# the fills the venue reports carry its clock's time, and the database refuses a fill
# timestamp beyond its horizon (migration 009, ten years).
START = datetime.fromtimestamp((int(time.time()) - 365 * 86400) // 1000 * 1000, UTC)

# ACME: always 100.00. DIP: 100.00 for ticks 0-2, then 94.00 up to tick 9 (period 10).
# RISE: 10.00 for ticks 0-4, then 200.00 (period 10).
PRICES = """symbol,tick,price
ACME,0,100.00
DIP,0,100.00
DIP,3,94.00
DIP,9,94.00
RISE,0,10.00
RISE,5,200.00
RISE,9,200.00
HALT,0,50.00
"""

SETTINGS = Settings(
    engine_poll_seconds=0.02,
    engine_max_retries=3,
    engine_retry_base_seconds=0.0,
)

LogRow = tuple[str, str | None, str | None, str | None, int | None]
"""(action, status, reason, error_code, retry_attempt) of one execution_logs row."""


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def tick(self, ticks: int = 1) -> None:
        self.now += timedelta(seconds=ticks)


# --- risk checks (pure) ---------------------------------------------------------------------

LIMITS = RiskLimits.of(max_quantity=1000, max_notional=Decimal("50000"), symbols=())


@pytest.mark.parametrize(
    ("symbol", "quantity", "order_type", "price", "reference", "limits", "expected"),
    [
        pytest.param("ACME", 10, "LIMIT", Decimal("100"), None, LIMITS, None, id="within"),
        pytest.param("ACME", 1000, "MARKET", None, None, LIMITS, None, id="quantity-at-limit"),
        pytest.param(
            "ACME", 1001, "MARKET", None, None, LIMITS, RISK_MAX_QUANTITY, id="quantity-over"
        ),
        pytest.param(
            "ACME", 500, "LIMIT", Decimal("100"), None, LIMITS, None, id="notional-at-limit"
        ),
        pytest.param(
            "ACME", 500, "LIMIT", Decimal("100.01"), None, LIMITS, RISK_MAX_NOTIONAL, id="limit"
        ),
        pytest.param(
            "ACME", 600, "STOP", Decimal("90"), None, LIMITS, RISK_MAX_NOTIONAL, id="stop-trigger"
        ),
        pytest.param(
            "ACME",
            600,
            "MARKET",
            None,
            Decimal("90"),
            LIMITS,
            RISK_MAX_NOTIONAL,
            id="market-reference",
        ),
        pytest.param(
            "ACME", 600, "MARKET", None, None, LIMITS, None, id="market-without-reference-skips"
        ),
        pytest.param(
            "ACME",
            600,
            "LIMIT",
            Decimal("10"),
            Decimal("1000"),
            LIMITS,
            None,
            id="limit-ignores-reference",
        ),
        pytest.param(
            "DIP",
            10,
            "MARKET",
            None,
            None,
            RiskLimits.of(max_quantity=1000, max_notional=Decimal(1), symbols=["acme"]),
            RISK_SYMBOL_NOT_ALLOWED,
            id="symbol-not-allowed",
        ),
        pytest.param(
            "ACME",
            10,
            "LIMIT",
            Decimal("1"),
            None,
            RiskLimits.of(max_quantity=1000, max_notional=Decimal(100), symbols=["acme"]),
            None,
            id="symbol-allowed-any-case",
        ),
        pytest.param(
            "DIP",
            5000,
            "LIMIT",
            Decimal("1000"),
            None,
            RiskLimits.of(max_quantity=1000, max_notional=Decimal(1), symbols=["ACME"]),
            RISK_SYMBOL_NOT_ALLOWED,
            id="first-failure-wins",
        ),
    ],
)
def test_the_risk_check_rejects_exactly_the_orders_over_a_limit(
    symbol: str,
    quantity: int,
    order_type: str,
    price: Decimal | None,
    reference: Decimal | None,
    limits: RiskLimits,
    expected: str | None,
) -> None:
    rejection = check_order(
        symbol=symbol,
        quantity=quantity,
        order_type=order_type,
        price=price,
        limits=limits,
        reference_price=reference,
    )
    assert (rejection and rejection.code) == expected
    if rejection is not None:
        assert rejection.reason
        assert len(rejection.code) <= 50  # orders.error_code is varchar(50)


async def test_risk_limits_are_the_databases_order_limits(owner_conn: asyncpg.Connection) -> None:
    await owner_conn.execute("UPDATE order_limits SET symbols = '{ACME,DIP}', max_notional = NULL")
    limits = RiskLimits.from_row(
        dict(
            await owner_conn.fetchrow(
                "SELECT max_quantity, max_notional, symbols FROM order_limits"
            )
        )  # type: ignore[arg-type]
    )
    assert limits == RiskLimits(
        max_quantity=100_000, max_notional=None, symbols=frozenset({"ACME", "DIP"})
    )


def test_the_lease_key_matches_its_sql_spelling() -> None:
    order_id = uuid.UUID("ffffffff-0000-4000-8000-000000000000")
    assert lease_key(order_id) == 0x7FFFFFFF
    assert lease_key(uuid.UUID("0000abcd-ffff-4fff-bfff-ffffffffffff")) == 0xABCD


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def prices_csv(tmp_path: Path) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(PRICES, encoding="utf-8")
    return path


MakeVenue = Callable[..., PaperVenue]
MakeWorker = Callable[..., Worker]


@pytest.fixture
async def make_venue(
    tmp_path: Path, clock: FakeClock, prices_csv: Path
) -> AsyncIterator[MakeVenue]:
    """Venues on one shared file, as the processes of one deployment would have."""
    venues: list[PaperVenue] = []

    def make(**overrides: Any) -> PaperVenue:
        params: dict[str, Any] = {
            "path": tmp_path / "venue.sqlite3",
            "seed": 1,
            "liquidity": 100,
            "tick_seconds": 1.0,
            "commission_per_share": Decimal("0.005"),
            "commission_minimum": Decimal("1.00"),
            "prices_csv": prices_csv,
            "clock": clock,
        }
        params.update(overrides)
        venue = PaperVenue(**params)
        venues.append(venue)
        return venue

    yield make
    for venue in venues:
        await venue.close()


@pytest.fixture
async def make_worker(database: Any, make_venue: MakeVenue) -> AsyncIterator[MakeWorker]:
    """Workers with their own connection pool each, like separate processes."""
    made: list[tuple[Worker, Database]] = []

    def make(
        *,
        venue: Venue | None = None,
        worker_id: str = "w1",
        batch_size: int = 100,
        max_in_flight: int = 1000,
        **settings: Any,
    ) -> Worker:
        url = async_url(database.api_url.render_as_string(hide_password=False))
        db = Database(create_engine(url, pool_size=2))
        worker = Worker(
            db,
            venue or make_venue(),
            dataclasses.replace(SETTINGS, **settings),
            worker_id,
            batch_size=batch_size,
            max_in_flight=max_in_flight,
            cancel_sweep_seconds=0,
        )
        made.append((worker, db))
        return worker

    yield make
    for worker, db in made:
        await worker.close()
        await db.dispose()


async def place(
    conn: asyncpg.Connection,
    symbol: str = "ACME",
    quantity: int = 50,
    order_type: str = "MARKET",
    price: str | None = None,
    *,
    side: str = "BUY",
    expires_in: float | None = None,
) -> uuid.UUID:
    """Place an order as the trader would (through RLS as ``authenticated``)."""
    async with as_role(conn, "authenticated", TRADER, commit=True):
        order_id: uuid.UUID = await conn.fetchval(
            """
            INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price, expires_at)
            VALUES ($1, $2, $3, $4, $5::order_type_enum, $6::numeric,
                    now() + make_interval(secs => $7::double precision))
            RETURNING id
            """,
            TRADER,
            symbol,
            side,
            quantity,
            order_type,
            price,
            expires_in,
        )
    return order_id


async def cancel_as_trader(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    async with as_role(conn, "authenticated", TRADER, commit=True):
        await conn.execute(
            "UPDATE orders SET status = 'CANCELLED', status_reason = 'cancelled by trader'"
            " WHERE id = $1",
            order_id,
        )


async def order_of(conn: asyncpg.Connection, order_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    assert row is not None
    return row


async def logs_of(conn: asyncpg.Connection, order_id: uuid.UUID) -> list[LogRow]:
    rows = await conn.fetch(
        "SELECT action::text, status::text, reason, error_code, retry_attempt FROM execution_logs"
        ' WHERE order_id = $1 ORDER BY "timestamp", id',
        order_id,
    )
    return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]


async def fills_of(conn: asyncpg.Connection, order_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        'SELECT * FROM fills WHERE order_id = $1 ORDER BY "timestamp", quantity_filled', order_id
    )
    return rows


def actions(logs: Sequence[LogRow]) -> list[tuple[str, str | None]]:
    return [(action, status) for action, status, *_ in logs]


SUBMITTED: LogRow = ("SUBMITTED", "PENDING", None, None, None)
APPROVED: LogRow = ("APPROVED", "PENDING", None, None, None)


def sent(retry_attempt: int = 0) -> LogRow:
    return ("EXECUTED", "PENDING", "sent to venue", None, retry_attempt)


def filled(status: str) -> LogRow:
    return ("FILLED", status, None, None, None)


async def drive(
    workers: Sequence[Worker],
    until: Callable[[], Awaitable[bool]],
    *,
    clock: FakeClock | None = None,
    passes: int = 30,
) -> None:
    for _ in range(passes):
        for worker in workers:
            await worker.run_once()
        if await until():
            return
        if clock is not None:
            clock.tick()
    raise AssertionError(f"condition not reached in {passes} passes")


# --- the lifecycle ----------------------------------------------------------------------------


async def test_a_market_order_is_approved_sent_and_filled_with_one_audit_row_per_step(
    make_worker: MakeWorker, authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    worker = make_worker()
    order_id = await place(authenticator_conn, "ACME", 50)

    assert await worker.run_once() == 3  # approved, routed, filled

    order = await order_of(owner_conn, order_id)
    assert order["status"] == "FILLED"
    assert order["filled_quantity"] == 50
    assert order["average_fill_price"] == Decimal("100")
    assert order["approved_at"] is not None
    assert order["routed_at"] is not None
    assert order["recovered_at"] is None
    assert await logs_of(owner_conn, order_id) == [SUBMITTED, APPROVED, sent(), filled("FILLED")]
    [fill] = await fills_of(owner_conn, order_id)
    assert fill["id"] == execution_id_for(order_id, 1)
    assert (fill["quantity_filled"], fill["price_at_fill"]) == (50, Decimal("100.00"))
    assert (fill["venue"], fill["commission"], fill["trader_id"]) == (
        "Mock",
        Decimal("1.00"),
        TRADER,
    )
    assert worker.owned == frozenset()
    assert await worker.run_once() == 0


@pytest.mark.parametrize(
    ("symbol", "quantity", "order_type", "price", "limits", "code"),
    [
        pytest.param(
            "ACME",
            10_001,
            "MARKET",
            None,
            {"max_quantity": 10_000},
            RISK_MAX_QUANTITY,
            id="quantity",
        ),
        pytest.param(
            "ACME",
            9_000,
            "LIMIT",
            "200.00",
            {"max_notional": 1_000_000},
            RISK_MAX_NOTIONAL,
            id="limit-notional",
        ),
        # ACME trades at 100.00: 10_000 shares are worth 1_000_000 and 10_001 would pass
        # the quantity limit only with a higher one.
        pytest.param(
            "ACME",
            10_001,
            "MARKET",
            None,
            {"max_quantity": 20_000, "max_notional": 1_000_000},
            RISK_MAX_NOTIONAL,
            id="market-notional-from-the-venue-price",
        ),
        pytest.param(
            "DIP",
            1,
            "MARKET",
            None,
            {"symbols": ["ACME"]},
            RISK_SYMBOL_NOT_ALLOWED,
            id="symbol",
        ),
    ],
)
async def test_an_order_over_the_risk_limits_is_rejected_and_never_reaches_the_venue(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
    symbol: str,
    quantity: int,
    order_type: str,
    price: str | None,
    limits: dict[str, Any],
    code: str,
) -> None:
    venue = make_venue()
    worker = make_worker(venue=venue)
    order_id = await place(authenticator_conn, symbol, quantity, order_type, price)
    # Tightened after the order was taken (submitOrder and the database check the limits
    # of the moment): the engine applies the limits of its own moment again.
    for column, value in limits.items():
        await owner_conn.execute(f"UPDATE order_limits SET {column} = $1", value)

    assert await worker.run_once() == 1

    order = await order_of(owner_conn, order_id)
    assert (order["status"], order["error_code"], order["approved_at"]) == ("REJECTED", code, None)
    logs = await logs_of(owner_conn, order_id)
    assert logs == [SUBMITTED, ("REJECTED", "REJECTED", order["status_reason"], code, 0)]
    assert "exceeds" in order["status_reason"] or "not on the list" in order["status_reason"]
    assert await venue.poll([order_id]) == []


async def test_a_limit_order_rests_until_the_price_crosses_then_fills(
    make_worker: MakeWorker,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker()
    order_id = await place(authenticator_conn, "DIP", 40, "LIMIT", "95.00")

    for _ in range(3):  # ticks 0-2 trade at 100.00, above the limit
        await worker.run_once()
        assert (await order_of(owner_conn, order_id))["status"] == "PENDING"
        clock.tick()
    assert await logs_of(owner_conn, order_id) == [SUBMITTED, APPROVED, sent()]
    assert await fills_of(owner_conn, order_id) == []

    assert await worker.run_once() == 1  # tick 3 trades at 94.00
    order = await order_of(owner_conn, order_id)
    assert (order["status"], order["average_fill_price"]) == ("FILLED", Decimal("94"))
    assert await logs_of(owner_conn, order_id) == [SUBMITTED, APPROVED, sent(), filled("FILLED")]


async def test_a_large_order_fills_in_parts_across_ticks(
    make_worker: MakeWorker,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker()  # the venue fills at most 100 shares per tick
    order_id = await place(authenticator_conn, "ACME", 250)

    await worker.run_once()
    assert (await order_of(owner_conn, order_id))["filled_quantity"] == 100
    clock.tick()
    await worker.run_once()
    assert (await order_of(owner_conn, order_id))["status"] == "PARTIAL"
    assert (await order_of(owner_conn, order_id))["filled_quantity"] == 200
    clock.tick()
    await worker.run_once()

    assert (await order_of(owner_conn, order_id))["status"] == "FILLED"
    fills = await fills_of(owner_conn, order_id)
    assert [f["id"] for f in fills] == [execution_id_for(order_id, seq) for seq in (1, 2, 3)]
    assert [f["quantity_filled"] for f in fills] == [100, 100, 50]
    assert await logs_of(owner_conn, order_id) == [
        SUBMITTED,
        APPROVED,
        sent(),
        filled("PARTIAL"),
        filled("PARTIAL"),
        filled("FILLED"),
    ]


async def test_an_order_past_its_expiry_expires_before_approval(
    make_worker: MakeWorker, authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    worker = make_worker()
    order_id = await place(authenticator_conn, "ACME", 10, expires_in=0.05)
    await asyncio.sleep(0.1)

    assert await worker.run_once() == 1

    order = await order_of(owner_conn, order_id)
    assert (order["status"], order["status_reason"], order["approved_at"]) == (
        "EXPIRED",
        "expired",
        None,
    )
    assert await logs_of(owner_conn, order_id) == [
        SUBMITTED,
        ("EXPIRED", "EXPIRED", "expired", None, None),
    ]


async def test_an_order_expiring_at_the_venue_is_cancelled_there_expires_and_keeps_its_fills(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()
    worker = make_worker(venue=venue)
    resting = await place(authenticator_conn, "DIP", 10, "LIMIT", "50.00", expires_in=0.6)
    partial = await place(authenticator_conn, "ACME", 250, expires_in=0.6)
    await worker.run_once()
    assert (await order_of(owner_conn, resting))["routed_at"] is not None
    assert (await order_of(owner_conn, partial))["status"] == "PARTIAL"
    await asyncio.sleep(0.7)

    assert await worker.run_once() == 2

    for order_id in (resting, partial):
        order = await order_of(owner_conn, order_id)
        assert (order["status"], order["status_reason"]) == ("EXPIRED", "expired")
        logs = await logs_of(owner_conn, order_id)
        assert logs[-1] == ("EXPIRED", "EXPIRED", "expired", None, None)
        assert [action for action, _ in actions(logs)].count("EXECUTED") == 1
    assert (await order_of(owner_conn, partial))["filled_quantity"] == 100
    reports = await venue.poll([resting, partial])
    assert [(r.done, r.rejected) for r in reports] == [(True, None), (True, None)]
    assert worker.owned == frozenset()


async def test_transient_venue_failures_are_retried_with_attempt_and_code_recorded(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker(venue=make_venue(fail_transient_times={"ACME": 2}))
    order_id = await place(authenticator_conn, "ACME", 10)

    assert await worker.run_once() == 2  # approved, first attempt failed
    assert (await order_of(owner_conn, order_id))["retry_attempt"] == 1
    await worker.run_once()
    await worker.run_once()

    order = await order_of(owner_conn, order_id)
    assert (order["status"], order["retry_attempt"]) == ("FILLED", 2)
    assert await logs_of(owner_conn, order_id) == [
        SUBMITTED,
        APPROVED,
        ("EXECUTED", "PENDING", "forced failure, attempt 1", "VENUE_BUSY", 1),
        ("EXECUTED", "PENDING", "forced failure, attempt 2", "VENUE_BUSY", 2),
        sent(retry_attempt=2),
        filled("FILLED"),
    ]


async def test_a_failed_attempt_is_not_retried_before_its_backoff_has_passed(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker(
        venue=make_venue(fail_transient_times={"ACME": 1}), engine_retry_base_seconds=60.0
    )
    order_id = await place(authenticator_conn, "ACME", 10)
    await worker.run_once()

    assert await worker.run_once() == 0
    order = await order_of(owner_conn, order_id)
    assert (order["status"], order["retry_attempt"], order["routed_at"]) == ("PENDING", 1, None)


async def test_an_order_whose_retries_run_out_is_rejected_with_the_venues_code(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue(fail_transient_times={"ACME": 10})
    worker = make_worker(venue=venue, engine_max_retries=2)
    order_id = await place(authenticator_conn, "ACME", 10)

    for _ in range(3):
        await worker.run_once()

    order = await order_of(owner_conn, order_id)
    assert (order["status"], order["error_code"], order["retry_attempt"]) == (
        "REJECTED",
        "VENUE_BUSY",
        3,
    )
    logs = await logs_of(owner_conn, order_id)
    assert actions(logs) == [
        ("SUBMITTED", "PENDING"),
        ("APPROVED", "PENDING"),
        ("EXECUTED", "PENDING"),
        ("EXECUTED", "PENDING"),
        ("REJECTED", "REJECTED"),
    ]
    assert logs[-1] == ("REJECTED", "REJECTED", "forced failure, attempt 3", "VENUE_BUSY", 3)
    # Cancelled at the venue before giving up, so a late submit could never execute there.
    [report] = await venue.poll([order_id])
    assert (report.done, report.executions) == (True, ())
    assert worker.owned == frozenset()


@pytest.mark.parametrize(
    ("symbol", "code"),
    [
        pytest.param("HALT", "SYMBOL_HALTED", id="refused-symbol"),
        pytest.param("NOPE", "UNKNOWN_SYMBOL", id="unknown-symbol"),
    ],
)
async def test_a_permanent_venue_refusal_rejects_the_order_with_the_venues_code(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
    symbol: str,
    code: str,
) -> None:
    worker = make_worker(venue=make_venue(reject_symbols={"HALT": "SYMBOL_HALTED"}))
    order_id = await place(authenticator_conn, symbol, 10)

    assert await worker.run_once() == 2  # approved, rejected

    order = await order_of(owner_conn, order_id)
    assert (order["status"], order["error_code"], order["retry_attempt"]) == ("REJECTED", code, 0)
    logs = await logs_of(owner_conn, order_id)
    assert logs == [SUBMITTED, APPROVED, ("REJECTED", "REJECTED", order["status_reason"], code, 0)]
    assert worker.owned == frozenset()


async def test_an_order_the_trader_cancels_is_cancelled_at_the_venue(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()
    worker = make_worker(venue=venue)
    order_id = await place(authenticator_conn, "DIP", 10, "LIMIT", "95.00")
    await worker.run_once()
    await cancel_as_trader(authenticator_conn, order_id)

    assert await worker.run_once() == 1
    clock.tick(5)  # the price crosses, but the venue no longer works the order

    [report] = await venue.poll([order_id])
    assert (report.done, report.executions) == (True, ())
    assert worker.owned == frozenset()
    assert actions(await logs_of(owner_conn, order_id)) == [
        ("SUBMITTED", "PENDING"),
        ("APPROVED", "PENDING"),
        ("EXECUTED", "PENDING"),
        ("CANCELLED", "CANCELLED"),
    ]


async def test_executions_made_before_a_cancel_reached_the_venue_are_recorded(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()
    worker = make_worker(venue=venue)
    order_id = await place(authenticator_conn, "DIP", 10, "LIMIT", "95.00")
    await worker.run_once()  # approved and routed; the price (100.00) does not cross yet
    clock.tick(5)  # now it does: the venue executes before it hears of the cancel
    await cancel_as_trader(authenticator_conn, order_id)

    await worker.run_once()

    [report] = await venue.poll([order_id])
    [fill] = await fills_of(owner_conn, order_id)
    assert fill["id"] == report.executions[0].execution_id
    row = await owner_conn.fetchrow(
        "SELECT status, filled_quantity FROM orders WHERE id = $1", order_id
    )
    # Cancelled too late: the whole order had executed, so it ends FILLED, every share booked.
    assert (row["status"], row["filled_quantity"]) == ("FILLED", 10)
    assert actions(await logs_of(owner_conn, order_id))[-2:] == [
        ("CANCELLED", "CANCELLED"),
        ("FILLED", "FILLED"),
    ]


# --- several workers, recovery ------------------------------------------------------------------


async def test_two_workers_on_one_queue_process_each_order_exactly_once(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    workers = [
        make_worker(venue=make_venue(), worker_id=name, batch_size=4) for name in ("w1", "w2")
    ]
    orders = {
        await place(authenticator_conn, "ACME", quantity): quantity
        for quantity in [30, 150, 250, 90] * 6
    }
    work = dict.fromkeys(range(len(workers)), 0)
    done = asyncio.Event()

    async def keep_working(index: int) -> None:
        while not done.is_set():
            work[index] += await workers[index].run_once()
            await asyncio.sleep(0)

    async def market() -> None:
        while not done.is_set():
            await asyncio.sleep(0.05)
            clock.tick()
            finished = await owner_conn.fetchval(
                "SELECT count(*) FROM orders WHERE status = 'FILLED'"
            )
            if finished == len(orders):
                done.set()

    await asyncio.wait_for(asyncio.gather(market(), *map(keep_working, work)), timeout=20)

    assert all(count > 0 for count in work.values()), work
    for order_id, quantity in orders.items():
        logs = await logs_of(owner_conn, order_id)
        kinds = [action for action, _ in actions(logs)]
        assert kinds.count("APPROVED") == 1
        assert [row for row in logs if row[0] == "EXECUTED"] == [sent()]
        assert "RECOVERED" not in kinds  # both workers stayed alive: nothing was abandoned
        fills = await fills_of(owner_conn, order_id)
        assert sum(f["quantity_filled"] for f in fills) == quantity
        assert kinds.count("FILLED") == len(fills)
    assert all(worker.owned == frozenset() for worker in workers)


async def test_a_live_workers_orders_are_left_alone_and_taken_over_when_it_stops(
    make_worker: MakeWorker,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    first, second = make_worker(worker_id="w1"), make_worker(worker_id="w2")
    order_id = await place(authenticator_conn, "DIP", 40, "LIMIT", "95.00")
    await first.run_once()
    assert first.owned == {order_id}

    assert await second.run_once() == 0  # its owner is alive
    await first.close()  # the owner goes away with the order resting at the venue
    assert await second.run_once() == 1

    assert second.owned == {order_id}
    order = await order_of(owner_conn, order_id)
    assert order["recovered_at"] is not None
    clock.tick(3)
    assert await second.run_once() == 1
    assert (await order_of(owner_conn, order_id))["status"] == "FILLED"
    assert actions(await logs_of(owner_conn, order_id)) == [
        ("SUBMITTED", "PENDING"),
        ("APPROVED", "PENDING"),
        ("EXECUTED", "PENDING"),
        ("RECOVERED", "PENDING"),
        ("FILLED", "FILLED"),
    ]
    recovered = (await logs_of(owner_conn, order_id))[3]
    assert "w2" in (recovered[2] or "")


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the worker handles it."""


class CrashAfterSubmit:
    """A venue whose caller dies right after the venue accepted the order."""

    def __init__(self, venue: PaperVenue) -> None:
        self.venue = venue
        self.name = venue.name

    async def submit(self, order: VenueOrder) -> None:
        await self.venue.submit(order)
        raise Crash

    async def cancel(self, order_id: uuid.UUID) -> bool:
        return await self.venue.cancel(order_id)

    async def poll(self, order_ids: Sequence[uuid.UUID]) -> list[Any]:
        return await self.venue.poll(order_ids)

    async def close(self) -> None:
        await self.venue.close()


async def test_an_order_accepted_by_the_venue_but_not_marked_routed_is_recovered_once(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    crashing = make_worker(venue=CrashAfterSubmit(make_venue()), worker_id="w1")
    order_id = await place(authenticator_conn, "ACME", 250)
    with pytest.raises(Crash):
        await crashing.run_once()
    await crashing.close()  # its connections die with the process
    order = await order_of(owner_conn, order_id)
    assert (order["approved_at"] is not None, order["routed_at"]) == (True, None)

    successor = make_worker(worker_id="w2")
    await drive([successor], lambda: _status_is(owner_conn, order_id, "FILLED"), clock=clock)

    logs = await logs_of(owner_conn, order_id)
    assert actions(logs)[:4] == [
        ("SUBMITTED", "PENDING"),
        ("APPROVED", "PENDING"),
        ("RECOVERED", "PENDING"),
        ("EXECUTED", "PENDING"),
    ]
    assert [row for row in logs if row[0] == "EXECUTED"] == [sent()]
    fills = await fills_of(owner_conn, order_id)
    assert [f["id"] for f in fills] == [execution_id_for(order_id, seq) for seq in (1, 2, 3)]


async def test_a_worker_that_loses_its_lease_connection_gives_its_orders_up_to_recovery(
    make_worker: MakeWorker,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker(worker_id="w-lease")
    order_id = await place(authenticator_conn, "DIP", 40, "LIMIT", "95.00")
    await worker.run_once()
    killed = await owner_conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'order-engine w-lease'"
    )
    assert killed == 1

    await worker.run_once()  # notices, forgets the order, and adopts it like any other

    assert worker.owned == {order_id}
    clock.tick(3)
    await worker.run_once()
    assert actions(await logs_of(owner_conn, order_id))[3:] == [
        ("RECOVERED", "PENDING"),
        ("FILLED", "FILLED"),
    ]


async def test_an_order_cancelled_while_no_worker_owned_it_is_cancelled_at_the_venue(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()
    first = make_worker(venue=venue, worker_id="w1")
    order_id = await place(authenticator_conn, "DIP", 40, "LIMIT", "95.00")
    await first.run_once()
    await first.close()
    await cancel_as_trader(authenticator_conn, order_id)

    second = make_worker(worker_id="w2")
    assert await second.run_once() == 1

    [report] = await venue.poll([order_id])
    assert (report.done, report.executions) == (True, ())


async def test_run_worker_works_the_queue_until_stopped(
    database: Any,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    url = async_url(database.api_url.render_as_string(hide_password=False))
    db = Database(create_engine(url, pool_size=2))
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(SETTINGS, stop, database=db, venue=make_venue()))
    try:
        order_id = await place(authenticator_conn, "ACME", 20)
        await _wait_for_status(owner_conn, order_id, "FILLED", within=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        await db.dispose()
    assert actions(await logs_of(owner_conn, order_id))[-1] == ("FILLED", "FILLED")


async def _status_is(conn: asyncpg.Connection, order_id: uuid.UUID, status: str) -> bool:
    return bool(
        await conn.fetchval("SELECT status::text = $2 FROM orders WHERE id = $1", order_id, status)
    )


async def _wait_for_status(
    conn: asyncpg.Connection, order_id: uuid.UUID, status: str, *, within: float
) -> None:
    async with asyncio.timeout(within):
        while not await _status_is(conn, order_id, status):  # noqa: ASYNC110 (polls the database)
            await asyncio.sleep(0.02)


class Tampered:
    """A venue that breaks on chosen orders: submits of ``broken_symbols`` raise a plain
    error, and executions of ``bad_fills`` are reported with a price the database refuses."""

    def __init__(
        self,
        venue: PaperVenue,
        *,
        broken_symbols: frozenset[str] = frozenset(),
        bad_fills: frozenset[uuid.UUID] = frozenset(),
    ) -> None:
        self.venue = venue
        self.name = venue.name
        self.broken_symbols = broken_symbols
        self.bad_fills = bad_fills

    async def submit(self, order: VenueOrder) -> None:
        if order.symbol in self.broken_symbols:
            raise RuntimeError("connection reset by peer")
        await self.venue.submit(order)

    async def cancel(self, order_id: uuid.UUID) -> bool:
        return await self.venue.cancel(order_id)

    async def poll(self, order_ids: Sequence[uuid.UUID]) -> list[ExecutionReport]:
        return [
            dataclasses.replace(
                report,
                executions=tuple(
                    dataclasses.replace(e, price=Decimal(0)) for e in report.executions
                ),
            )
            if report.order_id in self.bad_fills
            else report
            for report in await self.venue.poll(order_ids)
        ]

    async def close(self) -> None:
        await self.venue.close()


async def test_a_venue_call_that_blows_up_is_retried_and_other_orders_carry_on(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = Tampered(make_venue(), broken_symbols=frozenset({"DIP"}))
    worker = make_worker(venue=venue, engine_max_retries=1)
    broken = await place(authenticator_conn, "DIP", 10)
    fine = await place(authenticator_conn, "ACME", 10)

    await worker.run_once()
    assert (await order_of(owner_conn, fine))["status"] == "FILLED"
    await worker.run_once()

    order = await order_of(owner_conn, broken)
    assert (order["status"], order["error_code"], order["retry_attempt"]) == (
        "REJECTED",
        "VENUE_UNAVAILABLE",
        2,
    )
    assert [row[3:] for row in await logs_of(owner_conn, broken) if row[3]] == [
        ("VENUE_UNAVAILABLE", 1),
        ("VENUE_UNAVAILABLE", 2),
    ]


async def test_a_report_the_database_refuses_rolls_back_only_that_orders_transaction(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    bad = await place(authenticator_conn, "ACME", 150)
    good = await place(authenticator_conn, "ACME", 150)
    worker = make_worker(venue=Tampered(make_venue(), bad_fills=frozenset({bad})))

    await worker.run_once()

    assert (await order_of(owner_conn, good))["filled_quantity"] == 100
    assert (await order_of(owner_conn, bad))["filled_quantity"] == 0
    assert await fills_of(owner_conn, bad) == []
    assert worker.owned == {bad, good}  # still in flight, tried again next pass


async def test_a_worker_at_its_in_flight_limit_leaves_new_orders_to_others(
    make_worker: MakeWorker,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    full = make_worker(worker_id="w1", max_in_flight=1)
    other = make_worker(worker_id="w2")
    first = await place(authenticator_conn, "DIP", 10, "LIMIT", "95.00")
    second = await place(authenticator_conn, "DIP", 10, "LIMIT", "95.00")

    await full.run_once()
    assert full.owned == {first}
    assert (await order_of(owner_conn, second))["approved_at"] is None

    await other.run_once()
    assert other.owned == {second}


# --- how takeovers are logged ----------------------------------------------------------------
# Both kinds write the RECOVERED row; the log level tells an operator whether something went
# wrong while the engine ran (a peer died) or a worker simply started after another.


def _takeover_lines(caplog: pytest.LogCaptureFixture, order_id: uuid.UUID) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "app.engine.adoption"
        and str(order_id) in r.getMessage()
        and ("resumed" in r.getMessage() or "recovered" in r.getMessage())
    ]


async def test_a_starting_worker_resumes_quietly_and_a_running_one_warns(
    make_worker: MakeWorker,
    owner_conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.engine.adoption")
    # ACME is always 100.00: a limit buy at 50.00 stays at the venue.
    left = await place(owner_conn, order_type="LIMIT", price="50.00")
    first = make_worker(worker_id="first")
    await first.run_once()
    assert left in first.owned
    await first.close()  # stopped with the order in flight

    successor = make_worker(worker_id="successor")
    await successor.run_once()
    assert left in successor.owned
    assert _takeover_lines(caplog, left) == [
        (logging.INFO, f"order {left}: resumed (left in flight before this worker started)")
    ]

    # A peer that takes an order while the successor runs, then dies.
    peer_order = await place(owner_conn, order_type="LIMIT", price="50.00")
    peer = make_worker(worker_id="peer")
    await peer.run_once()
    assert peer_order in peer.owned
    await peer.close()
    await successor.run_once()
    assert peer_order in successor.owned
    assert _takeover_lines(caplog, peer_order) == [
        (logging.WARNING, f"order {peer_order}: recovered from an interrupted worker")
    ]
    recovered = await owner_conn.fetchval(
        "SELECT count(*) FROM execution_logs WHERE action = 'RECOVERED' AND order_id = ANY($1)",
        [left, peer_order],
    )
    assert recovered == 2  # both takeovers are in the audit trail


async def _routed_elsewhere(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    """Approved and routed by someone else (as the dev seed does), with no lease held."""
    async with as_role(conn, "service_role", commit=True):
        await conn.execute("UPDATE orders SET approved_at = now() WHERE id = $1", order_id)
        await conn.execute("UPDATE orders SET routed_at = now() WHERE id = $1", order_id)


async def test_a_venue_without_a_record_warns_unless_the_order_predates_its_records(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    owner_conn: asyncpg.Connection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.engine.routing")
    before = await place(owner_conn, order_type="LIMIT", price="50.00")
    await _routed_elsewhere(owner_conn, before)
    await asyncio.sleep(0.05)
    venue = make_venue(path=tmp_path / "new-venue.sqlite3", clock=None)
    await asyncio.sleep(0.05)
    after = await place(owner_conn, order_type="LIMIT", price="50.00")
    await _routed_elsewhere(owner_conn, after)

    worker = make_worker(venue=venue)
    await worker.run_once()  # adopts both
    await worker.run_once()  # polls: the venue knows neither, both are re-sent
    lines = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if "venue Mock" in r.getMessage() and ("record" in r.getMessage())
    ]
    assert (
        logging.INFO,
        f"order {before}: routed before venue Mock kept records; sent the remaining 50 to it",
    ) in lines
    assert (
        logging.WARNING,
        f"order {after}: venue Mock had no record; re-sent 50 remaining",
    ) in lines
    # The venue's records start when its file was created, and stay so when reopened.
    again = make_venue(path=tmp_path / "new-venue.sqlite3", clock=None)
    assert again.records_since == venue.records_since


async def test_the_venues_latest_price_is_stored_for_the_traders_positions(
    make_worker: MakeWorker,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker()
    await place(authenticator_conn, "DIP", 40, "LIMIT", "95.00")

    async def market_price() -> Decimal | None:
        async with as_role(authenticator_conn, "authenticated", TRADER) as conn:
            price: Decimal | None = await conn.fetchval(
                "SELECT price FROM market_prices WHERE symbol = 'DIP'"
            )
        return price

    await worker.run_once()  # approved and sent: the first poll reports tick 0's price
    await worker.run_once()
    assert await market_price() == Decimal("100.00")
    for _ in range(3):
        clock.tick()
    await worker.run_once()  # tick 3 trades at 94.00, and the price is 94.00
    assert await market_price() == Decimal("94.00")
    async with as_role(authenticator_conn, "authenticated", TRADER) as conn:
        [position] = await conn.fetch("SELECT * FROM trader_positions(NULL, 'FIFO')")
    assert (position["quantity"], position["market_price"]) == (40, Decimal("94.00"))
    assert (position["market_value"], position["unrealized_pnl"]) == (Decimal("3760.00"), 0)
