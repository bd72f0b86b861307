"""The hash chain's cost: on the write path (with and without it, same run) and to verify.

    python bench/audit_chain.py [--orders 300] [--rounds 4] [--verify-orders 20000]

Uses DATABASE_URL (a role that may create databases; it owns what it creates) when set;
otherwise a throwaway embedded PostgreSQL deleted at the end.

Write path: two databases at head, one with migration 005's chain trigger and index
removed (004's write path). Orders alternate between them one by one, on one client, so the
machine's noise hits both alike; each order is what the engine does to one (submit as the
trader, approve, route, one fill as service_role: four transactions, four audit rows). Reported: the median time per order of each, and the median paired difference.

Concurrent writers (when pgbench is installed: PGBENCH, else on PATH, else Debian's
/usr/lib/postgresql/*/bin): ``--clients`` pgbench clients as authenticator, each transaction
one whole order of its own (submit, approve, route, fill as service_role: four audit rows),
``--rounds`` runs of ``--pgbench-seconds`` on each database, alternating; transactions per second of
each. Clients write different orders, so a chain per order gives them no head to queue on.

Verification: ``--verify-orders`` orders are submitted, approved and routed in three
set-wise statements (three audit rows each), then ``audit verify`` reads them all as
compliance_auditor; rows per second, and what that makes of 10,000,000 rows.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import io
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from app.audit import commands
from app.audit.store import Selection
from app.db import embedded
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url, with_user
from app.settings import Settings
from bench import pairs

TRADER = uuid.UUID("5c3e9a10-7b2d-4f61-9e84-2a0d1c6b3f77")
WITHOUT_CHAIN = """
DROP TRIGGER execution_logs_zz_hash_chain ON public.execution_logs;
ALTER TABLE public.execution_logs ALTER COLUMN hash DROP NOT NULL;
DROP INDEX public.idx_execution_logs_chain;
"""


def _set_caller(role: str) -> str:
    claims = f'{{"role": "{role}", "sub": "{TRADER}"}}'
    return f"SELECT set_config('role', '{role}', true), set_config('request.jwt.claims', '{claims}', true)"


async def _one_order(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute(_set_caller("authenticated"))
        order_id = await conn.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
            " VALUES ($1, 'AAPL', 'BUY', 10, 'LIMIT', 10.50) RETURNING id",
            TRADER,
        )
    for sql in (
        "UPDATE orders SET approved_at = now() WHERE id = $1",
        "UPDATE orders SET routed_at = now() WHERE id = $1",
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue) VALUES ($1, 10, 10.5, 'X')",
    ):
        async with conn.transaction():
            await conn.execute(_set_caller("service_role"))
            await conn.execute(sql, order_id)


PGBENCH_SCRIPT = """BEGIN;
SELECT set_config('role', 'service_role', true), set_config('request.jwt.claims', '{"role": "service_role"}', true);
INSERT INTO orders (trader_id, symbol, side, quantity, order_type) VALUES (gen_random_uuid(), 'AAPL', 'BUY', 10, 'MARKET') RETURNING id AS order_id \\gset
UPDATE orders SET approved_at = now() WHERE id = :order_id;
UPDATE orders SET routed_at = now() WHERE id = :order_id;
INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue) VALUES (:order_id, 10, 10.5, 'X');
COMMIT;
"""


def _pgbench() -> str | None:
    found = os.environ.get("PGBENCH") or shutil.which("pgbench")
    return found or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))), None)


def _pgbench_tps(
    pgbench: str, url: str, clients: int, seconds: int, text: str = PGBENCH_SCRIPT
) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(text)
        script.flush()
        done = subprocess.run(
            [
                pgbench,
                "-n",
                "-M",
                "extended",
                "-c",
                str(clients),
                "-j",
                str(min(clients, 2)),
                "-T",
                str(seconds),
                "-f",
                script.name,
                libpq_url(with_user(url, "authenticator")),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    match = re.search(r"tps = ([0-9.]+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed: {done.stderr.strip() or done.stdout.strip()}")
    return float(match.group(1))


async def _timed_order(conn: asyncpg.Connection) -> float:
    start = time.perf_counter()
    await _one_order(conn)
    return time.perf_counter() - start


async def _create(admin: asyncpg.Connection, owner_url: str, name: str) -> str:
    await admin.execute(f"CREATE DATABASE {name}")
    url = make_url(owner_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(upgrade_to_head, url)
    return url


async def run(
    owner_url: str,
    orders: int,
    rounds: int,
    verify_orders: int,
    clients: int,
    pgbench_seconds: int,
) -> None:
    admin = await asyncpg.connect(libpq_url(owner_url))
    suffix = uuid.uuid4().hex[:8]
    names = {"with": f"bench_chain_{suffix}", "without": f"bench_plain_{suffix}"}
    try:
        urls = {mode: await _create(admin, owner_url, name) for mode, name in names.items()}
        owner = await asyncpg.connect(libpq_url(urls["without"]))
        for statement in WITHOUT_CHAIN.strip().split(";\n"):
            await owner.execute(statement)
        await owner.close()
        api = {
            mode: await asyncpg.connect(libpq_url(with_user(url, "authenticator")))
            for mode, url in urls.items()
        }
        times: dict[str, list[float]] = {"with": [], "without": []}
        for _ in range(20):  # warm both up
            for mode in ("with", "without"):
                await _one_order(api[mode])
        # Order by order, alternating which goes first: a burst of the machine's noise hits
        # both alike, and each pair gives one difference.
        for i in range(rounds * orders):
            for mode in ("without", "with") if i % 2 else ("with", "without"):
                times[mode].append(await _timed_order(api[mode]))
        for conn in api.values():
            await conn.close()
        plain, chained, paired = pairs.times_ms(times)
        print(
            f"write path, {rounds * orders} orders each, alternating (4 transactions, 4 audit"
            f" rows each): median without the chain {plain:.3f} ms/order, with it"
            f" {chained:.3f} ms/order; median paired difference {paired:+.3f} ms/order"
            f" ({paired / plain * 100:+.1f}%), {paired / 4 * 1000:+.0f} us per audit row"
        )

        pgbench = _pgbench()
        if pgbench is None:
            print("pgbench: SKIPPED (not installed; set PGBENCH to its path)")
        else:
            tps: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(rounds):
                for mode in ("without", "with"):
                    tps[mode].append(
                        await asyncio.to_thread(
                            _pgbench_tps, pgbench, urls[mode], clients, pgbench_seconds
                        )
                    )
            plain_tps, chained_tps, _ = pairs.rates(tps)
            print(
                f"pgbench, {clients} clients, {len(tps['with'])} x {pgbench_seconds} s each,"
                f" one order (4 audit rows) per transaction: without the chain"
                f" {plain_tps:.0f} tps, with it {chained_tps:.0f} tps"
                f" ({(chained_tps / plain_tps - 1) * 100:+.1f}%)"
            )

        owner = await asyncpg.connect(libpq_url(urls["with"]))
        await owner.execute(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
            " SELECT gen_random_uuid(), 'MSFT', 'BUY', 1, 'MARKET' FROM generate_series(1, $1)",
            verify_orders,
        )
        await owner.execute("UPDATE orders SET approved_at = now() WHERE approved_at IS NULL")
        await owner.execute("UPDATE orders SET routed_at = now() WHERE routed_at IS NULL")
        await owner.execute("ANALYZE execution_logs")
        total = await owner.fetchval("SELECT count(*) FROM execution_logs")
        await owner.close()
        api_url = with_user(urls["with"], "authenticator").render_as_string(hide_password=False)
        out = io.StringIO()
        start = time.perf_counter()
        code = await asyncio.to_thread(commands.verify_database, api_url, "none", Selection(), out)
        elapsed = time.perf_counter() - start
        assert code == 0, out.getvalue()
        rate = total / elapsed
        print(
            f"verify: {total} rows in {elapsed:.1f} s ({rate:,.0f} rows/s);"
            f" 10,000,000 rows extrapolate to {10_000_000 / rate / 60:.0f} min"
        )
    finally:
        for name in names.values():
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--verify-orders", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pgbench-seconds", type=int, default=5)
    args = parser.parse_args()
    options = (args.orders, args.rounds, args.verify_orders, args.clients, args.pgbench_seconds)
    url = Settings.from_env().database_url
    if url:
        asyncio.run(run(url, *options))
        return
    with embedded.throwaway("order-api-bench-") as server:
        asyncio.run(run(server.owner_url.render_as_string(hide_password=False), *options))


if __name__ == "__main__":
    main()
