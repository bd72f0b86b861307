"""python -m bench.scale: load the data set, check every server's answers, measure, report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.scale import checks, cpu, dataset, pgbench, servers, wrk
from bench.scale.database import Database, database
from bench.scale.report import Measurement, write
from bench.scale.traders import Clients, clients
from bench.scale.workloads import MIX, WORKLOADS, body

ROOT = Path(__file__).resolve().parents[2]


def _list(kind: Callable[[str], object]) -> Callable[[str], list[object]]:
    return lambda text: [kind(part) for part in text.split(",")]


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """The data set's size, and whether to reuse one loaded earlier (also bench.scale.soak's)."""
    parser.add_argument("--orders", type=int, default=100_000, help="100,000 to 10,000,000")
    parser.add_argument("--traders", type=int, default=10_000)
    parser.add_argument("--big-trader-orders", type=int, default=50_000)
    parser.add_argument(
        "--reuse", action="store_true",
        help="DATABASE_URL already holds this data set (loaded by an earlier run): check it, don't load",
    )  # fmt: skip
    parser.add_argument(
        "--skip-verify", action="store_true",
        help="with --reuse: don't check the data set again (it was checked when loaded; at"
        " 10,000,000 orders that takes minutes). Every server's answers are still checked",
    )  # fmt: skip


def check_dataset_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.skip_verify and not args.reuse:
        parser.error("--skip-verify only with --reuse: a data set just loaded is always checked")
    if not 100_000 <= args.orders <= 10_000_000:
        parser.error("--orders must be between 100,000 and 10,000,000")
    if not 2 * args.big_trader_orders <= args.orders or args.traders < 1000:
        parser.error("--big-trader-orders at most half of --orders; --traders at least 1000")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    add_dataset_options(parser)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="per server and workload")
    parser.add_argument("--concurrency", type=_list(int), default=[1, 10, 32])
    parser.add_argument("--workloads", type=_list(str), default=list(WORKLOADS))
    parser.add_argument(
        "--targets", type=_list(str), default=["raw", "postgraphile", "ours"],
        help="raw,postgraphile,ours",
    )  # fmt: skip
    parser.add_argument("--postgraphile-processes", type=_list(int), default=[1, 2])
    parser.add_argument("--out", type=Path, help="default: bench/results/scale-<orders>")
    args = parser.parse_args()
    check_dataset_options(parser, args)
    if unknown := set(args.workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads {sorted(unknown)}")
    if unknown := set(args.targets) - {"raw", "postgraphile", "ours"}:
        parser.error(f"unknown targets {sorted(unknown)}")
    args.out = args.out or ROOT / "bench" / "results" / f"scale-{args.orders}"
    return args


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def order_count(db: Database) -> int:
    conn = await asyncpg.connect(db.owner_dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM public.orders"))
    finally:
        await conn.close()


async def unwritten(db: Database, workload: str, result: wrk.Result, c: int, before: int) -> int:
    """Submissions answered but not written (a GraphQL error answers 200 and writes nothing):
    W2 and W4 must have added an order per answered submission, give or take the last
    in flight (``before``: the order count when the load started)."""
    if workload not in ("W2", "W4"):
        return 0
    written = await order_count(db) - before
    share = 1 if workload == "W2" else 0.1
    expected = int(result.requests * share * 0.95) - c
    return max(0, expected - written)


async def prepare(db: Database, args: argparse.Namespace) -> tuple[dict[str, int], Clients]:
    """The data set loaded (or reused) and checked; the traders whose tokens wrk rotates."""
    shape = dataset.Shape(args.orders, args.traders, args.big_trader_orders)
    if args.reuse:
        say(f"reusing the data set in the database ({await order_count(db):,} orders)")
    else:
        await dataset.load(db.owner_dsn, shape)
    if args.skip_verify:
        say("not checking the data set again (--skip-verify)")
        counts = await dataset.counts(db.owner_dsn)
    else:
        counts = await dataset.verify(db.owner_dsn)
    return counts, await clients(db.owner_dsn, shape)


def requests_for(server: servers.Server, workload: str, people: Clients) -> list[str]:
    """One request per trader, in turn (a reader or a writer); W4 mixes W1 and W2 nine to
    one."""
    mix = MIX.get(workload, (workload,))
    requests = []
    for n in range(len(people.readers)):
        kind = mix[n % len(mix)]
        t = people.for_request(kind, n)
        requests.append(
            wrk.http_request(server.port, t.token, body(server.name, kind, t.id, t.order_id, n))
        )
    return requests


@dataclass
class Target:
    """Something measured: the raw database or one HTTP server."""

    name: str
    warm: Callable[[str], object]
    """Warm it up on a workload (10 clients, ``--warmup`` seconds)."""
    measure: Callable[[str, int], Measurement]
    """A workload at a concurrency."""


def measure_all(targets: list[Target], args: argparse.Namespace) -> list[Measurement]:
    """Every target on every workload and concurrency, back to back on each (the machine's
    speed drifts by up to half within minutes: side by side, a ratio compares the same
    minute), the first in turn: A B C, C B A, ... so that a steady drift favours none."""
    results = []
    warm: set[tuple[str, str]] = set()
    turn = 0
    for workload in args.workloads:
        for c in args.concurrency:
            order = targets if turn % 2 == 0 else targets[::-1]
            turn += 1
            for target in order:
                if args.warmup > 0 and (target.name, workload) not in warm:
                    target.warm(workload)
                    warm.add((target.name, workload))
                results.append(target.measure(workload, c))
    return results


def http_target(
    name: str, server: servers.Server, db: Database, people: Clients, args: argparse.Namespace,
    workdir: Path, postmaster: int | None,
) -> Target:  # fmt: skip
    """A server driven by wrk, each workload's requests written once."""
    scripts: dict[str, Path] = {}

    def script(workload: str) -> Path:
        if workload not in scripts:
            scripts[workload] = wrk.script(
                workdir / f"{name}-{workload}.lua", requests_for(server, workload, people)
            )
        return scripts[workload]

    def measure(workload: str, c: int) -> Measurement:
        before = asyncio.run(order_count(db))
        meter = cpu.Meter(server.proc.pid, postmaster)
        meter.start()
        result = wrk.run(script(workload), server.port, c, args.seconds)
        used = meter.per_request(result.requests)
        errors = result.errors + asyncio.run(unwritten(db, workload, result, c, before))
        say(f"  {name} {workload} c={c}: {result.rate:,.0f} req/s,"
            f" p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, {_cpu(used)}"
            + (f", {errors} ERRORS" if errors else ""))  # fmt: skip
        return Measurement(name, workload, c, result.requests, result.seconds, result.rate,
                           result.p50_ms, result.p99_ms, errors, **used)  # fmt: skip

    return Target(
        name, lambda workload: wrk.run(script(workload), server.port, 10, args.warmup), measure
    )


def raw_target(
    db: Database, args: argparse.Namespace, workdir: Path, postmaster: int | None
) -> Target:
    """pgbench replaying the API's transactions (bench/scale/pgbench.py)."""
    shape = dataset.Shape(args.orders, args.traders, args.big_trader_orders)
    paths = pgbench.scripts(workdir, shape)

    def measure(workload: str, c: int) -> Measurement:
        meter = cpu.Meter(None, postmaster)
        meter.start()
        r = pgbench.run(db.api_dsn, paths, workload, c, args.seconds, workdir)
        used = meter.per_request(r.requests)
        say(f"  raw {workload} c={c}: {r.rate:,.0f} tps, p50 {r.p50_ms:.1f} ms,"
            f" p99 {r.p99_ms:.1f} ms, {_cpu(used)}")  # fmt: skip
        return Measurement("raw", workload, c, r.requests, r.seconds, r.rate, r.p50_ms,
                           r.p99_ms, r.errors, **used)  # fmt: skip

    return Target(
        "raw",
        lambda workload: pgbench.run(db.api_dsn, paths, workload, 10, args.warmup, workdir),
        measure,
    )


def _cpu(used: dict[str, float | None]) -> str:
    return "CPU ms/request " + ", ".join(
        f"{who.removesuffix('_cpu_ms')} {ms:.2f}" for who, ms in used.items() if ms is not None
    )


def commit() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main() -> int:
    args = arguments()
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    started = time.monotonic()
    with database() as db:
        counts, people = asyncio.run(prepare(db, args))
        postmaster = db.postmaster or cpu.postmaster(asyncio.run(cpu.data_directory(db.owner_dsn)))
        if postmaster is None:
            say("the database's CPU is not measured: its server is not on this machine"
                " or its data directory is not readable here")  # fmt: skip
        targets: list[Target] = []
        if "raw" in args.targets:
            targets.append(raw_target(db, args, workdir, postmaster))
        configurations: list[tuple[str, Callable[[], servers.Server]]] = []
        if "postgraphile" in args.targets:
            for n in args.postgraphile_processes:
                configurations.append(
                    (
                        f"postgraphile-{n}",
                        lambda n=n: servers.start_postgraphile(db.api, workdir, n),
                    )
                )
        if "ours" in args.targets:
            configurations.append(("ours", lambda: servers.start_ours(db.api, workdir)))
        # All servers up at once (an idle one costs next to nothing), then measured in turn.
        with contextlib.ExitStack() as stack:
            for name, start in configurations:
                server = start()
                stack.callback(server.stop)
                say(f"{server.label}: checking answers")
                checked = asyncio.run(checks.check(server, db.owner_dsn, people))
                say(f"{server.label}: {checked} answers right")
                targets.append(http_target(name, server, db, people, args, workdir, postmaster))
            say("measuring " + ", ".join(t.name for t in targets) + ", side by side")
            results = measure_all(targets, args)
    meta = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "orders": args.orders,
        "loaded": counts,
        "traders": args.traders,
        "big trader's orders": args.big_trader_orders,
        "tokens rotated": f"{len(people.readers)} readers' and {len(people.writers)} writers'",
        "seconds per measurement": args.seconds,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "command": "python -m bench.scale " + " ".join(sys.argv[1:]),
        "ours": "python -m app serve (defaults: one worker per CPU, DB_POOL_SIZE=10 each)",
        "postgraphile": f"5.x, Amber preset, node:cluster, pool {servers.PG_POOL} per process",
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    write(args.out, meta, results)
    say(f"results: {args.out}/results.md, results.json, results.png")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
