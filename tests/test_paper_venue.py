"""The paper venue: prices, matching, persistence and injected failures.

Time is driven by a fake clock with one-second ticks starting at the Unix epoch, so
tick ``n`` is ``EPOCH + n seconds`` and CSV price rows line up with tick numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pickle
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4, uuid5

import pytest

from app.engine.paper import PaperVenue, execution_id_for
from app.engine.venue import (
    ExecutionReport,
    PermanentVenueError,
    TransientVenueError,
    Venue,
    VenueError,
    VenueOrder,
    VenueRejection,
)
from app.settings import Settings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self, seconds: float = 0.0) -> None:
        self.now = EPOCH + timedelta(seconds=seconds)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, ticks: float = 1) -> None:
        self.now += timedelta(seconds=ticks)

    def at(self, seconds: float) -> None:
        self.now = EPOCH + timedelta(seconds=seconds)


MakeVenue = Callable[..., PaperVenue]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_venue(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakeVenue]:
    """Builds venues on one shared file by default, as processes of one deployment would."""
    venues: list[PaperVenue] = []

    def make(**overrides: Any) -> PaperVenue:
        params: dict[str, Any] = {
            "path": tmp_path / "venue.sqlite3",
            "seed": 7,
            "liquidity": 100,
            "tick_seconds": 1.0,
            "commission_per_share": Decimal("0.005"),
            "commission_minimum": Decimal("1.00"),
            "clock": clock,
        }
        params.update(overrides)
        venue = PaperVenue(**params)
        venues.append(venue)
        return venue

    yield make
    for venue in venues:
        await venue.close()


def prices_csv(tmp_path: Path, text: str, name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def series_csv(tmp_path: Path, symbol: str, prices: list[str]) -> Path:
    rows = "".join(f"{symbol},{price}\n" for price in prices)
    return prices_csv(tmp_path, "symbol,price\n" + rows)


def an_order(
    symbol: str = "ACME",
    side: str = "BUY",
    quantity: int = 50,
    order_type: str = "MARKET",
    price: Decimal | str | None = None,
    order_id: UUID | None = None,
    *,
    stop_price: Decimal | str | None = None,
    time_in_force: str = "GTC",
) -> VenueOrder:
    return VenueOrder(
        order_id=order_id or uuid4(),
        symbol=symbol,
        side=side,
        quantity=quantity,
        order_type=order_type,
        price=Decimal(price) if isinstance(price, str) else price,
        stop_price=Decimal(stop_price) if isinstance(stop_price, str) else stop_price,
        time_in_force=time_in_force,
    )


async def report_for(venue: PaperVenue, order_id: UUID) -> ExecutionReport:
    [report] = await venue.poll([order_id])
    return report


def fills(report: ExecutionReport) -> list[tuple[int, Decimal]]:
    return [(execution.quantity, execution.price) for execution in report.executions]


# --- reference prices ----------------------------------------------------------------


def test_the_random_walk_is_the_same_for_the_same_seed_and_symbol(
    make_venue: MakeVenue, tmp_path: Path
) -> None:
    one = make_venue(seed=11)
    other = make_venue(seed=11, path=tmp_path / "other.sqlite3")
    ticks = [*range(500), 1_700_000_000, 6_800_000_000]
    assert [one.reference_price("ACME", t) for t in ticks] == [
        other.reference_price("ACME", t) for t in ticks
    ]


def test_a_different_seed_or_symbol_gives_a_different_price_path(make_venue: MakeVenue) -> None:
    one, other = make_venue(seed=11), make_venue(seed=12)
    assert [one.reference_price("ACME", t) for t in range(100)] != [
        other.reference_price("ACME", t) for t in range(100)
    ]
    assert [one.reference_price("ACME", t) for t in range(100)] != [
        one.reference_price("WIDGET", t) for t in range(100)
    ]


def test_random_walk_prices_are_positive_in_cents_and_move_in_small_steps(
    make_venue: MakeVenue,
) -> None:
    venue = make_venue()
    for symbol in ("ACME", "A", "BRK.B", "X-1", "ZZZZZZZZZZ"):
        path = [venue.reference_price(symbol, t) for t in range(1_000_000, 1_005_000)]
        assert all(price > 0 and price == price.quantize(Decimal("0.01")) for price in path)
        assert min(path) > Decimal(10)
        assert max(path) < Decimal(700)
        assert len(set(path)) > 100, "the walk should actually move"
        steps = [abs(b / a - 1) for a, b in itertools.pairwise(path)]
        assert max(steps) < Decimal("0.02")


def test_the_reference_price_follows_the_clock_tick(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue(tick_seconds=0.25)
    clock.at(1_000.6)
    assert venue.current_tick() == 4_002
    assert venue.reference_price("ACME") == venue.reference_price("ACME", 4_002)
    clock.tick(0.25)
    assert venue.reference_price("ACME") == venue.reference_price("ACME", 4_003)


def test_prices_can_be_read_from_a_repeating_csv_series(
    make_venue: MakeVenue, tmp_path: Path
) -> None:
    path = prices_csv(tmp_path, "symbol,price\nACME,100\nWIDGET,5.5\nACME,101.25\nACME,99.999\n")
    venue = make_venue(prices_csv=path)
    assert [venue.reference_price("ACME", t) for t in range(5)] == [
        Decimal("100.00"),
        Decimal("101.25"),
        Decimal("100.00"),  # 99.999 rounds to the cent
        Decimal("100.00"),  # the series starts over
        Decimal("101.25"),
    ]
    assert venue.reference_price("WIDGET", 12_345) == Decimal("5.50")


def test_prices_can_be_read_from_a_csv_with_explicit_ticks(
    make_venue: MakeVenue, tmp_path: Path
) -> None:
    path = prices_csv(tmp_path, "symbol,tick,price\nACME,9,101.00\nACME,0,100.00\nACME,5,99.00\n")
    venue = make_venue(prices_csv=path)
    expected = ["100.00"] * 5 + ["99.00"] * 4 + ["101.00"]
    assert [venue.reference_price("ACME", t) for t in range(10)] == [Decimal(p) for p in expected]
    assert venue.reference_price("ACME", 10) == Decimal("100.00")
    assert venue.reference_price("ACME", 25) == Decimal("99.00")


@pytest.mark.parametrize(
    "text",
    [
        "ticker,price\nACME,1.00\n",
        "symbol,price\nACME,-1.00\n",
        "symbol,price\nACME,abc\n",
        "symbol,price\nacme,1.00\n",
        "symbol,tick,price\nACME,x,1.00\n",
        "symbol,tick,price\nACME,1,1.00\nACME,1,2.00\n",
        "symbol,price\n",
    ],
)
def test_a_malformed_prices_csv_is_refused(
    make_venue: MakeVenue, tmp_path: Path, text: str
) -> None:
    with pytest.raises(ValueError, match=r"prices\.csv"):
        make_venue(prices_csv=prices_csv(tmp_path, text))


async def test_a_symbol_missing_from_the_prices_csv_is_unknown(
    make_venue: MakeVenue, tmp_path: Path
) -> None:
    venue = make_venue(prices_csv=series_csv(tmp_path, "ACME", ["100.00"]))
    with pytest.raises(PermanentVenueError) as raised:
        await venue.submit(an_order(symbol="WIDGET"))
    assert raised.value.code == "UNKNOWN_SYMBOL"
    with pytest.raises(PermanentVenueError):
        venue.reference_price("WIDGET", 0)


# --- matching ------------------------------------------------------------------


async def test_a_market_order_fills_at_once_at_the_reference_price(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    venue = make_venue(prices_csv=series_csv(tmp_path, "ACME", ["100.00", "120.00"]))
    clock.at(0.4)
    order = an_order(quantity=50)
    await venue.submit(order)
    report = await report_for(venue, order.order_id)
    assert report.done
    assert report.rejected is None
    [execution] = report.executions
    assert execution.order_id == order.order_id
    assert (execution.quantity, execution.price) == (50, Decimal("100.00"))
    assert execution.commission == Decimal("1.00")
    assert execution.venue == "Mock"
    assert execution.timestamp == EPOCH + timedelta(seconds=0.4)
    assert execution.timestamp.tzinfo is not None


async def test_a_limit_buy_fills_only_once_the_price_falls_to_the_limit(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    csv = series_csv(tmp_path, "ACME", ["100.00", "99.00", "98.00", "97.00", "101.00"])
    venue = make_venue(prices_csv=csv)
    order = an_order(quantity=150, order_type="LIMIT", price="98.00")
    await venue.submit(order)
    for _ in range(2):
        report = await report_for(venue, order.order_id)
        assert (report.executions, report.done) == ((), False)
        clock.tick()
    report = await report_for(venue, order.order_id)
    assert (fills(report), report.done) == ([(100, Decimal("98.00"))], False)
    clock.tick()
    report = await report_for(venue, order.order_id)
    # 97.00 is better than the limit, and the buyer gets it.
    assert fills(report) == [(100, Decimal("98.00")), (50, Decimal("97.00"))]
    assert report.done


async def test_a_limit_sell_fills_only_once_the_price_rises_to_the_limit(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    csv = series_csv(tmp_path, "ACME", ["100.00", "100.99", "101.00", "100.00"])
    venue = make_venue(prices_csv=csv)
    order = an_order(side="SELL", quantity=150, order_type="LIMIT", price="101.00")
    await venue.submit(order)
    clock.tick()
    assert (await report_for(venue, order.order_id)).executions == ()
    clock.tick()
    assert fills(await report_for(venue, order.order_id)) == [(100, Decimal("101.00"))]
    clock.tick()
    report = await report_for(venue, order.order_id)
    assert fills(report) == [(100, Decimal("101.00"))], "100.00 is below the limit"
    assert not report.done


async def test_a_limit_order_on_the_random_walk_fills_when_the_walk_crosses_the_limit(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue()
    path = [venue.reference_price("ACME", t) for t in range(200)]
    limit = min(path[1:])
    assert path[0] > limit
    first_cross = next(t for t, price in enumerate(path) if price <= limit)
    order = an_order(quantity=10, order_type="LIMIT", price=limit)
    await venue.submit(order)
    for tick in range(first_cross):
        assert (await report_for(venue, order.order_id)).executions == (), tick
        clock.tick()
    report = await report_for(venue, order.order_id)
    assert fills(report) == [(10, limit)]
    assert report.executions[0].timestamp == EPOCH + timedelta(seconds=first_cross)


async def test_a_stop_buy_triggers_at_the_trigger_then_fills_as_market(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    csv = series_csv(tmp_path, "ACME", ["100.00", "100.50", "101.00", "97.00", "96.00"])
    venue = make_venue(prices_csv=csv)
    order = an_order(quantity=150, order_type="STOP", price="101.00")
    await venue.submit(order)
    clock.tick()
    assert (await report_for(venue, order.order_id)).executions == ()
    clock.tick(2)
    report = await report_for(venue, order.order_id)
    # Once triggered it keeps filling although the price fell back below the trigger.
    assert fills(report) == [(100, Decimal("101.00")), (50, Decimal("97.00"))]
    assert report.done


async def test_a_stop_sell_triggers_when_the_price_falls_to_the_trigger(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    csv = series_csv(tmp_path, "ACME", ["100.00", "99.00", "98.00", "102.00"])
    venue = make_venue(prices_csv=csv)
    order = an_order(side="SELL", quantity=20, order_type="STOP", price="98.00")
    await venue.submit(order)
    clock.tick()
    assert (await report_for(venue, order.order_id)).executions == ()
    clock.tick()
    report = await report_for(venue, order.order_id)
    assert (fills(report), report.done) == ([(20, Decimal("98.00"))], True)


async def test_a_stop_limit_buy_triggers_at_its_stop_then_fills_only_at_its_limit(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    csv = series_csv(tmp_path, "ACME", ["100.00", "101.00", "103.00", "100.50", "99.00"])
    venue = make_venue(prices_csv=csv)
    order = an_order(order_type="STOP_LIMIT", price="100.50", stop_price="101.00")
    await venue.submit(order)
    for _ in range(2):  # tick 0: not triggered (a LIMIT at 100.50 would fill); 1-2: above it
        assert (await report_for(venue, order.order_id)).executions == ()
        clock.tick()
    clock.tick()
    report = await report_for(venue, order.order_id)
    assert (fills(report), report.done) == ([(50, Decimal("100.50"))], True)


async def test_a_stop_limit_sell_triggers_when_the_price_falls_to_its_stop(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    csv = series_csv(tmp_path, "ACME", ["100.00", "98.00", "97.00", "99.50"])
    venue = make_venue(prices_csv=csv)
    order = an_order(side="SELL", order_type="STOP_LIMIT", price="99.00", stop_price="98.00")
    await venue.submit(order)
    clock.tick(2)  # triggered on tick 1; 98 and 97 are below the limit of 99
    assert (await report_for(venue, order.order_id)).executions == ()
    clock.tick()
    assert fills(await report_for(venue, order.order_id)) == [(50, Decimal("99.50"))]


async def test_ioc_fills_the_acceptance_ticks_liquidity_and_is_done_at_once(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue(liquidity=100)
    order = an_order(quantity=250, time_in_force="IOC")
    await venue.submit(order)
    report = await report_for(venue, order.order_id)
    assert (len(report.executions), report.done) == (1, True)
    assert report.executions[0].quantity == 100
    clock.tick(5)
    assert (await report_for(venue, order.order_id)).executions == report.executions
    assert await venue.cancel(order.order_id)  # already stopped: nothing more will execute


async def test_an_ioc_limit_not_marketable_when_accepted_is_done_unfilled(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    csv = series_csv(tmp_path, "ACME", ["100.00", "90.00"])
    venue = make_venue(prices_csv=csv)
    order = an_order(order_type="LIMIT", price="95.00", time_in_force="IOC")
    await venue.submit(order)
    clock.tick()  # 90.00 would fill a GTC limit at 95
    report = await report_for(venue, order.order_id)
    assert (report.executions, report.done, report.rejected) == ((), True, None)


@pytest.mark.parametrize(("quantity", "filled"), [(100, [100]), (101, [])])
async def test_fok_fills_the_whole_quantity_on_the_acceptance_tick_or_nothing(
    make_venue: MakeVenue, clock: FakeClock, quantity: int, filled: list[int]
) -> None:
    venue = make_venue(liquidity=100)
    order = an_order(quantity=quantity, time_in_force="FOK")
    await venue.submit(order)
    clock.tick(3)
    report = await report_for(venue, order.order_id)
    assert ([e.quantity for e in report.executions], report.done) == (filled, True)


async def test_a_file_from_before_time_in_force_gets_the_columns_and_its_orders_are_gtc(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "old.sqlite3"
    venue = make_venue(path=path, liquidity=10)
    order = an_order(quantity=30)
    await venue.submit(order)
    await venue.close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE orders DROP COLUMN stop_price")
        conn.execute("ALTER TABLE orders DROP COLUMN time_in_force")
    conn.close()

    reopened = make_venue(path=path, liquidity=10)
    clock.tick(2)
    report = await report_for(reopened, order.order_id)
    assert [e.quantity for e in report.executions] == [10, 10, 10]


async def test_a_large_order_fills_at_most_liquidity_shares_per_tick(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue(liquidity=100)
    order = an_order(quantity=350)
    await venue.submit(order)
    seen: list[list[int]] = []
    for _ in range(5):
        report = await report_for(venue, order.order_id)
        again = await report_for(venue, order.order_id)
        assert again == report, "polling twice within a tick executes nothing more"
        seen.append([execution.quantity for execution in report.executions])
        clock.tick()
    full = [100, 100, 100, 50]
    assert seen == [[100], [100, 100], [100, 100, 100], full, full]
    assert (await report_for(venue, order.order_id)).done


async def test_ticks_missed_between_polls_are_matched_as_if_polled_every_tick(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    eager = make_venue(path=tmp_path / "eager.sqlite3")
    lazy = make_venue(path=tmp_path / "lazy.sqlite3")
    order = an_order(quantity=350)
    await eager.submit(order)
    await lazy.submit(order)
    for _ in range(10):
        await eager.poll([order.order_id])
        clock.tick()
    eager_report = await report_for(eager, order.order_id)
    lazy_report = await report_for(lazy, order.order_id)
    assert lazy_report == eager_report
    assert [e.timestamp for e in lazy_report.executions] == [
        EPOCH + timedelta(seconds=t) for t in range(4)
    ]


async def test_advance_matches_open_orders_without_a_poll(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    venue = make_venue()
    order = an_order(quantity=250)
    await venue.submit(order)
    clock.tick(5)
    await venue.advance()
    # A fresh instance reads what advance() persisted; nothing is matched again.
    report = await report_for(make_venue(), order.order_id)
    assert [e.quantity for e in report.executions] == [100, 100, 50]


async def test_ticks_older_than_the_catch_up_limit_are_skipped(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue(max_catch_up_ticks=3)
    order = an_order(quantity=1_000)
    await venue.submit(order)
    clock.tick(10)
    report = await report_for(venue, order.order_id)
    assert [e.timestamp for e in report.executions] == [
        EPOCH + timedelta(seconds=t) for t in (8, 9, 10)
    ]


# --- commission ------------------------------------------------------------------


def test_commission_is_per_share_with_a_minimum_rounded_to_the_cent(
    make_venue: MakeVenue,
) -> None:
    venue = make_venue(commission_per_share=Decimal("0.005"), commission_minimum=Decimal("1.00"))
    assert venue.commission(1) == Decimal("1.00")
    assert venue.commission(200) == Decimal("1.00")
    assert venue.commission(333) == Decimal("1.67")
    assert venue.commission(1_000) == Decimal("5.00")
    free = make_venue(commission_per_share=Decimal(0), commission_minimum=Decimal(0))
    assert free.commission(1_000) == Decimal("0.00")


def test_negative_commission_settings_are_refused(make_venue: MakeVenue) -> None:
    with pytest.raises(ValueError, match="commission"):
        make_venue(commission_per_share=Decimal("-0.01"))
    with pytest.raises(ValueError, match="commission"):
        make_venue(commission_minimum=Decimal("-1"))


async def test_each_execution_carries_the_commission_for_its_own_quantity(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue(liquidity=400)
    order = an_order(quantity=1_000)
    await venue.submit(order)
    clock.tick(2)
    report = await report_for(venue, order.order_id)
    assert [(e.quantity, e.commission) for e in report.executions] == [
        (400, Decimal("2.00")),
        (400, Decimal("2.00")),
        (200, Decimal("1.00")),
    ]


# --- idempotency and persistence ---------------------------------------------------


async def test_resubmitting_a_known_order_never_executes_twice(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue()
    order = an_order(quantity=250)
    await venue.submit(order)
    await venue.poll([order.order_id])
    await venue.submit(order)
    clock.tick(5)
    await venue.submit(order)
    report = await report_for(venue, order.order_id)
    assert [e.quantity for e in report.executions] == [100, 100, 50]
    assert len({e.execution_id for e in report.executions}) == 3


async def test_resubmitting_from_a_new_instance_on_the_same_file_never_executes_twice(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    first = make_venue()
    order = an_order(quantity=250)
    await first.submit(order)
    before = await report_for(first, order.order_id)
    second = make_venue()
    await second.submit(order)
    assert await report_for(second, order.order_id) == before
    clock.tick(5)
    await second.submit(order)
    after = await report_for(second, order.order_id)
    assert [e.quantity for e in after.executions] == [100, 100, 50]
    assert await report_for(first, order.order_id) == after


async def test_a_new_instance_continues_where_a_killed_one_left_off(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    doomed = make_venue()
    order = an_order(quantity=450)
    await doomed.submit(order)
    clock.tick()
    reported = await report_for(doomed, order.order_id)
    clock.tick()
    await doomed.advance()  # matched and persisted, never reported: then the kill
    survivor = make_venue()
    await survivor.submit(order)  # what a restarted worker does with in-flight orders
    report = await report_for(survivor, order.order_id)
    assert report.executions[: len(reported.executions)] == reported.executions
    assert [e.quantity for e in report.executions] == [100, 100, 100]
    clock.tick(5)
    report = await report_for(survivor, order.order_id)
    assert [e.quantity for e in report.executions] == [100, 100, 100, 100, 50]
    assert report.done


async def test_execution_ids_are_stable_across_polls_and_instances(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue()
    order = an_order(quantity=300)
    await venue.submit(order)
    clock.tick(2)
    ids = [e.execution_id for e in (await report_for(venue, order.order_id)).executions]
    assert ids == [e.execution_id for e in (await report_for(venue, order.order_id)).executions]
    assert ids == [
        e.execution_id for e in (await report_for(make_venue(), order.order_id)).executions
    ]
    assert ids == [execution_id_for(order.order_id, seq) for seq in (1, 2, 3)]
    assert ids[0] == uuid5(order.order_id, "execution:1")


async def test_two_instances_polling_at_once_never_execute_a_tick_twice(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    one, other = make_venue(), make_venue()
    orders = [an_order(quantity=2_000) for _ in range(5)]
    for order in orders:
        await one.submit(order)
    ids = [order.order_id for order in orders]
    for _ in range(6):
        clock.tick()
        await asyncio.gather(*(venue.poll(ids) for venue in (one, other, one, other)))
    for report in await other.poll(ids):
        assert [e.quantity for e in report.executions] == [100] * 7
        assert [e.execution_id for e in report.executions] == [
            execution_id_for(report.order_id, seq) for seq in range(1, 8)
        ]


async def test_an_instance_that_loses_the_race_for_a_tick_does_not_execute_it_again(
    make_venue: MakeVenue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow, fast = make_venue(), make_venue()
    order = an_order(quantity=1_000)
    await slow.submit(order)
    clock.tick(2)
    real_simulate = slow._simulate
    raced = False

    def simulate_then_lose_the_race(state: Any, now: int) -> Any:
        # Between slow's unlocked read and its write, fast matches part of the gap.
        nonlocal raced
        plan = real_simulate(state, now)
        if not raced:
            raced = True
            fast._match_orders([order.order_id], now - 1)
        return plan

    monkeypatch.setattr(slow, "_simulate", simulate_then_lose_the_race)
    report = await report_for(slow, order.order_id)
    assert raced
    assert [e.quantity for e in report.executions] == [100] * 3
    assert [e.execution_id for e in report.executions] == [
        execution_id_for(order.order_id, seq) for seq in range(1, 4)
    ]


_WORKER = """
import asyncio, json, sys
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from app.engine.paper import PaperVenue
from app.engine.venue import VenueOrder


async def main() -> None:
    path, order_id, seconds = sys.argv[1], UUID(sys.argv[2]), float(sys.argv[3])
    venue = PaperVenue(
        path, seed=7, liquidity=100, tick_seconds=1.0,
        commission_per_share=Decimal("0.005"), commission_minimum=Decimal("1.00"),
        clock=lambda: datetime.fromtimestamp(seconds, UTC),
    )
    order = VenueOrder(order_id, "ACME", "BUY", 10_000, "MARKET", None)
    for _ in range(10):
        await venue.submit(order)
        [report] = await venue.poll([order_id])
    await venue.close()
    print(json.dumps([str(e.execution_id) for e in report.executions]))


asyncio.run(main())
"""


async def test_worker_processes_sharing_the_file_never_execute_a_tick_twice(
    make_venue: MakeVenue, tmp_path: Path, clock: FakeClock
) -> None:
    venue = make_venue()
    order = an_order(quantity=10_000)
    await venue.submit(order)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            str(tmp_path / "venue.sqlite3"),
            str(order.order_id),
            str(seconds),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for seconds in (10, 20, 20, 30, 30, 40)
    ]
    outputs = await asyncio.gather(*(worker.communicate() for worker in workers))
    assert [worker.returncode for worker in workers] == [0] * len(workers), outputs
    clock.at(40)
    report = await report_for(venue, order.order_id)
    expected = [execution_id_for(order.order_id, seq) for seq in range(1, 42)]
    assert [e.execution_id for e in report.executions] == expected
    for stdout, _ in outputs:
        seen = [UUID(value) for value in json.loads(stdout)]
        assert seen == expected[: len(seen)]


# --- cancel ----------------------------------------------------------------------------


async def test_cancel_stops_further_executions(make_venue: MakeVenue, clock: FakeClock) -> None:
    venue = make_venue()
    order = an_order(quantity=350)
    await venue.submit(order)
    await venue.poll([order.order_id])
    assert await venue.cancel(order.order_id) is True
    clock.tick(5)
    report = await report_for(venue, order.order_id)
    assert [e.quantity for e in report.executions] == [100]
    assert (report.done, report.rejected) == (True, None)
    assert await report_for(make_venue(), order.order_id) == report


async def test_executions_due_before_a_cancel_still_happen(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue()
    order = an_order(quantity=1_000)
    await venue.submit(order)
    clock.tick(2)
    assert await venue.cancel(order.order_id)
    clock.tick(2)
    report = await report_for(venue, order.order_id)
    assert [e.quantity for e in report.executions] == [100, 100, 100]


async def test_cancel_is_idempotent_and_false_for_finished_orders(
    make_venue: MakeVenue, tmp_path: Path
) -> None:
    venue = make_venue(reject_symbols={"BADCO": "HALTED"})
    resting = an_order(quantity=10, order_type="LIMIT", price="0.01")
    await venue.submit(resting)
    assert await venue.cancel(resting.order_id) is True
    assert await venue.cancel(resting.order_id) is True
    assert await make_venue().cancel(resting.order_id) is True
    filled = an_order(quantity=10)
    await venue.submit(filled)
    assert await venue.cancel(filled.order_id) is False
    assert [e.quantity for e in (await report_for(venue, filled.order_id)).executions] == [10]
    refused = an_order(symbol="BADCO")
    with pytest.raises(PermanentVenueError):
        await venue.submit(refused)
    assert await venue.cancel(refused.order_id) is False


async def test_cancelling_an_order_the_venue_never_saw_blocks_a_late_submit(
    make_venue: MakeVenue, clock: FakeClock
) -> None:
    venue = make_venue()
    order = an_order(quantity=10)
    assert await venue.cancel(order.order_id) is True
    await venue.submit(order)
    clock.tick(3)
    report = await report_for(venue, order.order_id)
    assert report == ExecutionReport(order.order_id, (), None, True)


# --- failures ----------------------------------------------------------------------------


async def test_forced_transient_failures_clear_after_the_configured_attempts(
    make_venue: MakeVenue,
) -> None:
    first = make_venue(fail_transient_times={"FLAKY": 2})
    order = an_order(symbol="FLAKY")
    with pytest.raises(TransientVenueError) as raised:
        await first.submit(order)
    assert raised.value.code == "VENUE_BUSY"
    assert await first.poll([order.order_id]) == [], "a failed submit leaves no order"
    # Attempts are counted in the file, so a restarted worker does not start over.
    second = make_venue(fail_transient_times={"FLAKY": 2})
    with pytest.raises(TransientVenueError):
        await second.submit(order)
    await second.submit(order)
    assert fills(await report_for(second, order.order_id)) != []
    other = an_order(symbol="FLAKY")
    with pytest.raises(TransientVenueError):
        await second.submit(other)


async def test_a_rejected_symbol_is_refused_for_good_and_reported_as_rejected(
    make_venue: MakeVenue,
) -> None:
    venue = make_venue(reject_symbols={"BADCO": "HALTED"})
    order = an_order(symbol="BADCO")
    for _ in range(2):
        with pytest.raises(PermanentVenueError) as raised:
            await venue.submit(order)
        assert raised.value.code == "HALTED"
    report = await report_for(make_venue(), order.order_id)
    assert report.rejected == raised.value.rejection()
    assert report.rejected == VenueRejection("HALTED", raised.value.message)
    assert (report.executions, report.done) == ((), True)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"symbol": "acme"}, "UNKNOWN_SYMBOL"),
        ({"symbol": ""}, "UNKNOWN_SYMBOL"),
        ({"symbol": "ELEVENCHARS"}, "UNKNOWN_SYMBOL"),
        ({"symbol": "AC ME"}, "UNKNOWN_SYMBOL"),
        ({"side": "HOLD"}, "INVALID_SIDE"),
        ({"order_type": "ICEBERG"}, "INVALID_ORDER_TYPE"),
        ({"quantity": 0}, "INVALID_QUANTITY"),
        ({"quantity": -5}, "INVALID_QUANTITY"),
        ({"price": "10.00"}, "INVALID_PRICE"),
        ({"order_type": "LIMIT"}, "INVALID_PRICE"),
        ({"order_type": "LIMIT", "price": "10.005"}, "INVALID_PRICE"),
        ({"order_type": "STOP", "price": "0.00"}, "INVALID_PRICE"),
        ({"order_type": "STOP", "price": "NaN"}, "INVALID_PRICE"),
        ({"order_type": "STOP_LIMIT", "price": "10.00"}, "INVALID_STOP_PRICE"),
        (
            {"order_type": "STOP_LIMIT", "price": "10.00", "stop_price": "-1.00"},
            "INVALID_STOP_PRICE",
        ),
        ({"order_type": "STOP_LIMIT", "stop_price": "10.00"}, "INVALID_PRICE"),
        ({"stop_price": "10.00"}, "INVALID_STOP_PRICE"),
        ({"time_in_force": "GTD"}, "INVALID_TIME_IN_FORCE"),
        (
            {"order_type": "STOP", "price": "10.00", "time_in_force": "IOC"},
            "INVALID_TIME_IN_FORCE",
        ),
    ],
)
async def test_invalid_orders_are_refused_permanently(
    make_venue: MakeVenue, changes: dict[str, Any], code: str
) -> None:
    venue = make_venue()
    order = an_order(**changes)
    with pytest.raises(PermanentVenueError) as raised:
        await venue.submit(order)
    assert raised.value.code == code
    assert (await report_for(venue, order.order_id)).rejected == raised.value.rejection()


async def first_attempt_outcomes(venue: PaperVenue, orders: list[VenueOrder]) -> list[str]:
    outcomes = []
    for order in orders:
        try:
            await venue.submit(order)
        except VenueError as error:
            outcomes.append(error.code)
        else:
            outcomes.append("OK")
    return outcomes


async def test_random_failures_are_deterministic_per_seed_order_and_attempt(
    make_venue: MakeVenue, tmp_path: Path
) -> None:
    orders = [an_order(order_id=UUID(int=n)) for n in range(1, 41)]
    rates = {"transient_failure_rate": 0.4, "permanent_failure_rate": 0.2}
    one = await first_attempt_outcomes(make_venue(**rates), orders)
    same = await first_attempt_outcomes(make_venue(path=tmp_path / "same.sqlite3", **rates), orders)
    other_seed = await first_attempt_outcomes(
        make_venue(path=tmp_path / "other.sqlite3", seed=8, **rates), orders
    )
    assert one == same
    assert one != other_seed
    assert set(one) == {"OK", "VENUE_BUSY", "VENUE_REJECTED"}


async def test_a_transiently_failed_submit_eventually_goes_through(
    make_venue: MakeVenue,
) -> None:
    venue = make_venue(transient_failure_rate=0.5)
    for n in range(1, 11):
        order = an_order(order_id=UUID(int=n))
        for _attempt in range(30):
            try:
                await venue.submit(order)
                break
            except TransientVenueError:
                continue
        else:
            pytest.fail("the failure draw does not change between attempts")
        assert (await report_for(venue, order.order_id)).done


async def test_a_random_permanent_failure_is_remembered_not_redrawn(
    make_venue: MakeVenue,
) -> None:
    venue = make_venue(permanent_failure_rate=1.0)
    order = an_order()
    with pytest.raises(PermanentVenueError) as raised:
        await venue.submit(order)
    assert raised.value.code == "VENUE_REJECTED"
    generous = make_venue(permanent_failure_rate=0.0)
    with pytest.raises(PermanentVenueError):
        await generous.submit(order)


@pytest.mark.parametrize(
    "rates", [(-0.1, 0.0), (0.0, 1.5), (0.6, 0.6)], ids=["negative", "above-one", "sum"]
)
def test_impossible_failure_rates_are_refused(
    make_venue: MakeVenue, rates: tuple[float, float]
) -> None:
    with pytest.raises(ValueError, match="rate"):
        make_venue(transient_failure_rate=rates[0], permanent_failure_rate=rates[1])


# --- the rest of the contract ------------------------------------------------------------


async def test_poll_reports_known_orders_once_in_the_order_asked(
    make_venue: MakeVenue,
) -> None:
    venue = make_venue()
    first, second = an_order(), an_order()
    await venue.submit(first)
    await venue.submit(second)
    reports = await venue.poll([second.order_id, uuid4(), first.order_id, second.order_id])
    assert [report.order_id for report in reports] == [second.order_id, first.order_id]
    assert await venue.poll([]) == []


def test_the_paper_venue_is_a_venue(make_venue: MakeVenue) -> None:
    venue: Venue = make_venue()
    assert isinstance(venue, Venue)
    assert venue.name == "Mock"


def test_venue_errors_carry_a_code_and_message_and_survive_pickling() -> None:
    error = TransientVenueError("VENUE_BUSY", "try later")
    assert isinstance(error, VenueError)
    assert not isinstance(error, PermanentVenueError)
    assert str(error) == "VENUE_BUSY: try later"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.code, copy.message) == (TransientVenueError, "VENUE_BUSY", "try later")
    assert PermanentVenueError("UNKNOWN_SYMBOL").rejection() == VenueRejection("UNKNOWN_SYMBOL", "")


async def test_from_settings_puts_the_file_in_the_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    settings = Settings(data_dir=data_dir, venue_seed=3, venue_liquidity=25)
    venue = PaperVenue.from_settings(settings)
    try:
        assert venue.path == data_dir / "paper_venue.sqlite3"
        assert venue.path.exists()
        assert (venue.seed, venue.liquidity) == (3, 25)
    finally:
        await venue.close()


async def test_a_closed_venue_refuses_calls_and_closes_twice_quietly(
    make_venue: MakeVenue,
) -> None:
    venue = make_venue()
    await venue.close()
    await venue.close()
    with pytest.raises(RuntimeError, match="closed"):
        await venue.poll([uuid4()])


def test_a_clock_without_a_timezone_is_refused(make_venue: MakeVenue) -> None:
    venue = make_venue(clock=lambda: datetime(2024, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone"):
        venue.current_tick()
