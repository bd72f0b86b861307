"""The data set: orders over many traders plus one big trader, with fills and audit rows.

Rows are what the product would have written (migrations 001-004): an order is submitted
(audit SUBMITTED), then either stays PENDING (1 in 10), is cancelled by its trader (1 in
10: CANCELLED, with the reason the API writes), or is approved, routed and filled in one
fill by the paper venue (APPROVED, EXECUTED "sent to venue", FILLED), with the fill's
commission as the venue computes it. Timestamps are a year of history, one order every
``365 days / orders``, each order's events 50 ms apart, so pages sort as in production.

Loading one statement per chunk (generate_series, data-modifying CTEs) with the triggers
off (``session_replication_role = replica``, superuser only) is what makes 10 million
orders a matter of minutes: the rows the triggers would add (audit rows, the order's fill
state) are written by the same statement instead, and ``verify`` then checks, over every
row, that they are exactly what the triggers would have derived. Audit rows are inserted
in time order, so ``execution_logs.seq`` (an identity column) numbers them as commits
would have.

Traders: ``trader_uuid(n)``; n = 0 is the big trader (every k-th order, ``big_orders`` of
them), 1..``traders`` share the rest evenly.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass

import asyncpg

CHUNK = 50_000
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "NFLX")
VENUE = "PAPER"  # app/engine/venue.py's paper venue


def trader_uuid(n: int) -> uuid.UUID:
    """Trader ``n``'s id; the same expression in SQL is ``TRADER_SQL``."""
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012d}")


TRADER_SQL = "('00000000-0000-4000-8000-' || lpad(({n})::text, 12, '0'))::uuid"
# Order number i's id: derived from i, so that pgbench can address any order without a
# lookup (md5 makes the ids as scattered in the index as random ones).
ORDER_SQL = "md5('order-' || ({i})::text)::uuid"
# Which trader owns order i (pgbench's expression language has the same operators).
OWNER_SQL = "CASE WHEN {i} % {every} = 0 THEN 0 ELSE 1 + ({i} - {i} / {every} - 1) % {traders} END"


@dataclass(frozen=True)
class Shape:
    orders: int
    traders: int = 10_000
    big_orders: int = 50_000

    @property
    def every(self) -> int:
        """The big trader owns orders number 0, k, 2k, ..."""
        return max(2, self.orders // self.big_orders)


# One chunk: orders [$1, $2). Columns the triggers derive (status, fill state, approval and
# routing times, updated_at) are computed here as the triggers would; `verify` checks them.
CHUNK_SQL = f"""
WITH spec AS (
    SELECT i, {OWNER_SQL.format(i="i", every="$3", traders="$4")} AS trader,
           now() - interval '365 days' + (i * (interval '365 days' / $5::float8)) AS at,
           CASE h % 10 WHEN 0 THEN 'PENDING' WHEN 1 THEN 'CANCELLED' ELSE 'FILLED' END AS fate,
           (ARRAY{list(SYMBOLS)!r})[1 + (h / 10) % {len(SYMBOLS)}] AS symbol,
           CASE WHEN (h / 80) % 2 = 0 THEN 'BUY' ELSE 'SELL' END AS side,
           1 + (h / 160) % 500 AS quantity,
           CASE WHEN (h / 80000) % 3 = 0 THEN 'MARKET' ELSE 'LIMIT' END AS order_type,
           CASE WHEN (h / 80000) % 3 = 0 THEN NULL
                ELSE round(20 + ((h / 240000) % 9000) / 37.0, 2) END AS price
      -- h: a hash of i, so that a trader's orders do not all share one fate or symbol
      FROM generate_series($1::bigint, $2::bigint - 1) AS i,
           LATERAL (SELECT hashint8(i) & 2147483647 AS h) AS hashed
), new_orders AS (
    INSERT INTO public.orders (id, trader_id, symbol, side, quantity, order_type, price, status,
        filled_quantity, average_fill_price, status_reason, approved_at, routed_at,
        created_at, updated_at)
    SELECT {ORDER_SQL.format(i="i")}, {TRADER_SQL.format(n="trader")}, symbol, side, quantity,
           order_type::public.order_type_enum, price, fate::public.order_status_enum,
           CASE WHEN fate = 'FILLED' THEN quantity ELSE 0 END,
           CASE WHEN fate = 'FILLED' THEN round(coalesce(price, 100.00), 6) END,
           CASE WHEN fate = 'CANCELLED' THEN 'cancelled by trader' END,
           CASE WHEN fate = 'FILLED' THEN at + interval '50 ms' END,
           CASE WHEN fate = 'FILLED' THEN at + interval '100 ms' END,
           at,
           at + CASE fate WHEN 'FILLED' THEN interval '150 ms'
                          WHEN 'CANCELLED' THEN interval '1 s' ELSE interval '0' END
      FROM spec
    RETURNING id, trader_id, status, quantity, price, created_at
), new_fills AS (
    INSERT INTO public.fills (order_id, trader_id, "timestamp", quantity_filled, price_at_fill,
        venue, commission, created_at)
    SELECT id, trader_id, created_at + interval '150 ms', quantity, coalesce(price, 100.00),
           '{VENUE}', greatest(1.00, round(quantity * 0.005, 2)), created_at + interval '150 ms'
      FROM new_orders WHERE status = 'FILLED'
    RETURNING order_id
)
INSERT INTO public.execution_logs (order_id, trader_id, action, status, "timestamp", reason,
    retry_attempt, created_at{{hash_column}})
SELECT o.id, o.trader_id, e.action::public.action_enum, e.status::public.order_status_enum,
       o.created_at + e.after, e.reason, e.retry, o.created_at + e.after{{hash_value}}
  FROM new_orders o
  CROSS JOIN LATERAL (VALUES
      (0, 'SUBMITTED', 'PENDING', interval '0', NULL, NULL::integer),
      (1, 'APPROVED', 'PENDING', interval '50 ms', NULL, NULL),
      (2, 'EXECUTED', 'PENDING', interval '100 ms', 'sent to venue', 0),
      (3, 'FILLED', 'FILLED', interval '150 ms', NULL, NULL),
      (1, 'CANCELLED', 'CANCELLED', interval '1 s', 'cancelled by trader', NULL)
  ) AS e(step, action, status, after, reason, retry)
 WHERE e.step = 0
    OR (o.status = 'FILLED' AND e.action IN ('APPROVED', 'EXECUTED', 'FILLED'))
    OR (o.status = 'CANCELLED' AND e.action = 'CANCELLED')
 ORDER BY o.created_at + e.after, o.id
"""

# Migration 005 (when present) chains each order's audit rows: prev_hash is the hash of the
# order's previous row (by seq), hash the SHA-256 of the row's canonical form. Rows are
# inserted with a placeholder hash (the column is NOT NULL), then, in the same transaction,
# chained rank by rank: each order's trail here is at most 4 rows, in this order.
HAS_CHAIN = """SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute
    WHERE attrelid = 'public.execution_logs'::regclass AND attname = 'hash'
      AND NOT attisdropped)"""
HAS_EVENT_POSITIONS = """SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute
    WHERE attrelid = 'public.execution_logs'::regclass AND attname = 'xact'
      AND NOT attisdropped)"""
PLACEHOLDER = (", hash", ", decode(repeat('00', 32), 'hex')")
RANK = """CASE {e}.action WHEN 'SUBMITTED' THEN 1 WHEN 'APPROVED' THEN 2 WHEN 'CANCELLED' THEN 2
    WHEN 'EXECUTED' THEN 3 WHEN 'FILLED' THEN 4 END"""
CHAIN_PREVIOUS = f"""
UPDATE public.execution_logs e SET prev_hash = p.hash
  FROM public.execution_logs p
 WHERE e.seq > $1 AND {RANK.format(e="e")} = $2
   AND p.order_id = e.order_id AND p.seq > $1 AND {RANK.format(e="p")} = $2 - 1"""
CHAIN_HASH = f"""
UPDATE public.execution_logs e
   SET hash = pg_catalog.sha256(
       pg_catalog.convert_to(public.execution_logs_canonical(e), 'UTF8'))
 WHERE e.seq > $1 AND {RANK.format(e="e")} = $2"""
CHAIN_CHECK = """
SELECT count(*) FROM public.execution_logs e
  LEFT JOIN LATERAL (SELECT p.hash FROM public.execution_logs p
                      WHERE p.order_id = e.order_id AND p.seq < e.seq
                      ORDER BY p.seq DESC LIMIT 1) p ON true
 WHERE e.prev_hash IS DISTINCT FROM p.hash
    OR e.hash IS DISTINCT FROM pg_catalog.sha256(
        pg_catalog.convert_to(public.execution_logs_canonical(e), 'UTF8'))"""

# Each query counts rows that break a rule the triggers keep; every count must be 0.
CHECKS = {
    "orders whose fill state is not their fills'": """
        SELECT count(*) FROM public.orders o
          LEFT JOIN (SELECT order_id, sum(quantity_filled) AS q,
                            round(sum(quantity_filled * price_at_fill) / sum(quantity_filled), 6)
                              AS avg
                       FROM public.fills GROUP BY order_id) f ON f.order_id = o.id
         WHERE o.filled_quantity <> coalesce(f.q, 0)
            OR o.average_fill_price IS DISTINCT FROM f.avg""",
    "fills whose trader is not their order's": """
        SELECT count(*) FROM public.fills f JOIN public.orders o ON o.id = f.order_id
         WHERE f.trader_id <> o.trader_id""",
    "orders whose audit trail does not match their state": """
        SELECT count(*) FROM public.orders o
         WHERE (SELECT array_agg(l.action::text ORDER BY l.seq) FROM public.execution_logs l
                 WHERE l.order_id = o.id)
               IS DISTINCT FROM CASE
                   WHEN o.status = 'PENDING' AND o.approved_at IS NULL THEN ARRAY['SUBMITTED']
                   WHEN o.status = 'CANCELLED' AND o.approved_at IS NULL
                       THEN ARRAY['SUBMITTED', 'CANCELLED']
                   WHEN o.status = 'FILLED'
                       THEN ARRAY['SUBMITTED', 'APPROVED', 'EXECUTED', 'FILLED']
               END""",
    "audit rows of another trader than their order's": """
        SELECT count(*) FROM public.execution_logs l JOIN public.orders o ON o.id = l.order_id
         WHERE l.trader_id <> o.trader_id""",
    "audit rows without a feed position": "SELECT count(*) FROM public.execution_logs WHERE seq IS NULL",
}

# The product's own triggers, replayed over a sample: each sampled order is submitted again
# (clientOrderId = the sample's id), approved, routed, filled and cancelled as its row says,
# through every trigger; the copy must end exactly as the loaded row and audit trail are.
REPLAY = (
    """CREATE TEMP TABLE sample ON COMMIT DROP AS
       SELECT * FROM public.orders TABLESAMPLE SYSTEM (1) LIMIT 2000""",
    """INSERT INTO public.orders (trader_id, client_order_id, symbol, side, quantity,
           order_type, price)
       SELECT trader_id, id::text, symbol, side, quantity, order_type, price FROM sample""",
    """CREATE TEMP VIEW replayed AS
       SELECT s.id AS loaded, o.id AS copy FROM sample s
         JOIN public.orders o ON o.trader_id = s.trader_id AND o.client_order_id = s.id::text""",
    """UPDATE public.orders o SET approved_at = now() FROM sample s, replayed r
        WHERE r.loaded = s.id AND o.id = r.copy AND s.approved_at IS NOT NULL""",
    """UPDATE public.orders o SET routed_at = now() FROM sample s, replayed r
        WHERE r.loaded = s.id AND o.id = r.copy AND s.routed_at IS NOT NULL""",
    """INSERT INTO public.fills (order_id, quantity_filled, price_at_fill, venue, commission)
       SELECT r.copy, f.quantity_filled, f.price_at_fill, f.venue, f.commission
         FROM replayed r JOIN public.fills f ON f.order_id = r.loaded""",
    """UPDATE public.orders o SET status = 'CANCELLED', status_reason = s.status_reason
         FROM sample s, replayed r
        WHERE r.loaded = s.id AND o.id = r.copy AND s.status = 'CANCELLED'""",
)
REPLAY_DIFFERENCES = """
WITH trail AS (
    SELECT order_id, array_agg((action, status, reason, retry_attempt)::text ORDER BY seq) AS t
      FROM public.execution_logs
     WHERE order_id IN (SELECT loaded FROM replayed UNION ALL SELECT copy FROM replayed)
     GROUP BY order_id
)
SELECT count(*) FILTER (WHERE (l.status, l.filled_quantity, l.average_fill_price,
                               l.status_reason, lt.t)
                              IS DISTINCT FROM (c.status, c.filled_quantity,
                               c.average_fill_price, c.status_reason, ct.t)),
       count(*)
  FROM replayed r
  JOIN public.orders l ON l.id = r.loaded JOIN trail lt ON lt.order_id = r.loaded
  JOIN public.orders c ON c.id = r.copy JOIN trail ct ON ct.order_id = r.copy
"""


def progress(text: str) -> None:
    # \r and "erase to the end of the line": one line that updates, as a progress bar does.
    print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)


async def load(owner_dsn: str, shape: Shape) -> None:
    """Load ``shape`` into an empty database (refuses one that has orders)."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        if await conn.fetchval("SELECT EXISTS (SELECT FROM public.orders)"):
            raise SystemExit("the database already has orders: load into an empty one")
        if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            raise SystemExit("loading needs a superuser (session_replication_role)")
        chained = await conn.fetchval(HAS_CHAIN)
        column, value = PLACEHOLDER if chained else ("", "")
        if await conn.fetchval(HAS_EVENT_POSITIONS):
            # Migration 013's trigger sets them, but loading runs without triggers: key 0
            # puts loaded rows first, as the migration did for the rows it found.
            column += ", xact, stream_key"
            value += ", '0'::xid8, '0'::xid8"
        chunk_sql = CHUNK_SQL.format(hash_column=column, hash_value=value)
        await conn.execute("SET session_replication_role = replica")
        started = time.monotonic()
        for start in range(0, shape.orders, CHUNK):
            end = min(shape.orders, start + CHUNK)
            async with conn.transaction():
                before = await conn.fetchval(
                    "SELECT coalesce(max(seq), 0) FROM public.execution_logs"
                )
                await conn.execute(chunk_sql, start, end, shape.every, shape.traders, shape.orders)
                for rank in range(1, 5) if chained else ():
                    if rank > 1:
                        await conn.execute(CHAIN_PREVIOUS, before, rank)
                    await conn.execute(CHAIN_HASH, before, rank)
            elapsed = time.monotonic() - started
            progress(
                f"loading orders {end:,}/{shape.orders:,} ({100 * end // shape.orders}%)"
                f" {elapsed:.0f} s, ~{elapsed * (shape.orders - end) / end:.0f} s left"
            )
        progress(f"loaded {shape.orders:,} orders in {time.monotonic() - started:.0f} s\n")
        await conn.execute("RESET session_replication_role")
        for table in ("orders", "fills", "execution_logs"):
            progress(f"vacuum analyze {table}")
            await conn.execute(f"VACUUM ANALYZE public.{table}")
        progress("vacuumed and analyzed\n")
    finally:
        await conn.close()


async def verify(owner_dsn: str) -> dict[str, int]:
    """Row counts; raises when a row breaks a rule the product's triggers keep."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        checks = dict(CHECKS)
        if await conn.fetchval(HAS_CHAIN):
            checks["audit rows whose hash chain is broken (migration 005)"] = CHAIN_CHECK
        for rule, sql in checks.items():
            progress(f"checking: {rule}")
            broken = await conn.fetchval(sql)
            if broken:
                raise AssertionError(f"{broken} {rule}")
        # And the product's own triggers, run over a sample: re-deriving an order from its
        # fills must change nothing and write no audit row.
        replay = conn.transaction()
        await replay.start()
        try:
            for statement in REPLAY:
                await conn.execute(statement)
            different, replayed = await conn.fetchrow(REPLAY_DIFFERENCES)
        finally:
            await replay.rollback()  # leave nothing behind
        if different or not replayed:
            raise AssertionError(
                f"{different} of {replayed} orders replayed through the triggers differ"
            )
        progress("checked: the data is what the triggers would have written\n")
        return await _counts(conn)
    finally:
        await conn.close()


async def counts(owner_dsn: str) -> dict[str, int]:
    """The row counts of the three tables, unchecked."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        return await _counts(conn)
    finally:
        await conn.close()


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        table: await conn.fetchval(f"SELECT count(*) FROM public.{table}")
        for table in ("orders", "fills", "execution_logs")
    }
