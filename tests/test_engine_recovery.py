"""A real worker process killed mid-flight, and its successor.

``python -m app.engine.run`` is started against the test database (as
``authenticator``) with the paper venue in ``tmp_path``, killed with SIGKILL
while its orders are at the venue but not (fully) filled, and started again.

What "exactly once" means here, and is asserted:

* every order reaches FILLED with fills summing to its quantity, and the fill
  ids are exactly the venue's execution ids, each once;
* exactly one APPROVED row and exactly one EXECUTED "sent to venue" row per
  order: the venue accepted each order once (it deduplicates by order id), and
  ``routed_at`` is set once;
* exactly one RECOVERED row per order, after "sent to venue": the successor took
  over each order the killed worker had in flight, once;
* one FILLED row per fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.engine.paper import PaperVenue, execution_id_for
from tests.sql import as_role

pytestmark = pytest.mark.slow

TRADER = uuid.UUID("7b0c1f9e-0000-4000-8000-000000000002")
ROOT = Path(__file__).resolve().parents[1]
TICK_SECONDS = 0.1
LIQUIDITY = 100


@dataclass
class WorkerProcess:
    """``python -m app.engine.run`` with its output collected (shown when a test fails)."""

    env: dict[str, str]
    output: list[str] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    _drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.engine.run",
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._drain = asyncio.create_task(self._collect(self.process))

    async def _collect(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            self.output.append(line.decode(errors="replace").rstrip())

    async def stop(self, signum: int, *, within: float = 10.0) -> int:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)
        async with asyncio.timeout(within):
            code = await self.process.wait()
            if self._drain is not None:
                await self._drain
        return code

    async def ensure_dead(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.process.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain


@pytest.fixture
async def spawn(database: Any, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    env = {
        **os.environ,
        "API_DATABASE_URL": database.api_url.render_as_string(hide_password=False),
        "ORDER_API_DATA_DIR": str(tmp_path),
        "VENUE_PRICES_CSV": str(tmp_path / "prices.csv"),
        "VENUE_TICK_SECONDS": str(TICK_SECONDS),
        "VENUE_LIQUIDITY": str(LIQUIDITY),
        "VENUE_TRANSIENT_FAILURE_RATE": "0",
        "VENUE_PERMANENT_FAILURE_RATE": "0",
        "ENGINE_POLL_SECONDS": "0.05",
        "ENGINE_RETRY_BASE_SECONDS": "0.05",
        "PYTHONUNBUFFERED": "1",
    }
    worker = WorkerProcess(env)
    try:
        yield worker
    finally:
        await worker.ensure_dead()
        # Captured by pytest and shown only when the test fails.
        print("\n".join(worker.output[-80:]))  # noqa: T201


async def place(
    conn: asyncpg.Connection, quantity: int, order_type: str, price: str | None
) -> uuid.UUID:
    async with as_role(conn, "authenticated", TRADER, commit=True):
        order_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
            " VALUES ($1, 'ACME', 'BUY', $2, $3::order_type_enum, $4::numeric) RETURNING id",
            TRADER,
            quantity,
            order_type,
            price,
        )
    return order_id


async def wait_until(conn: asyncpg.Connection, query: str, *args: Any, within: float) -> None:
    async with asyncio.timeout(within):
        while not await conn.fetchval(query, *args):  # noqa: ASYNC110 (polls the database)
            await asyncio.sleep(0.02)


async def test_a_killed_worker_is_recovered_and_every_order_completes_exactly_once(
    spawn: WorkerProcess,
    tmp_path: Path,
    authenticator_conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("symbol,price\nACME,100.00\n", encoding="utf-8")
    # Rests at the venue: ACME trades at 100.00, above the limit, while the first worker lives.
    resting = await place(authenticator_conn, 300, "LIMIT", "90.00")
    # Fills 100 shares a tick for 20 ticks, so it is partly filled when the worker is killed.
    working = await place(authenticator_conn, 2000, "MARKET", None)
    quantities = {resting: 300, working: 2000}

    await spawn.start()
    await wait_until(
        owner_conn,
        "SELECT bool_and(routed_at IS NOT NULL) AND bool_or(status = 'PARTIAL')"
        " FROM orders WHERE id = ANY($1)",
        list(quantities),
        within=20,
    )
    assert await spawn.stop(signal.SIGKILL) == -signal.SIGKILL

    at_kill = {
        row["id"]: row
        for row in await owner_conn.fetch(
            "SELECT id, status::text, filled_quantity FROM orders WHERE id = ANY($1)",
            list(quantities),
        )
    }
    assert (at_kill[resting]["status"], at_kill[resting]["filled_quantity"]) == ("PENDING", 0)
    assert 0 < at_kill[working]["filled_quantity"] < 2000
    # The market moves below the limit while no worker runs.
    prices.write_text("symbol,price\nACME,80.00\n", encoding="utf-8")

    await spawn.start()
    await wait_until(
        owner_conn,
        "SELECT bool_and(status = 'FILLED') FROM orders WHERE id = ANY($1)",
        list(quantities),
        within=20,
    )
    assert await spawn.stop(signal.SIGTERM) == 0  # a graceful stop between passes

    venue = PaperVenue(
        tmp_path / "paper_venue.sqlite3",
        seed=42,
        liquidity=LIQUIDITY,
        tick_seconds=TICK_SECONDS,
        commission_per_share=Decimal("0.005"),
        commission_minimum=Decimal("1.00"),
        prices_csv=prices,
    )
    try:
        reports = {report.order_id: report for report in await venue.poll(list(quantities))}
    finally:
        await venue.close()

    for order_id, quantity in quantities.items():
        fills = await owner_conn.fetch(
            'SELECT id, quantity_filled FROM fills WHERE order_id = $1 ORDER BY "timestamp", id',
            order_id,
        )
        assert sum(f["quantity_filled"] for f in fills) == quantity
        fill_ids = {f["id"] for f in fills}
        assert len(fill_ids) == len(fills)
        assert fill_ids == {execution_id_for(order_id, seq) for seq in range(1, len(fills) + 1)}
        assert fill_ids == {e.execution_id for e in reports[order_id].executions}

        logs = await owner_conn.fetch(
            'SELECT action::text, reason FROM execution_logs WHERE order_id = $1 ORDER BY "timestamp", id',
            order_id,
        )
        kinds = [row["action"] for row in logs]
        assert kinds.count("APPROVED") == 1
        assert [row["reason"] for row in logs if row["action"] == "EXECUTED"] == ["sent to venue"]
        assert kinds.count("RECOVERED") == 1
        assert kinds.index("RECOVERED") > kinds.index("EXECUTED")
        assert "at the venue" in logs[kinds.index("RECOVERED")]["reason"]
        assert kinds.count("FILLED") == len(fills)
        assert kinds[-1] == "FILLED"
    # The resting order filled only after the takeover, at the new price.
    resting_logs = [
        row["action"]
        for row in await owner_conn.fetch(
            'SELECT action::text FROM execution_logs WHERE order_id = $1 ORDER BY "timestamp", id',
            resting,
        )
    ]
    assert resting_logs[:5] == ["SUBMITTED", "APPROVED", "EXECUTED", "RECOVERED", "FILLED"]
