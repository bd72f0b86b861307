"""The read path: the heavy and the typical trader's positions, interleaved with their W1-like
page, on a database built here or on an existing one (read only)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid

import asyncpg

from app.db.session import _SET_CALLER_SQL
from app.db.urls import libpq_url, with_user
from app.orders import fields
from app.positions.queries import COLUMNS
from app.settings import Settings
from bench.positions import TRADER

# The API's default STATEMENT_TIMEOUT_MS, set with the caller as the API sets it.
STATEMENT_TIMEOUT_MS = str(Settings.__dataclass_fields__["statement_timeout_ms"].default)


async def _load(owner: asyncpg.Connection, orders: int, symbols: int, typical: int) -> None:
    """TRADER's ``orders`` filled orders over ``symbols`` symbols, and ``typical`` more traders
    with 1 to 100 filled orders over 1 to 5 symbols each, set-wise (the owner bypasses row
    level security on the embedded server; every trigger runs, positions included)."""
    await owner.execute(
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
        " SELECT t.id, 'S' || (i % t.symbols),"
        "        CASE WHEN random() < 0.55 THEN 'BUY' ELSE 'SELL' END,"
        "        1 + (random() * 99)::int, 'MARKET'"
        "   FROM (SELECT $1::uuid AS id, $2::int AS orders, $3::int AS symbols"
        "         UNION ALL"
        "         SELECT gen_random_uuid(), 1 + (random() * 99)::int, 1 + (random() * 4)::int"
        "           FROM generate_series(1, $4)) t,"
        "        generate_series(1, t.orders) i",
        TRADER,
        orders,
        symbols,
        typical,
    )
    await owner.execute("UPDATE orders SET approved_at = now()")
    await owner.execute("UPDATE orders SET routed_at = now()")
    await owner.execute(
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue, commission)"
        " SELECT id, quantity, round((90 + random() * 20)::numeric, 2), 'X', 1.00 FROM orders"
    )
    # One statement gave every order the same created_at (the lifecycle trigger sets it to
    # now()), which a page sorted by created_at cannot use; an hour of distinct times, as
    # separate submits would have, on this benchmark's database only.
    await owner.execute("ALTER TABLE orders DISABLE TRIGGER USER")
    await owner.execute(
        "UPDATE orders o SET created_at = o.created_at - make_interval(secs => n.i * 0.1)"
        "  FROM (SELECT id, row_number() OVER (PARTITION BY trader_id ORDER BY id) AS i"
        "          FROM orders) n"
        " WHERE o.id = n.id"
    )
    await owner.execute("ALTER TABLE orders ENABLE TRIGGER USER")
    await owner.execute(
        "INSERT INTO market_prices (symbol, price)"
        " SELECT 'S' || i, 100.00 FROM generate_series(0, $1 - 1) i",
        symbols,
    )
    # Each fill rewrote its positions' rows; autovacuum would have cleared the dead versions
    # on a database in use.
    await owner.execute("VACUUM ANALYZE")


W1_ORDERS = (
    f"SELECT {fields.ORDER.columns} FROM orders WHERE trader_id = $1"
    " ORDER BY created_at DESC, id DESC LIMIT 20"
)
W1_FILLS = (
    f"SELECT {fields.FILL.columns} FROM fills WHERE order_id = ANY($1::uuid[])"
    ' ORDER BY order_id, "timestamp", id'
)
POSITIONS = f"SELECT {COLUMNS} FROM trader_positions(NULL, $1::cost_basis_method)"
KINDS = ("FIFO", "AVERAGE_COST", "W1 page")
LABELS = {
    "FIFO": "positions(FIFO)",
    "AVERAGE_COST": "positions(AVERAGE_COST)",
    "W1 page": "W1-like page (20 orders + fills)",
}

# The heaviest trader (most orders), and the median trader by orders among those with
# positions. Owner-side statistics, not timed.
PICK = """
WITH counts AS (SELECT trader_id, count(*) AS orders FROM public.orders GROUP BY trader_id),
     holders AS (SELECT c.* FROM counts c
                  WHERE EXISTS (SELECT 1 FROM public.positions p WHERE p.trader_id = c.trader_id))
(SELECT 'heavy' AS who, trader_id, orders FROM counts ORDER BY orders DESC, trader_id LIMIT 1)
UNION ALL
(SELECT 'typical', trader_id, orders FROM holders ORDER BY orders, trader_id
  OFFSET (SELECT count(*) / 2 FROM holders) LIMIT 1)
"""
SIZE = """
SELECT (SELECT count(*) FROM public.fills f JOIN public.orders o ON o.id = f.order_id
         WHERE o.trader_id = $1) AS fills,
       (SELECT count(*) FROM public.positions
         WHERE trader_id = $1 AND method = 'FIFO') AS symbols,
       (SELECT count(*) FROM public.positions p JOIN public.market_prices m USING (symbol)
         WHERE p.trader_id = $1 AND p.method = 'FIFO') AS priced,
       (SELECT count(*) FROM (SELECT DISTINCT trader_id FROM public.positions) t) AS holders
"""
# The function's own query as trader_positions(NULL, 'FIFO') runs it (row level security
# picks the trader), so that its plan shows which index it reads.
POSITIONS_BODY = (
    "SELECT v.* FROM public.position_view v WHERE v.method = 'FIFO'"
    " AND (NULL::uuid IS NULL OR v.trader_id = NULL::uuid) ORDER BY v.symbol"
)


def _claims(trader: uuid.UUID) -> str:
    return json.dumps({"sub": str(trader), "role": "authenticated"}, separators=(",", ":"))


async def _read(
    conn: asyncpg.Connection, trader: uuid.UUID, claims: str, kind: str
) -> tuple[float, int]:
    """One read as the API sends it for ``trader``: BEGIN READ ONLY, the caller's settings
    (bound parameters), the statement(s), COMMIT; prepared (asyncpg's statement cache).
    Its time in ms and the rows it read."""
    start = time.perf_counter()
    await conn.execute("BEGIN READ ONLY")
    await conn.execute(_SET_CALLER_SQL, "authenticated", claims, STATEMENT_TIMEOUT_MS)
    if kind == "W1 page":
        rows = await conn.fetch(W1_ORDERS, trader)
        rows += await conn.fetch(W1_FILLS, [row["id"] for row in rows])
    else:
        rows = await conn.fetch(POSITIONS, kind)
    await conn.execute("COMMIT")
    return (time.perf_counter() - start) * 1000, len(rows)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def _pick(owner: asyncpg.Connection) -> dict[str, uuid.UUID]:
    traders = {}
    for who, trader, orders in await owner.fetch(PICK):
        size = await owner.fetchrow(SIZE, trader)
        print(
            f"  {who} trader {trader}: {orders} orders, {size['fills']} fills,"
            f" {size['symbols']} positions per method ({size['priced']} with a market price)"
            f" [{size['holders']} traders hold positions]"
        )
        traders[who] = trader
    return traders


async def _explain(owner: asyncpg.Connection, trader: uuid.UUID) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the FIFO positions read as ``trader`` (role and claims
    local to a read-only transaction that is rolled back)."""
    await owner.execute("BEGIN READ ONLY")
    try:
        await owner.execute(_SET_CALLER_SQL, "authenticated", _claims(trader), STATEMENT_TIMEOUT_MS)
        for sql in (POSITIONS.replace("$1::cost_basis_method", "'FIFO'"), POSITIONS_BODY):
            await owner.fetch(sql)  # the function compiled and its plan cached, as in the API
            print(f"  EXPLAIN (ANALYZE, BUFFERS) {sql}")
            for (line,) in await owner.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"):
                print(f"    {line}")
    finally:
        await owner.execute("ROLLBACK")


async def measure(url: str, reads: int, rounds: int) -> None:
    """Reads the database at ``url`` (the owner's login) and writes nothing: every transaction
    is read only. The heavy and the typical trader's positions by both methods and their
    W1-like page, interleaved read by read, as the API reads them (``authenticator``)."""
    read_only = {"default_transaction_read_only": "on"}
    owner = await asyncpg.connect(libpq_url(url), server_settings=read_only)
    traders = await _pick(owner)
    api = await asyncpg.connect(
        libpq_url(with_user(url, "authenticator")), server_settings=read_only
    )
    readers = [(who, trader, kind) for who, trader in traders.items() for kind in KINDS]
    claims = {trader: _claims(trader) for trader in traders.values()}
    seen = {}
    for who, trader, kind in readers * 50:  # warm up, plans cached
        seen[who, kind] = (await _read(api, trader, claims[trader], kind))[1]
    # Read as the trader (row level security): positions are one row per symbol, and the
    # page 20 orders and their fills.
    print("  rows per read: " + ", ".join(f"{w} {k} {n}" for (w, k), n in seen.items()))
    p50s: dict[tuple[str, str], list[float]] = {(who, kind): [] for who, _, kind in readers}
    p99s: dict[tuple[str, str], list[float]] = {key: [] for key in p50s}
    for number in range(1, rounds + 1):
        load = os.getloadavg()[0]
        times: dict[tuple[str, str], list[float]] = {key: [] for key in p50s}
        for i in range(reads):  # each reader goes first in turn
            for who, trader, kind in readers[i % len(readers) :] + readers[: i % len(readers)]:
                times[who, kind].append((await _read(api, trader, claims[trader], kind))[0])
        print(
            f"  round {number}, {reads} reads each (load average {load:.2f} before,"
            f" {os.getloadavg()[0]:.2f} after):"
        )
        for key, values in times.items():
            p50s[key].append(_percentile(values, 0.5))
            p99s[key].append(_percentile(values, 0.99))
            print(
                f"    {key[0]} {LABELS[key[1]]}: p50 {p50s[key][-1]:.3f}, p99 {p99s[key][-1]:.3f} ms"
            )
    await api.close()
    print(f"  medians of the {rounds} rounds' p50 and p99:")
    for key in p50s:
        print(
            f"    {key[0]} {LABELS[key[1]]}: p50 {statistics.median(p50s[key]):.3f} ms,"
            f" p99 {statistics.median(p99s[key]):.3f} ms"
        )
    await _explain(owner, traders["heavy"])
    await owner.close()


async def read_path(url: str, args: argparse.Namespace) -> None:
    owner = await asyncpg.connect(libpq_url(url))
    start = time.perf_counter()
    await _load(owner, args.orders, args.symbols, args.typical_traders)
    loaded = time.perf_counter() - start
    await owner.close()
    print(f"read path: built in {loaded:.1f} s")
    await measure(url, args.reads, args.read_rounds)
