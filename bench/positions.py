"""Positions' cost: reading them for a heavy trader, and maintaining them on the write path.

    python -m bench.positions [--orders 5000] [--symbols 20] [--reads 1000]
                                 [--write-orders 300] [--rounds 3] [--clients 4] [--pgbench-seconds 5]

Uses DATABASE_URL (a role that may create databases; it owns what it creates) when set;
otherwise a throwaway embedded PostgreSQL deleted at the end.

Read path: one trader with ``--orders`` filled orders over ``--symbols`` symbols (both sides,
so positions open, close and cross zero), loaded set-wise through the real triggers. Then,
interleaved one by one, as that trader (``authenticated``, one READ ONLY transaction each
with the API's settings, prepared): ``trader_positions`` by FIFO, by AVERAGE_COST, and a
W1-like page (the 20 newest orders with their fills, the statements the resolvers send).
p50 and p99 of each, in ms, round trip included.

Write path: two databases at head, one with migration 012's trigger dropped. Orders alternate
between them one by one on one client (submit as the trader, approve, route, one fill as
service_role: four transactions, the sides alternating so fills open and close lots), then
``--rounds`` pgbench runs of ``--clients`` clients on each, alternating (one whole order per
transaction, by one of 1,000 traders in one of 10 symbols, either side). Medians, and the
median of the runs' paired ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import asyncpg

from app.db import embedded
from app.db.urls import libpq_url, with_user
from app.orders import fields
from app.positions.queries import COLUMNS
from app.settings import Settings
from bench.audit_chain import _create, _pgbench, _pgbench_tps

TRADER = uuid.UUID("3f1d2c4b-5a69-4e87-9d0c-1b2a3c4d5e6f")
WITHOUT_POSITIONS = "DROP TRIGGER fills_update_positions ON public.fills"
# audit_chain's submit-and-fill, by one of 1,000 traders in one of 10 symbols, both sides:
# a trader's positions exist after the first few seconds, as they would in production.
PGBENCH_SCRIPT = """\\set trader random(1, 1000)
\\set symbol random(1, 10)
\\set buy random(0, 1)
BEGIN;
SELECT set_config('role', 'service_role', true), set_config('request.jwt.claims', '{"role": "service_role"}', true);
INSERT INTO orders (trader_id, symbol, side, quantity, order_type) VALUES (md5(:trader::text)::uuid, 'S' || :symbol, CASE WHEN :buy = 1 THEN 'BUY' ELSE 'SELL' END, 10, 'MARKET') RETURNING id AS order_id \\gset
UPDATE orders SET approved_at = now() WHERE id = :order_id;
UPDATE orders SET routed_at = now() WHERE id = :order_id;
INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue) VALUES (:order_id, 10, 10.5, 'X');
COMMIT;
"""


def _set_caller(role: str, sub: uuid.UUID | None = TRADER) -> str:
    claims = json.dumps({"role": role, **({"sub": str(sub)} if sub else {})})
    return (
        f"SELECT set_config('role', '{role}', true),"
        f" set_config('request.jwt.claims', '{claims}', true)"
    )


# --- read path ----------------------------------------------------------------------------------


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
        await conn.execute(_set_caller("authenticated"))
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


# --- write path ---------------------------------------------------------------------------------


async def _one_order(conn: asyncpg.Connection, side: str) -> float:
    start = time.perf_counter()
    async with conn.transaction():
        await conn.execute(_set_caller("authenticated"))
        order_id = await conn.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
            " VALUES ($1, 'AAPL', $2, 10, 'LIMIT', 10.50) RETURNING id",
            TRADER,
            side,
        )
    for sql in (
        "UPDATE orders SET approved_at = now() WHERE id = $1",
        "UPDATE orders SET routed_at = now() WHERE id = $1",
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue) VALUES ($1, 10, 10.5, 'X')",
    ):
        async with conn.transaction():
            await conn.execute(_set_caller("service_role", None))
            await conn.execute(sql, order_id)
    return time.perf_counter() - start


async def write_path(
    admin: asyncpg.Connection,
    owner_url: str,
    suffix: str,
    orders: int,
    rounds: int,
    clients: int,
    pgbench_seconds: int,
    names: list[str],
) -> None:
    urls = {}
    for mode in ("with", "without"):
        name = f"bench_positions_{mode}_{suffix}"
        names.append(name)
        urls[mode] = await _create(admin, owner_url, name)
    owner = await asyncpg.connect(libpq_url(urls["without"]))
    await owner.execute(WITHOUT_POSITIONS)
    await owner.close()
    api = {
        mode: await asyncpg.connect(libpq_url(with_user(url, "authenticator")))
        for mode, url in urls.items()
    }
    times: dict[str, list[float]] = {"with": [], "without": []}
    for i in range(20):  # warm both up
        for mode in ("with", "without"):
            await _one_order(api[mode], "BUY" if i % 2 else "SELL")
    for i in range(rounds * orders):
        side = "BUY" if i % 2 else "SELL"
        for mode in ("without", "with") if i % 2 else ("with", "without"):
            times[mode].append(await _one_order(api[mode], side))
    for conn in api.values():
        await conn.close()
    plain, kept = (statistics.median(times[m]) * 1000 for m in ("without", "with"))
    paired = statistics.median(
        (w - p) * 1000 for w, p in zip(times["with"], times["without"], strict=True)
    )
    print(
        f"write path, {rounds * orders} orders each, alternating (submit, approve, route, fill):"
        f" median without positions {plain:.3f} ms/order, with them {kept:.3f} ms/order;"
        f" median paired difference {paired:+.3f} ms/order ({paired / plain * 100:+.1f}%)"
    )
    pgbench = _pgbench()
    if pgbench is None:
        print("pgbench: SKIPPED (not installed; set PGBENCH to its path)")
        return
    tps: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for mode in ("without", "with"):
            tps[mode].append(
                await asyncio.to_thread(
                    _pgbench_tps, pgbench, urls[mode], clients, pgbench_seconds, PGBENCH_SCRIPT
                )
            )
    plain_tps, kept_tps = (statistics.median(tps[m]) for m in ("without", "with"))
    paired = statistics.median(w / p - 1 for w, p in zip(tps["with"], tps["without"], strict=True))
    print(
        f"pgbench submit-and-fill, {clients} clients, {rounds} x {pgbench_seconds} s each:"
        f" without positions {plain_tps:.0f} tps, with them {kept_tps:.0f} tps"
        f" ({(kept_tps / plain_tps - 1) * 100:+.1f}%), median paired ratio {paired * 100:+.1f}%;"
        f" runs without {[round(t) for t in tps['without']]}, with {[round(t) for t in tps['with']]}"
    )


async def run(owner_url: str, args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(libpq_url(owner_url))
    suffix = uuid.uuid4().hex[:8]
    names: list[str] = []
    try:
        if args.only in (None, "read"):
            names.append(f"bench_positions_read_{suffix}")
            read_url = await _create(admin, owner_url, names[-1])
            await read_path(read_url, args.orders, args.symbols, args.reads)
        if args.only == "read":
            return
        await write_path(
            admin,
            owner_url,
            suffix,
            args.write_orders,
            args.rounds,
            args.clients,
            args.pgbench_seconds,
            names,
        )
    finally:
        for name in names:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--write-orders", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pgbench-seconds", type=int, default=5)
    parser.add_argument("--only", choices=("read", "write"), help="one of the two parts")
    args = parser.parse_args()
    url = Settings.from_env().database_url
    if url:
        asyncio.run(run(url, args))
        return
    with embedded.throwaway("order-api-bench-") as server:
        asyncio.run(run(server.owner_url.render_as_string(hide_password=False), args))


if __name__ == "__main__":
    main()
