"""The write path: submit-and-fill with and without migration 012's trigger."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from app.db.urls import libpq_url, with_user
from bench import pairs
from bench.audit_chain import _create, _pgbench, _pgbench_tps
from bench.positions import TRADER, set_caller

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


async def _one_order(conn: asyncpg.Connection, side: str) -> float:
    start = time.perf_counter()
    async with conn.transaction():
        await conn.execute(set_caller("authenticated"))
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
            await conn.execute(set_caller("service_role", None))
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
    plain, kept, paired = pairs.times_ms(times)
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
    plain_tps, kept_tps, paired = pairs.rates(tps)
    print(
        f"pgbench submit-and-fill, {clients} clients, {rounds} x {pgbench_seconds} s each:"
        f" without positions {plain_tps:.0f} tps, with them {kept_tps:.0f} tps"
        f" ({(kept_tps / plain_tps - 1) * 100:+.1f}%), median paired ratio {paired * 100:+.1f}%;"
        f" {pairs.runs(tps)}"
    )
