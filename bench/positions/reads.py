"""The read path: a heavy trader's positions, interleaved with a W1-like page."""

from __future__ import annotations

import time

import asyncpg

from app.db.urls import libpq_url, with_user
from app.orders import fields
from app.positions.queries import COLUMNS
from bench.positions import TRADER, set_caller


async def _load_heavy_trader(owner: asyncpg.Connection, orders: int, symbols: int) -> None:
    """``orders`` filled orders of TRADER, set-wise (the owner bypasses row level security on
    the embedded server; every trigger runs, positions included)."""
    await owner.execute(
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, created_at)"
        " SELECT $1, 'S' || (i % $3), CASE WHEN random() < 0.55 THEN 'BUY' ELSE 'SELL' END,"
        "        1 + (random() * 99)::int, 'MARKET', now()"
        "   FROM generate_series(1, $2) i",
        TRADER,
        orders,
        symbols,
    )
    await owner.execute("UPDATE orders SET approved_at = now() WHERE trader_id = $1", TRADER)
    await owner.execute("UPDATE orders SET routed_at = now() WHERE trader_id = $1", TRADER)
    await owner.execute(
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue, commission)"
        " SELECT id, quantity, round((90 + random() * 20)::numeric, 2), 'X', 1.00"
        "   FROM orders WHERE trader_id = $1",
        TRADER,
    )
    # One statement gave every order the same created_at (the lifecycle trigger sets it to
    # now()), which a page sorted by created_at cannot use; an hour of distinct times, as
    # separate submits would have, on this benchmark's database only.
    await owner.execute("ALTER TABLE orders DISABLE TRIGGER USER")
    await owner.execute(
        "UPDATE orders o SET created_at = o.created_at - make_interval(secs => n.i * 0.1)"
        "  FROM (SELECT id, row_number() OVER (ORDER BY id) AS i FROM orders"
        "         WHERE trader_id = $1) n"
        " WHERE o.id = n.id",
        TRADER,
    )
    await owner.execute("ALTER TABLE orders ENABLE TRIGGER USER")
    await owner.execute(
        "INSERT INTO market_prices (symbol, price)"
        " SELECT 'S' || i, 100.00 FROM generate_series(0, $1 - 1) i",
        symbols,
    )
    await owner.execute("ANALYZE")


W1_ORDERS = (
    f"SELECT {fields.ORDER.columns} FROM orders WHERE trader_id = $1"
    " ORDER BY created_at DESC, id DESC LIMIT 20"
)
W1_FILLS = (
    f"SELECT {fields.FILL.columns} FROM fills WHERE order_id = ANY($1::uuid[])"
    ' ORDER BY order_id, "timestamp", id'
)
POSITIONS = f"SELECT {COLUMNS} FROM trader_positions(NULL, $1::cost_basis_method)"


async def _read(conn: asyncpg.Connection, kind: str) -> float:
    start = time.perf_counter()
    async with conn.transaction(readonly=True):
        await conn.execute(set_caller("authenticated"))
        if kind == "W1 page":
            rows = await conn.fetch(W1_ORDERS, TRADER)
            await conn.fetch(W1_FILLS, [row["id"] for row in rows])
        else:
            await conn.fetch(POSITIONS, kind)
    return (time.perf_counter() - start) * 1000


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def read_path(url: str, orders: int, symbols: int, reads: int) -> None:
    owner = await asyncpg.connect(libpq_url(url))
    start = time.perf_counter()
    await _load_heavy_trader(owner, orders, symbols)
    loaded = time.perf_counter() - start
    fills = await owner.fetchval("SELECT count(*) FROM fills")
    rows = await owner.fetchval("SELECT count(*) FROM positions WHERE trader_id = $1", TRADER)
    await owner.close()
    print(
        f"read path: one trader, {orders} orders, {fills} fills over {symbols} symbols"
        f" ({rows} position rows, both methods), loaded in {loaded:.1f} s"
    )
    api = await asyncpg.connect(libpq_url(with_user(url, "authenticator")))
    kinds = ("FIFO", "AVERAGE_COST", "W1 page")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(50):  # warm up, plans cached
        for kind in kinds:
            await _read(api, kind)
    for i in range(reads):
        order = kinds[i % 3 :] + kinds[: i % 3]  # each goes first in turn
        for kind in order:
            times[kind].append(await _read(api, kind))
    await api.close()
    for kind in kinds:
        label = f"positions {kind}" if kind != "W1 page" else "W1-like page (20 orders + fills)"
        print(
            f"  {label}: p50 {_percentile(times[kind], 0.5):.3f} ms,"
            f" p99 {_percentile(times[kind], 0.99):.3f} ms ({reads} reads)"
        )
