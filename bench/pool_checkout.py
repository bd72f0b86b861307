"""What a pooled connection costs the hot path in Python: the ways to check one out and in,
and the two ways to open and close a read's transaction.

    API_DATABASE_URL=... python -m bench.pool_checkout [--times 3000]

CPU µs per checkout and checkin (``time.thread_time_ns``), one at a time on a pool with idle
connections, the median of three interleaved rounds:

- ``engine.raw_connection()``: SQLAlchemy's async engine, which runs the pool in a greenlet;
- ``greenlet_spawn(pool.connect)``: the same, without the engine's method;
- ``pool.connect()``: the pool's own checkout run directly (no greenlet);
- ``Database._checkout()``: what the hot path does (app/db/session.py);
- the queue's get and put alone: the floor, without SQLAlchemy's checkout (events,
  connection record, reset on return), which the app does not use.

Then the caller's settings in a read-only transaction, as asyncpg's ``transaction()`` opens
and commits it and as plain ``BEGIN READ ONLY`` and ``COMMIT``: CPU and wall µs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import uvloop
from sqlalchemy.engine import make_url
from sqlalchemy.util import greenlet_spawn

from app.db.session import _SET_CALLER_SQL, Database, create_engine

clock = time.thread_time_ns


async def rounds(
    ways: dict[str, Callable[[], Awaitable[object]]], times: int
) -> dict[str, tuple[float, float]]:
    """Median (CPU µs, wall µs) per call of each way, over three interleaved rounds."""
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(3):
        for name, way in ways.items():
            used, wall = clock(), time.perf_counter_ns()
            for _ in range(times):
                await way()
            seen[name].append(
                ((clock() - used) / times / 1000, (time.perf_counter_ns() - wall) / times / 1000)
            )
    return {
        name: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
        for name, v in seen.items()
    }


async def measure(times: int) -> None:
    url = make_url(os.environ["API_DATABASE_URL"]).set(drivername="postgresql+asyncpg")
    database = Database(create_engine(url, pool_size=4))
    engine = database.engine
    pool = engine.sync_engine.pool
    queue = pool._pool  # type: ignore[attr-defined]
    (await engine.raw_connection()).close()

    async def via_engine() -> None:
        (await engine.raw_connection()).close()

    async def via_greenlet() -> None:
        (await greenlet_spawn(pool.connect)).close()

    async def via_pool() -> None:
        pool.connect().close()

    async def via_checkout() -> None:
        (await database._checkout()).close()

    async def queue_only() -> None:
        queue.put_nowait(queue.get_nowait())

    checkouts = await rounds(
        {
            "engine.raw_connection() + close": via_engine,
            "greenlet_spawn(pool.connect) + close": via_greenlet,
            "pool.connect() + close, no greenlet": via_pool,
            "Database._checkout() + close": via_checkout,
            "the queue's get and put alone": queue_only,
        },
        times,
    )
    print("checkout + checkin                       CPU µs")
    for name, (cpu, _) in checkouts.items():
        print(f"  {name:<38} {cpu:6.1f}")

    proxied = await engine.raw_connection()
    conn = proxied.driver_connection
    assert conn is not None
    settings = ("authenticated", "{}", "5000")

    async def asyncpg_transaction() -> None:
        async with conn.transaction():
            await conn.execute(_SET_CALLER_SQL, *settings)

    async def begin_read_only() -> None:
        await conn.execute("BEGIN READ ONLY")
        await conn.execute(_SET_CALLER_SQL, *settings)
        await conn.execute("COMMIT")

    transactions = await rounds(
        {
            "conn.transaction(): BEGIN; settings; COMMIT": asyncpg_transaction,
            "BEGIN READ ONLY; settings; COMMIT": begin_read_only,
        },
        times,
    )
    print("transaction with the settings            CPU µs   wall µs")
    for name, (cpu, wall) in transactions.items():
        print(f"  {name:<40} {cpu:6.1f}  {wall:7.1f}")
    proxied.close()
    await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=3000, help="calls per way and round")
    uvloop.run(measure(parser.parse_args().times))


if __name__ == "__main__":
    main()
