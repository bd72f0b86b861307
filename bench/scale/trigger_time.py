"""python -m bench.scale.trigger_time: the database time of each order trigger per insert.

    python -m bench.scale.trigger_time [--rounds 4] [--inserts 1000]

What the HTTP benchmark cannot resolve on a shared machine (bench/scale/rate_limit.py: its
runs vary by more than the cost measured): the time PostgreSQL spends in each BEFORE/AFTER
INSERT trigger of ``orders``, from ``pg_stat_user_functions`` (``track_functions = 'pl'``),
with ``order_limits.max_orders_per_minute`` unset and set (``--limit``), rounds alternating.
In a throwaway embedded PostgreSQL migrated to head: ``--inserts`` orders per round, each as
``authenticated`` for one of 500 traders (its own claims, as the API sets them), in one
server-side loop so that no client time is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import asyncpg

from app.db import embedded
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url

LOOP = """
CREATE SCHEMA bench_trigger_time;
GRANT USAGE ON SCHEMA bench_trigger_time TO authenticated;
CREATE FUNCTION bench_trigger_time.insert_orders(n integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t uuid;
BEGIN
  FOR i IN 1..n LOOP
    t := ('00000000-0000-4000-8000-' || lpad((i % 500)::text, 12, '0'))::uuid;
    PERFORM set_config('request.jwt.claims',
        json_build_object('role', 'authenticated', 'sub', t)::text, true);
    INSERT INTO public.orders (trader_id, symbol, side, quantity, order_type, price)
    VALUES (t, 'AAPL', 'BUY', 10, 'LIMIT', 10.00);
  END LOOP;
END $$;
GRANT EXECUTE ON FUNCTION bench_trigger_time.insert_orders(integer) TO authenticated;
"""


async def insert_orders(api_dsn: str, n: int) -> None:
    conn = await asyncpg.connect(api_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('role', 'authenticated', true)")
            await conn.execute("SELECT bench_trigger_time.insert_orders($1)", n)
    finally:
        await conn.close()  # its function statistics reach pg_stat_user_functions


async def measure(owner: str, api: str, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(owner)
    await conn.execute("ALTER DATABASE postgres SET track_functions = 'pl'")
    await conn.execute(LOOP)
    await insert_orders(api, 500)  # warm up
    times: dict[str, dict[str, list[float]]] = {"unset": {}, "set": {}}
    for n in range(2 * args.rounds):
        arm = ("unset", "set")[(n + n // 2) % 2]  # unset, set, set, unset, ...
        limit = args.limit if arm == "set" else None
        await conn.execute("UPDATE order_limits SET max_orders_per_minute = $1", limit)
        await conn.execute("SELECT pg_stat_reset()")
        await insert_orders(api, args.inserts)
        await asyncio.sleep(1.5)  # a backend's statistics are flushed within a second
        rows = await conn.fetch(
            "SELECT funcname, self_time / calls * 1000 AS us FROM pg_stat_user_functions"
            " WHERE funcname LIKE 'orders\\_%' AND calls > 0"
        )
        for row in rows:
            times[arm].setdefault(row["funcname"], []).append(row["us"])
    await conn.close()
    print("| trigger function | unset: µs per insert (median) | set |")
    print("|---|---|---|")
    for name in sorted(times["unset"]):
        unset, limited = times["unset"][name], times["set"].get(name, [0.0])
        print(f"| {name} | {statistics.median(unset):.0f} | {statistics.median(limited):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.trigger_time", description=__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="of each arm")
    parser.add_argument("--inserts", type=int, default=1000, help="per round")
    parser.add_argument("--limit", type=int, default=10_000, help="max_orders_per_minute when set")
    args = parser.parse_args()
    with embedded.throwaway("bench-trigger-time-") as server:
        owner = server.owner_url.render_as_string(hide_password=False)
        upgrade_to_head(owner)
        api = server.url_for("authenticator").render_as_string(hide_password=False)
        asyncio.run(measure(libpq_url(owner), libpq_url(api), args))


if __name__ == "__main__":
    main()
