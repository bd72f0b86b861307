"""Time in force, STOP_LIMIT and replace, executed by the engine with the paper venue.

The setting is tests/test_engine.py's (its fixtures): a real database, the engine as
service_role, the paper venue on a temporary file with a fake clock of one-second ticks
whose prices the test chooses. The database's clock is real: a DAY order's close is moved
to just ahead of it (``trading_session``), so crossing the close takes a second, not a day.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from app.engine import order_rows
from app.engine.paper import PaperVenue
from app.engine.replace import ORIGINAL_CLOSED
from app.engine.time_in_force import UNFILLED_AT_ONCE
from app.engine.venue import ExecutionReport, VenueOrder
from app.orders.ledger import FILLED_FIRST
from tests import test_engine
from tests.sql import as_role
from tests.test_engine import (
    TRADER,
    FakeClock,
    MakeVenue,
    MakeWorker,
    actions,
    fills_of,
    logs_of,
    order_of,
)

# tests/test_engine.py's fixtures: a paper venue on a shared file with a fake clock, workers.
clock = test_engine.clock
prices_csv = test_engine.prices_csv
make_venue = test_engine.make_venue
make_worker = test_engine.make_worker


async def submit(
    conn: asyncpg.Connection,
    symbol: str,
    quantity: int,
    order_type: str = "MARKET",
    price: str | None = None,
    *,
    side: str = "BUY",
    time_in_force: str = "GTC",
    stop_price: str | None = None,
    replaces: uuid.UUID | None = None,
    expires_in: float | None = None,
) -> uuid.UUID:
    """An order as its trader places it (``replaces``: a replacement, ``quantity`` its total)."""
    async with as_role(conn, "authenticated", TRADER, commit=True):
        order_id: uuid.UUID = await conn.fetchval(
            """
            INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price,
                                time_in_force, stop_price, replaces_id, expires_at)
            VALUES ($1, $2, $3, $4, $5::order_type_enum, $6::numeric,
                    $7::time_in_force_enum, $8::numeric, $9,
                    now() + make_interval(secs => $10::double precision))
            RETURNING id
            """,
            TRADER,
            symbol,
            side,
            quantity,
            order_type,
            price,
            time_in_force,
            stop_price,
            replaces,
            expires_in,
        )
    return order_id


async def state(conn: asyncpg.Connection, order_id: uuid.UUID) -> tuple[Any, ...]:
    order = await order_of(conn, order_id)
    return (order["status"], order["filled_quantity"], order["status_reason"])


# --- IOC and FOK: "at once" is the acceptance tick --------------------------------------------


async def test_ioc_fills_what_the_venue_has_at_once_and_cancels_the_rest_at_once(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()  # liquidity: 100 shares per order per tick
    worker = make_worker(venue=venue)
    order_id = await submit(authenticator_conn, "ACME", 250, time_in_force="IOC")

    await worker.run_once()  # one pass: approved, routed, 100 filled, the rest cancelled

    assert await state(owner_conn, order_id) == ("CANCELLED", 100, UNFILLED_AT_ONCE["IOC"])
    assert actions(await logs_of(owner_conn, order_id)) == [
        ("SUBMITTED", "PENDING"),
        ("APPROVED", "PENDING"),
        ("EXECUTED", "PENDING"),
        ("FILLED", "PARTIAL"),
        ("CANCELLED", "CANCELLED"),
    ]
    [report] = await venue.poll([order_id])
    assert report.done
    assert worker.owned == frozenset()


async def test_an_ioc_order_the_venue_cannot_fill_at_once_never_fills_later(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()
    worker = make_worker(venue=venue)
    # DIP is 100.00 now and 94.00 from the third tick on: a GTC limit at 95 fills then.
    ioc = await submit(authenticator_conn, "DIP", 10, "LIMIT", "95.00", time_in_force="IOC")
    gtc = await submit(authenticator_conn, "DIP", 10, "LIMIT", "95.00")
    await worker.run_once()
    assert await state(owner_conn, ioc) == ("CANCELLED", 0, UNFILLED_AT_ONCE["IOC"])

    clock.tick(3)
    await worker.run_once()
    assert (await state(owner_conn, gtc))[:2] == ("FILLED", 10)
    assert await state(owner_conn, ioc) == ("CANCELLED", 0, UNFILLED_AT_ONCE["IOC"])
    [report] = await venue.poll([ioc])
    assert (report.done, report.executions) == (True, ())


async def test_fok_fills_the_whole_quantity_at_once_or_nothing(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()  # liquidity 100
    worker = make_worker(venue=venue)
    too_big = await submit(authenticator_conn, "ACME", 101, time_in_force="FOK")
    fits = await submit(authenticator_conn, "ACME", 100, time_in_force="FOK")

    await worker.run_once()

    assert await state(owner_conn, too_big) == ("CANCELLED", 0, UNFILLED_AT_ONCE["FOK"])
    assert await fills_of(owner_conn, too_big) == []
    assert (await state(owner_conn, fits))[:2] == ("FILLED", 100)
    assert [f["quantity_filled"] for f in await fills_of(owner_conn, fits)] == [100]
    assert worker.owned == frozenset()


# --- STOP_LIMIT --------------------------------------------------------------------------------


async def test_a_stop_limit_order_triggers_at_its_stop_price_then_works_as_a_limit(
    make_worker: MakeWorker,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker()
    # DIP: 100.00 on ticks 0-2, 94.00 on ticks 3-9, then again. A SELL stop at 95 triggers on
    # tick 3; its limit of 96 is not met at 94, but at 100 on tick 10. A plain LIMIT SELL at
    # 96 fills at once (100 >= 96): the stop is what holds this one back.
    stop_limit = await submit(
        authenticator_conn, "DIP", 10, "STOP_LIMIT", "96.00", side="SELL", stop_price="95.00"
    )
    limit = await submit(authenticator_conn, "DIP", 10, "LIMIT", "96.00", side="SELL")

    await worker.run_once()
    assert (await state(owner_conn, limit))[:2] == ("FILLED", 10)
    assert (await state(owner_conn, stop_limit))[:2] == ("PENDING", 0)

    for _ in range(1, 10):  # ticks 1-9: triggered on tick 3, below the limit until tick 9
        clock.tick()
        await worker.run_once()
        assert (await state(owner_conn, stop_limit))[:2] == ("PENDING", 0)

    clock.tick()  # tick 10: 100.00
    await worker.run_once()
    assert (await state(owner_conn, stop_limit))[:2] == ("FILLED", 10)
    [fill] = await fills_of(owner_conn, stop_limit)
    assert fill["price_at_fill"] == Decimal("100.00")


async def test_a_stop_limit_order_never_triggered_never_fills(
    make_worker: MakeWorker,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker()
    # RISE: 10.00 on ticks 0-4, then 200.00: a BUY stop at 300 never triggers.
    order_id = await submit(
        authenticator_conn, "RISE", 10, "STOP_LIMIT", "500.00", stop_price="300.00"
    )
    for _ in range(12):
        await worker.run_once()
        clock.tick()
    assert (await state(owner_conn, order_id))[:2] == ("PENDING", 0)


# --- DAY: expiry at the session close ---------------------------------------------------------


async def close_in_a_moment(owner_conn: asyncpg.Connection, seconds: float) -> datetime:
    """Move the session close to ``seconds`` ahead of the database's clock; returns it.

    The zone is a POSIX offset chosen so that the local day is a weekday and the close does
    not cross local midnight, whatever day the test runs on.
    """
    now: datetime = await owner_conn.fetchval("SELECT clock_timestamp()")
    for hours in range(24 * 7):
        local = now.astimezone(UTC) + timedelta(hours=hours)
        if local.weekday() < 5 and 1 <= local.hour <= 22:
            break
    zone = f"UTC-{hours}"  # POSIX: "UTC-5" is five hours ahead of UTC
    await owner_conn.execute(
        "UPDATE trading_session SET time_zone = $1,"
        " close_time = (clock_timestamp() AT TIME ZONE $1"
        " + make_interval(secs => $2::double precision))::time",
        zone,
        seconds,
    )
    close: datetime = await owner_conn.fetchval("SELECT public.session_close(clock_timestamp())")
    return close


async def wait_for_database_clock(owner_conn: asyncpg.Connection, moment: datetime) -> None:
    wait = await owner_conn.fetchval(
        "SELECT extract(epoch FROM $1 - clock_timestamp())::float8", moment
    )
    await asyncio.sleep(max(0.0, wait) + 0.05)
    assert await owner_conn.fetchval("SELECT clock_timestamp() > $1", moment)


async def test_a_day_order_expires_at_the_close_and_the_next_day_order_gets_the_next_close(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()
    worker = make_worker(venue=venue)
    close = await close_in_a_moment(owner_conn, 2.0)
    resting = await submit(authenticator_conn, "DIP", 10, "LIMIT", "50.00", time_in_force="DAY")
    partial = await submit(authenticator_conn, "ACME", 250, time_in_force="DAY")
    gtc = await submit(authenticator_conn, "DIP", 10, "LIMIT", "50.00")
    for order_id in (resting, partial):
        assert (await order_of(owner_conn, order_id))["expires_at"] == close
    assert (await order_of(owner_conn, gtc))["expires_at"] is None

    await worker.run_once()
    assert (await state(owner_conn, partial))[:2] == ("PARTIAL", 100)
    assert (await state(owner_conn, resting))[:2] == ("PENDING", 0)

    await wait_for_database_clock(owner_conn, close)
    clock.tick()  # the venue executes this tick's 100 before the cancel lands
    await worker.run_once()

    assert await state(owner_conn, resting) == ("EXPIRED", 0, "expired")
    assert await state(owner_conn, partial) == ("EXPIRED", 200, "expired")
    for order_id in (resting, partial):
        logs = await logs_of(owner_conn, order_id)
        assert logs[-1] == ("EXPIRED", "EXPIRED", "expired", None, None)
        assert "CANCELLED" not in [action for action, _ in actions(logs)]
        [report] = await venue.poll([order_id])
        assert report.done  # stopped at the venue first
    assert (await state(owner_conn, gtc))[:2] == ("PENDING", 0)  # GTC outlives the close
    assert worker.owned == frozenset({gtc})

    # After the close, a DAY order belongs to the next trading day.
    tomorrow = await submit(authenticator_conn, "ACME", 1, "LIMIT", "1.00", time_in_force="DAY")
    next_close = (await order_of(owner_conn, tomorrow))["expires_at"]
    assert next_close - close in (timedelta(days=1), timedelta(days=3))


class LaggingVenue:
    """The paper venue, with a broker's lag: the first report after a cancel leaves out the
    order's last execution (it was made, but is reported later)."""

    def __init__(self, venue: PaperVenue) -> None:
        self.venue = venue
        self.name = venue.name
        self._lagging: set[uuid.UUID] = set()

    async def submit(self, order: VenueOrder) -> None:
        await self.venue.submit(order)

    async def cancel(self, order_id: uuid.UUID) -> bool:
        self._lagging.add(order_id)
        return await self.venue.cancel(order_id)

    async def poll(self, order_ids: Sequence[uuid.UUID]) -> list[ExecutionReport]:
        reports = await self.venue.poll(order_ids)
        lagging = [r for r in reports if r.order_id in self._lagging]
        self._lagging.difference_update(r.order_id for r in lagging)
        return [
            dataclasses.replace(r, executions=r.executions[:-1]) if r in lagging else r
            for r in reports
        ]

    async def close(self) -> None:
        await self.venue.close()


async def test_a_late_fill_on_an_order_expired_at_the_venue_still_counts(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker(venue=LaggingVenue(make_venue()))
    order_id = await submit(authenticator_conn, "DIP", 150, "LIMIT", "95.00", expires_in=0.5)
    await worker.run_once()  # routed on tick 0 (100.00: no fill)
    expires_at = (await order_of(owner_conn, order_id))["expires_at"]
    await wait_for_database_clock(owner_conn, expires_at)
    clock.tick(3)  # 94.00: the venue fills 100 before the cancel lands, and reports it late

    await worker.run_once()
    assert await state(owner_conn, order_id) == ("EXPIRED", 0, "expired")

    # Another worker's sweep of stopped orders hears of the execution: it is recorded.
    await make_worker(worker_id="w2").run_once()
    assert await state(owner_conn, order_id) == ("EXPIRED", 100, "expired")
    assert actions(await logs_of(owner_conn, order_id))[-2:] == [
        ("EXPIRED", "EXPIRED"),
        ("FILLED", "EXPIRED"),
    ]


# --- replace -------------------------------------------------------------------------------------


async def test_a_routed_order_is_cancelled_at_the_venue_then_replaced_and_its_replacement_worked(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()
    worker = make_worker(venue=venue)
    original = await submit(authenticator_conn, "DIP", 50, "LIMIT", "50.00")
    await worker.run_once()
    assert (await order_of(owner_conn, original))["routed_at"] is not None

    replacement = await submit(authenticator_conn, "DIP", 30, "LIMIT", "60.00", replaces=original)
    await worker.run_once()

    old = await order_of(owner_conn, original)
    assert (old["status"], old["replaced_by_id"]) == ("REPLACED", replacement)
    assert (await logs_of(owner_conn, original))[-1][:2] == ("REPLACED", "REPLACED")
    [old_report] = await venue.poll([original])
    assert old_report.done  # the venue no longer works it
    new = await order_of(owner_conn, replacement)
    assert (new["status"], new["quantity"], new["replaces_id"]) == ("PENDING", 30, original)
    assert new["routed_at"] is not None  # worked as an ordinary order, in the same pass
    assert [action for action, _ in actions(await logs_of(owner_conn, replacement))] == [
        "SUBMITTED",
        "APPROVED",
        "EXECUTED",
    ]
    assert worker.owned == frozenset({replacement})


async def test_an_order_not_yet_at_the_venue_is_replaced_without_reaching_it(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    venue = make_venue()
    worker = make_worker(venue=venue)
    original = await submit(authenticator_conn, "ACME", 50)
    replacement = await submit(authenticator_conn, "ACME", 20, replaces=original)

    await worker.run_once()

    old = await order_of(owner_conn, original)
    assert (old["status"], old["approved_at"]) == ("REPLACED", None)
    assert await venue.poll([original]) == []  # never sent
    assert (await state(owner_conn, replacement))[:2] == ("FILLED", 20)


async def test_workers_racing_for_one_replacement_confirm_it_once(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = make_worker(venue=make_venue(), worker_id="w1")
    second = make_worker(venue=make_venue(), worker_id="w2")
    original = await submit(authenticator_conn, "DIP", 50, "LIMIT", "50.00")
    await first.run_once()
    replacement = await submit(authenticator_conn, "DIP", 30, "LIMIT", "60.00", replaces=original)

    await asyncio.gather(first.run_once(), second.run_once())

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert (await order_of(owner_conn, original))["status"] == "REPLACED"
    assert [a for a, _ in actions(await logs_of(owner_conn, original))].count("REPLACED") == 1
    assert [a for a, _ in actions(await logs_of(owner_conn, replacement))] == [
        "SUBMITTED",
        "APPROVED",
        "EXECUTED",
    ]


async def routed_dip_order(worker: Any, conn: asyncpg.Connection) -> uuid.UUID:
    """A BUY LIMIT at 95 of 150 DIP, routed on tick 0: it fills 100 on tick 3 (price 94)."""
    order_id = await submit(conn, "DIP", 150, "LIMIT", "95.00")
    await worker.run_once()
    return order_id


async def test_a_fill_recorded_after_the_request_rejects_the_replacement_and_stands(
    database: Any,
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    """The fill first: the owner records a venue fill between the request and the engine's
    confirmation, which is then refused."""
    venue = make_venue()
    worker = make_worker(venue=venue)
    original = await routed_dip_order(worker, authenticator_conn)
    replacement = await submit(authenticator_conn, "DIP", 200, "LIMIT", "96.00", replaces=original)
    clock.tick(3)
    # The owner's poll of the venue, as the worker records it (the same statements).
    [report] = await venue.poll([original])
    async with order_rows.transaction(worker.database) as tx:
        current = await order_rows.lock(tx, original, 0.0)
        assert current is not None
        await order_rows.record_fills(tx, current, report.executions, 0.0)
    assert (await state(owner_conn, original))[:2] == ("PARTIAL", 100)

    await worker.run_once()

    await assert_filled_first(owner_conn, venue, original, replacement, filled=100)


async def test_a_fill_the_venue_cancel_reports_rejects_the_replacement_and_stands(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    """The cancel first: the venue executed before the cancel landed, which reports it."""
    venue = make_venue()
    worker = make_worker(venue=venue)
    original = await routed_dip_order(worker, authenticator_conn)
    replacement = await submit(authenticator_conn, "DIP", 200, "LIMIT", "96.00", replaces=original)
    clock.tick(3)  # nobody polled: the fill is due at the venue, unknown to the database

    await worker.run_once()

    await assert_filled_first(owner_conn, venue, original, replacement, filled=100)


async def assert_filled_first(
    owner_conn: asyncpg.Connection,
    venue: Any,
    original: uuid.UUID,
    replacement: uuid.UUID,
    *,
    filled: int,
) -> None:
    new = await order_of(owner_conn, replacement)
    assert (new["status"], new["error_code"], new["approved_at"]) == (
        "REJECTED",
        FILLED_FIRST,
        None,
    )
    old = await order_of(owner_conn, original)
    assert (old["status"], old["filled_quantity"], old["replaced_by_id"]) == (
        "CANCELLED",
        filled,
        None,
    )
    assert [f["quantity_filled"] for f in await fills_of(owner_conn, original)] == [filled]
    [report] = await venue.poll([original])
    assert report.done
    assert "REPLACED" not in [action for action, _ in actions(await logs_of(owner_conn, original))]


async def test_a_fill_before_the_request_is_counted_and_the_replacement_confirmed(
    make_worker: MakeWorker,
    clock: FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker()
    original = await routed_dip_order(worker, authenticator_conn)
    clock.tick(3)
    await worker.run_once()  # 100 filled and recorded
    assert (await state(owner_conn, original))[:2] == ("PARTIAL", 100)

    replacement = await submit(authenticator_conn, "DIP", 120, "LIMIT", "90.00", replaces=original)
    await worker.run_once()

    assert (await order_of(owner_conn, original))["status"] == "REPLACED"
    new = await order_of(owner_conn, replacement)
    assert (new["status"], new["quantity"]) == ("PENDING", 20)  # 120 wanted, 100 filled
    assert new["routed_at"] is not None


async def test_a_replacement_of_an_order_its_trader_cancelled_first_is_rejected(
    make_worker: MakeWorker,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker()
    original = await submit(authenticator_conn, "DIP", 50, "LIMIT", "50.00")
    await worker.run_once()
    replacement = await submit(authenticator_conn, "DIP", 30, "LIMIT", "60.00", replaces=original)
    async with as_role(authenticator_conn, "authenticated", TRADER, commit=True):
        await authenticator_conn.execute(
            "UPDATE orders SET status = 'CANCELLED', status_reason = 'changed my mind'"
            " WHERE id = $1",
            original,
        )

    await worker.run_once()

    new = await order_of(owner_conn, replacement)
    assert (new["status"], new["error_code"]) == ("REJECTED", ORIGINAL_CLOSED)
    assert (await state(owner_conn, original))[:2] == ("CANCELLED", 0)


async def test_a_withdrawn_replacement_leaves_an_unrouted_original_alone(
    make_worker: MakeWorker,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    original = await submit(authenticator_conn, "ACME", 10)
    replacement = await submit(authenticator_conn, "ACME", 20, replaces=original)
    async with as_role(authenticator_conn, "authenticated", TRADER, commit=True):
        await authenticator_conn.execute(
            "UPDATE orders SET status = 'CANCELLED', status_reason = 'withdrawn' WHERE id = $1",
            replacement,
        )

    await make_worker().run_once()

    assert (await state(owner_conn, original))[:2] == ("FILLED", 10)
    assert (await state(owner_conn, replacement))[:2] == ("CANCELLED", 0)
