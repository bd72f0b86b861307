"""How far one primary goes: submits and fills per database CPU-second, and what costs.

    python -m bench.primary --seconds 10 --rounds 3     # about 10 minutes on 2 cores

A throwaway embedded PostgreSQL, migrated to head, and pgbench (as ``authenticator``, prepared
statements) replaying two transactions:

- ``submit``: the one autocommit statement the API's submitOrder sends (W2 of bench.scale,
  built by bench/scale/pgbench.py's helpers), for a trader drawn from 100,000;
- ``fill``: that same submit, then the engine's transaction for the order as ``service_role``:
  approve, route, one fill of the whole quantity (app/orders/ledger.py's statements).

Each is run with every trigger, then with one cost taken away (an A/B on the scratch copy,
never a product setting): the hash chain trigger, the audit trigger (no execution_logs rows,
so no chain either), the order-rule triggers, the indexes only reads use (READ_INDEXES),
and the commit's WAL flush (``synchronous_commit = off``). Variants rotate within each
round so that the machine's other load falls on all of them alike; the report gives
medians. "Per core" is transactions per CPU-second of the PostgreSQL processes (from
/proc), which depends far less than wall-clock rates on how busy the rest of the machine is.

``--functions`` instead runs both with every trigger on and ``track_functions = 'pl'``, and
prints each function's own and total time per transaction, and the WAL bytes per
transaction: where the time goes, without switching anything off.

The scratch copy drops NOT NULL on execution_logs.hash once, so that the no-chain variant can
insert at all; nothing else of the schema changes between variants.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from app.db import embedded
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url
from app.orders import fields, writers
from bench.scale import cpu, pgbench
from bench.scale.dataset import TRADER_SQL

TRADERS = 100_000
SERVICE_CLAIMS = (
    '\'{"aud":"authenticated","exp":4102444800,"iat":1700000000,"role":"service_role"}\''
)


def _submit() -> str:
    trader = TRADER_SQL.format(n=":n")
    document = {name: pgbench.W2_ORDER.get(name, "NULL") for name in fields.SUBMIT_FIELDS}
    document |= {"quantity": "(:quantity)::int", "time_in_force": "'GTC'"}
    pairs = ", ".join(f"'{name}', {value}" for name, value in document.items())
    return f"\\set n random(1, {TRADERS})\n\\set quantity random(1, 100)\n" + pgbench._splice(
        writers.PLACE_ORDER.autocommit,
        {
            1: "'authenticated'",
            2: pgbench.CLAIMS.format(trader=f"({trader})::text"),
            3: f"(jsonb_build_object('trader_id', ({trader})::text, {pairs})::text)",
        },
    )


def _fill() -> str:
    caller = (
        pgbench._SET_CALLER_SQL.replace("$1", "'service_role'")
        .replace("$2", SERVICE_CLAIMS)
        .replace("$3", f"'{pgbench.STATEMENT_TIMEOUT}'")
    )
    return (
        _submit()
        + " \\gset o_\n"
        + "BEGIN;\n"
        + f"{caller};\n"
        + "UPDATE orders SET approved_at = now() WHERE id = :o_id;\n"
        + "UPDATE orders SET routed_at = now(), status_reason = 'bench' WHERE id = :o_id;\n"
        + "INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission,"
        " \"timestamp\") VALUES (gen_random_uuid(), :o_id, :quantity, 100.25, 'bench', 0,"
        " now());\n" + "COMMIT;\n"
    )


ORDER_RULES = ("orders_check_rules", "orders_check_terms", "orders_check_working_cap")
ORDER_RULES += ("orders_check_input",)


def _triggers(table: str, names: tuple[str, ...], on: bool) -> str:
    verb = "ENABLE" if on else "DISABLE"
    return "".join(f"ALTER TABLE public.{table} {verb} TRIGGER {name};" for name in names)


@dataclass(frozen=True)
class Variant:
    name: str
    off: str  # SQL that takes the cost away (as the superuser)
    on: str  # SQL that puts it back


# The indexes only the API's reads use. The others are read by the triggers themselves
# (the open-order cap by (trader_id, status), the chain by (order_id, seq), a fill's order
# by fills.order_id): without them every write scans, which a first run showed (31 submits/s).
READ_INDEXES = (
    "idx_orders_trader_created",
    "idx_orders_status",
    "idx_fills_timestamp",
    "idx_execution_logs_trader_timestamp",
    "idx_execution_logs_action",
    "idx_execution_logs_order",
)
INDEX_DEFINITIONS = """
SELECT string_agg(pg_get_indexdef(to_regclass(name)) || ';', '')
  FROM unnest($1::text[]) name
"""


async def variants(owner: str) -> list[Variant]:
    conn = await asyncpg.connect(owner)
    try:
        create = await conn.fetchval(INDEX_DEFINITIONS, list(READ_INDEXES))
    finally:
        await conn.close()
    return [
        Variant("every trigger", "", ""),
        Variant(
            "no hash chain",
            _triggers("execution_logs", ("execution_logs_zz_hash_chain",), False),
            _triggers("execution_logs", ("execution_logs_zz_hash_chain",), True),
        ),
        Variant(
            "no audit rows",
            _triggers("orders", ("orders_audit",), False),
            _triggers("orders", ("orders_audit",), True),
        ),
        Variant(
            "no order rules",
            _triggers("orders", ORDER_RULES, False),
            _triggers("orders", ORDER_RULES, True),
        ),
        Variant(
            "no read-only indexes",
            "".join(f"DROP INDEX public.{name};" for name in READ_INDEXES),
            create,
        ),
        Variant(
            "no WAL flush at commit",
            "ALTER ROLE authenticator SET synchronous_commit = off;",
            "ALTER ROLE authenticator RESET synchronous_commit;",
        ),
    ]


@dataclass(frozen=True)
class Run:
    variant: str
    script: str
    rate: float  # transactions per wall second
    per_cpu_second: float  # transactions per CPU-second of PostgreSQL
    errors: int


async def _execute(owner: str, sql: str) -> None:
    if not sql:
        return
    conn = await asyncpg.connect(owner)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _counts(owner: str) -> dict[str, int]:
    conn = await asyncpg.connect(owner)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM orders) AS orders, (SELECT count(*) FROM fills) AS fills,"
            " (SELECT count(*) FROM orders WHERE status = 'FILLED') AS filled,"
            " (SELECT count(*) FROM execution_logs) AS audit_rows"
        )
        return dict(row)
    finally:
        await conn.close()


def measure(
    owner: str,
    api: str,
    postmaster: int,
    scripts: dict[str, Path],
    variant: Variant,
    seconds: int,
    clients: int,
    workdir: Path,
) -> list[Run]:
    asyncio.run(_execute(owner, variant.off))
    runs = []
    try:
        for script, path in scripts.items():
            before = cpu.seconds(postmaster)
            result = pgbench.run(api, {"X": path}, "X", clients, seconds, workdir)
            used = cpu.seconds(postmaster) - before
            runs.append(
                Run(variant.name, script, result.rate, result.requests / used, result.errors)
            )
    finally:
        asyncio.run(_execute(owner, variant.on))
    return runs


FUNCTION_TIMES = """
SELECT schemaname || '.' || funcname AS function, calls, total_time, self_time
  FROM pg_stat_user_functions WHERE calls > 0 ORDER BY self_time DESC
"""


async def _function_times(owner: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(owner)
    try:
        # The statistics collector publishes a backend's counts when it goes idle: wait.
        await asyncio.sleep(1.5)
        return list(await conn.fetch(FUNCTION_TIMES))
    finally:
        await conn.close()


async def _wal_position(owner: str) -> int:
    conn = await asyncpg.connect(owner)
    try:
        position: int = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return position
    finally:
        await conn.close()


def functions(
    owner: str, api: str, postmaster: int, scripts: dict[str, Path], args: Any, workdir: Path
) -> None:
    """Where a transaction's database time goes, per trigger function (track_functions)."""
    asyncio.run(_execute(owner, "ALTER SYSTEM SET track_functions = 'pl'"))
    asyncio.run(_execute(owner, "SELECT pg_reload_conf()"))
    for script, path in scripts.items():
        for _ in range(args.rounds):
            asyncio.run(_execute(owner, "SELECT pg_stat_reset();"))
            lsn = asyncio.run(_wal_position(owner))
            before = cpu.seconds(postmaster)
            result = pgbench.run(api, {"X": path}, "X", args.clients, args.seconds, workdir)
            used = cpu.seconds(postmaster) - before
            wal = asyncio.run(_wal_position(owner)) - lsn
            rows = asyncio.run(_function_times(owner))
            print(
                f"## {script}: {result.requests} transactions, {result.rate:.0f}/s,"
                f" {1000 * used / result.requests:.3f} ms of database CPU and"
                f" {wal / result.requests:.0f} bytes of WAL each"
            )
            print("| function | calls per transaction | self ms | total ms (per transaction) |")
            print("|---|---:|---:|---:|")
            for row in rows:
                print(
                    f"| {row['function']} | {row['calls'] / result.requests:.2f}"
                    f" | {row['self_time'] / result.requests:.3f}"
                    f" | {row['total_time'] / result.requests:.3f} |"
                )


def report(runs: list[Run], show: Callable[[str], None]) -> None:
    names = list(dict.fromkeys(r.variant for r in runs))
    show("| variant | submit/s | submit per CPU-s | fill/s | fill per CPU-s | errors |")
    show("|---|---:|---:|---:|---:|---:|")
    for name in names:

        def median(script: str, attribute: str, name: str = name) -> float:
            return statistics.median(
                getattr(r, attribute) for r in runs if r.variant == name and r.script == script
            )

        errors = sum(r.errors for r in runs if r.variant == name)
        show(
            f"| {name} | {median('submit', 'rate'):.0f} | {median('submit', 'per_cpu_second'):.0f}"
            f" | {median('fill', 'rate'):.0f} | {median('fill', 'per_cpu_second'):.0f}"
            f" | {errors} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--functions",
        action="store_true",
        help="instead of the A/B: time per trigger function, every trigger on",
    )
    args = parser.parse_args()
    with embedded.throwaway("bench-primary-") as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        owner_url = server.owner_url.render_as_string(hide_password=False)
        upgrade_to_head(owner_url)
        owner = libpq_url(owner_url)
        api = libpq_url(server.url_for("authenticator").render_as_string(hide_password=False))
        asyncio.run(
            _execute(owner, "ALTER TABLE public.execution_logs ALTER COLUMN hash DROP NOT NULL")
        )
        scripts = {}
        for name, text in {"submit": _submit() + ";\n", "fill": _fill()}.items():
            path = workdir / f"primary-{name}.sql"
            path.write_text(text)
            scripts[name] = path
        if args.functions:
            functions(owner, api, server.postmaster_pid, scripts, args, workdir)
            return
        every = asyncio.run(variants(owner))
        runs: list[Run] = []
        for round_number in range(args.rounds):
            # Rotate the order each round: a burst of the machine's other load falls on a
            # different variant each time.
            order = every[round_number % len(every) :] + every[: round_number % len(every)]
            for variant in order:
                runs += measure(
                    owner,
                    api,
                    server.postmaster_pid,
                    scripts,
                    variant,
                    args.seconds,
                    args.clients,
                    workdir,
                )
                print(runs[-2], runs[-1], flush=True)
        report(runs, print)
        print(asyncio.run(_counts(owner)))


if __name__ == "__main__":
    main()
