"""Positions' cost: reading them (a heavy and a typical trader), and keeping them when writing.

    python -m bench.positions [--orders 5000] [--symbols 20] [--typical-traders 200]
                                 [--reads 1000] [--read-rounds 3] [--write-orders 300]
                                 [--rounds 3] [--clients 4] [--pgbench-seconds 5] [--only read|write]
    python -m bench.positions --existing OWNER_URL [--reads 1000] [--read-rounds 3]

Uses DATABASE_URL (a role that may create databases; it owns what it creates) when set;
otherwise a throwaway embedded PostgreSQL deleted at the end.

Read path: a database with one heavy trader (``--orders`` filled orders over ``--symbols``
symbols, both sides, so positions open, close and cross zero) and ``--typical-traders``
traders of 1 to 100 orders, loaded set-wise through the real triggers; or, with
``--existing``, a database that is already there (the scale benchmark's), of which nothing
is written: every transaction is read only. The heaviest trader (most orders) and the
median trader by orders among those with positions are read, interleaved one by one, as
each trader (``authenticator`` logged in, ``authenticated`` with the trader's claims as
bound parameters in one READ ONLY transaction, prepared, as the API reads):
``trader_positions`` by FIFO, by AVERAGE_COST, and a W1-like page (the 20 newest orders
with their fills, the statements the resolvers send). ``--read-rounds`` rounds of
``--reads`` reads of each: each round's p50 and p99 in ms, round trip included, and their
medians. Then EXPLAIN (ANALYZE, BUFFERS) of the heavy trader's FIFO read, as that trader.

Write path: two databases at head, one with migration 012's trigger dropped. Orders alternate
between them one by one on one client (submit as the trader, approve, route, one fill as
service_role: four transactions, the sides alternating so fills open and close lots), then
``--rounds`` pgbench runs of ``--clients`` clients on each, alternating (one whole order per
transaction, by one of 1,000 traders in one of 10 symbols, either side). Medians, and the
median of the runs' paired ratios.
"""

from __future__ import annotations

import json
import uuid

TRADER = uuid.UUID("3f1d2c4b-5a69-4e87-9d0c-1b2a3c4d5e6f")


def set_caller(role: str, sub: uuid.UUID | None = TRADER) -> str:
    claims = json.dumps({"role": role, **({"sub": str(sub)} if sub else {})})
    return (
        f"SELECT set_config('role', '{role}', true),"
        f" set_config('request.jwt.claims', '{claims}', true)"
    )
