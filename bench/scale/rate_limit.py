"""python -m bench.scale.rate_limit: W2 (submitOrder) with an order rate limit set vs unset.

    python -m bench.scale.rate_limit [--orders 100000] [--pairs 6] [--seconds 10]
                                     [--concurrency 10] [--limit 10000] [--reuse]

Issue 21 asks what ``order_limits.max_orders_per_minute`` costs the scale benchmark's W2 (at
most 5 % of its throughput). The scale benchmark's pieces: its data set (``--orders``, in a
throwaway embedded PostgreSQL, or ``DATABASE_URL``/``API_DATABASE_URL`` with ``--reuse``),
its writer traders and their tokens, W2's requests (a new LIMIT order each, the writers'
tokens in turn) and the API started as users start it (``python -m app serve``). One server
serves every run; between runs only the database's row changes (``UPDATE order_limits``;
the trigger reads it on every insert, no restart needed):

- ``unset``: ``max_orders_per_minute`` NULL (the default): the trigger reads the row only;
- ``set``: ``--limit``, high enough never to refuse one of these orders (each writer
  submits a few a minute): the trigger takes the trader's advisory lock and counts its
  orders of the last 60 s through ``idx_orders_trader_created``, on every insert.

Runs alternate in pairs, the pair's order flipping each time (unset-set, set-unset, ...),
so the machine's drift (it is shared) falls on both arms alike; the report gives each run,
each arm's median and the median of the pairs' ratios. A run with any error or refused
order (HTTP 429 is an error for wrk; an unwritten order is counted as one) is flagged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.scale import servers, wrk
from bench.scale.__main__ import (
    ROOT,
    add_dataset_options,
    check_dataset_options,
    commit,
    order_count,
    prepare,
    requests_for,
    say,
    unwritten,
)
from bench.scale.database import database


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.rate_limit", description=__doc__)
    add_dataset_options(parser)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0, help="per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--limit", type=int, default=10_000, help="max_orders_per_minute when set")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "figures" / "rate-limit-w2")
    args = parser.parse_args()
    check_dataset_options(parser, args)
    return args


async def set_limit(owner_dsn: str, limit: int | None) -> None:
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute("UPDATE order_limits SET max_orders_per_minute = $1", limit)
    finally:
        await conn.close()


def main() -> int:
    args = arguments()
    workdir = Path(tempfile.mkdtemp(prefix="bench-rate-"))
    runs: list[dict[str, object]] = []
    with database() as db:
        _, people = asyncio.run(prepare(db, args))
        server = servers.start_ours(db.api, workdir)
        try:
            script = wrk.script(workdir / "W2.lua", requests_for(server, "W2", people))
            wrk.run(script, server.port, args.concurrency, args.warmup)
            for pair in range(args.pairs):
                arms = ("unset", "set") if pair % 2 == 0 else ("set", "unset")
                for arm in arms:
                    asyncio.run(set_limit(db.owner_dsn, args.limit if arm == "set" else None))
                    before = asyncio.run(order_count(db))
                    result = wrk.run(script, server.port, args.concurrency, args.seconds)
                    missing = asyncio.run(unwritten(db, "W2", result, args.concurrency, before))
                    errors = result.errors + missing
                    runs.append(
                        {"pair": pair, "arm": arm, "rate": round(result.rate, 1),
                         "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "errors": errors}
                    )  # fmt: skip
                    say(f"pair {pair} {arm}: {result.rate:,.1f} req/s, p50 {result.p50_ms:.1f}"
                        f" ms, p99 {result.p99_ms:.1f} ms" + (f", {errors} ERRORS" if errors else ""))  # fmt: skip
        finally:
            server.stop()
    meta = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "command": "python -m bench.scale.rate_limit " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "load average at the end": os.getloadavg(),
    }
    write(args.out, meta, runs)
    print(args.out.with_suffix(".md").read_text())
    return 0


def summary(runs: list[dict[str, object]]) -> dict[str, float]:
    def median(arm: str, key: str) -> float:
        return round(statistics.median(float(str(r[key])) for r in runs if r["arm"] == arm), 1)

    by_pair: dict[object, dict[object, float]] = {}
    for r in runs:
        by_pair.setdefault(r["pair"], {})[r["arm"]] = float(str(r["rate"]))
    ratios = [p["set"] / p["unset"] for p in by_pair.values() if p.get("unset")]
    return {
        "unset req/s (median)": median("unset", "rate"),
        "set req/s (median)": median("set", "rate"),
        "unset p99 ms (median)": median("unset", "p99_ms"),
        "set p99 ms (median)": median("set", "p99_ms"),
        "set/unset, median of the pairs": round(statistics.median(ratios), 3),
        "lost with the limit set (1 - that)": round(1 - statistics.median(ratios), 3),
    }


def write(out: Path, meta: dict[str, object], runs: list[dict[str, object]]) -> None:
    figures = summary(runs)
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": figures, "runs": runs}, indent=2) + "\n"
    )
    lines = [f"# W2 with order_limits.max_orders_per_minute set vs unset ({meta['when']})", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()] + [""]
    lines += ["| pair | arm | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['pair']} | {r['arm']} | {r['rate']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |"
        for r in runs
    ]
    lines += ["", *(f"- {key}: {value}" for key, value in figures.items())]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
