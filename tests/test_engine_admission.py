"""Admission capacity: orders resting at the venue never hold the room new orders need.

Issue 18: a worker counted every order it owned against ``max_in_flight``, so one
trader's LIMIT orders priced far from the market, resting at the venue for good, stopped
admission for every other trader. Resting orders now keep their lease but count for
nothing (``app.engine.holdings``). The setting is tests/test_engine.py's, and one test
runs the API with a real worker beside it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from app.engine.run import run_worker
from tests import test_engine
from tests.api import Client, api_client, api_settings
from tests.test_engine import (
    MakeVenue,
    MakeWorker,
    Tampered,
    cancel_as_trader,
    drive,
    order_of,
    place,
)

# tests/test_engine.py's fixtures: a paper venue on a shared file with a fake clock, workers.
clock = test_engine.clock
prices_csv = test_engine.prices_csv
make_venue = test_engine.make_venue
make_worker = test_engine.make_worker

RESTING_TRADER = uuid.UUID("7b0c1f9e-0000-4000-8000-00000000000a")
OTHER_TRADER = uuid.UUID("7b0c1f9e-0000-4000-8000-00000000000b")


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(f"order_api_engine_{name}")


async def routed(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM orders WHERE id = ANY($1) AND routed_at IS NOT NULL", ids
    )
    return count


async def test_orders_resting_at_the_venue_leave_room_to_admit_new_ones(
    make_worker: MakeWorker, authenticator_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    worker = make_worker(max_in_flight=2)
    # ACME trades at 100.00: a buy limited to 1.00 rests at the venue for good.
    resting = [await place(authenticator_conn, "ACME", 1, "LIMIT", "1.00") for _ in range(6)]

    async def all_routed() -> bool:
        return await routed(owner_conn, resting) == len(resting)

    await drive([worker], all_routed, passes=10)
    market = await place(authenticator_conn, "ACME", 5)
    await worker.run_once()

    assert (await order_of(owner_conn, market))["status"] == "FILLED"
    assert worker.owned == frozenset(resting)  # each keeps its lease, for recovery
    assert gauge("resting_orders") == len(resting)
    assert gauge("in_flight_orders") == 0


async def test_resting_orders_are_stepped_in_batches_and_each_gets_its_turn(
    make_worker: MakeWorker,
    clock: test_engine.FakeClock,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    worker = make_worker(batch_size=2, max_in_flight=2)
    # DIP falls from 100.00 to 94.00 at tick 3: a buy limited to 95.00 rests, then fills.
    orders = [await place(authenticator_conn, "DIP", 1, "LIMIT", "95.00") for _ in range(7)]

    async def all_filled() -> bool:
        return bool(
            await owner_conn.fetchval(
                "SELECT bool_and(status = 'FILLED') FROM orders WHERE id = ANY($1)", orders
            )
        )

    await drive([worker], all_filled, clock=clock, passes=30)
    assert worker.owned == frozenset()


async def test_a_worker_logs_once_when_admission_stops_and_once_when_it_resumes(
    make_worker: MakeWorker,
    make_venue: MakeVenue,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # HALT's submits fail, so its orders stay in flight (retrying) and take the room.
    venue = Tampered(make_venue(), broken_symbols=frozenset({"HALT"}))
    worker = make_worker(venue=venue, max_in_flight=2, engine_max_retries=100)
    stuck = [await place(authenticator_conn, "HALT", 1) for _ in range(2)]
    waiting = await place(authenticator_conn, "ACME", 1)
    caplog.set_level(logging.INFO, logger="app.engine.holdings")

    for _ in range(4):
        await worker.run_once()
    assert worker.owned == frozenset(stuck)
    assert (await order_of(owner_conn, waiting))["approved_at"] is None
    assert gauge("admission_saturated") == 1
    assert (gauge("in_flight_orders"), gauge("in_flight_limit")) == (2, 2)

    for order_id in stuck:
        await cancel_as_trader(authenticator_conn, order_id)
    for _ in range(3):
        await worker.run_once()

    assert (await order_of(owner_conn, waiting))["status"] == "FILLED"
    messages = [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "app.engine.holdings"
    ]
    assert [level for level, _ in messages] == ["WARNING", "INFO"], messages
    assert "stops admitting: 2 orders in flight" in messages[0][1]
    assert "admits again" in messages[1][1]
    assert gauge("admission_saturated") == 0


# --- through the API, with a real worker ------------------------------------------------------

SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"
STATUS = "query($id: UUID!) { order(id: $id) { status } }"


async def submit(client: Client, trader: uuid.UUID, **order: Any) -> uuid.UUID:
    body = await client.gql(SUBMIT, {"input": order}, token=client.token(trader))
    assert "errors" not in body, body
    return uuid.UUID(body["data"]["submitOrder"]["id"])


async def status(client: Client, trader: uuid.UUID, order_id: uuid.UUID) -> str:
    body = await client.gql(STATUS, {"id": str(order_id)}, token=client.token(trader))
    assert "errors" not in body, body
    result: str = body["data"]["order"]["status"]
    return result


async def eventually(
    read: Callable[[], Awaitable[Any]],
    *,
    within: float,
    at_least: int | None = None,
    equal: object = None,
) -> None:
    async with asyncio.timeout(within):
        while True:
            value = await read()
            if (value >= at_least) if at_least is not None else (value == equal):
                return
            await asyncio.sleep(0.05)


async def test_one_traders_resting_orders_do_not_stall_another_traders_market_order(
    database: Any, tmp_path: Path, owner_conn: asyncpg.Connection
) -> None:
    settings = api_settings(
        database,
        data_dir=tmp_path,
        engine_poll_seconds=0.05,
        venue_tick_seconds=0.05,
        engine_max_in_flight=5,
    )
    stop = asyncio.Event()
    engine = asyncio.create_task(run_worker(settings, stop))
    try:
        async with api_client(settings) as client:
            # Far below the market: these rest at the venue, more of them than the limit.
            resting = [
                await submit(
                    client,
                    RESTING_TRADER,
                    symbol="ACME",
                    side="BUY",
                    quantity=1,
                    orderType="LIMIT",
                    price="0.01",
                )
                for _ in range(12)
            ]
            await eventually(lambda: routed(owner_conn, resting), at_least=5, within=10)

            market = await submit(
                client, OTHER_TRADER, symbol="ACME", side="BUY", quantity=1, orderType="MARKET"
            )
            # Before the fix it stayed PENDING for as long as the limit orders rested.
            await eventually(lambda: status(client, OTHER_TRADER, market), equal="FILLED", within=5)

            await eventually(lambda: routed(owner_conn, resting), at_least=12, within=5)
            assert {await status(client, RESTING_TRADER, o) for o in resting} == {"PENDING"}
    finally:
        stop.set()
        await asyncio.wait_for(engine, timeout=10)
