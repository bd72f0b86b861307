"""python -m bench.scale.soak: does the API's memory settle under load (issue 12's last target)?

    python -m bench.scale.soak --minutes 5 --workload W4 --concurrency 10 [--reuse]

The data set, the server (``python -m app serve`` with its defaults), the answers' checks
and the load are the scale run's own (bench/scale/__main__.py). While wrk drives the server
for ``--minutes``, the resident memory (VmRSS, /proc/<pid>/status) of the parent and of every
worker it forked is sampled every ``--interval`` seconds. The first ``--warmup`` share of the
run fills the caches (pools, prepared statements, Python's allocator), so growth is measured
from the sample at the warm-up's end to the last one under load; the target is a total
growth under ``TARGET`` percent. Output in bench/results/soak-<orders>/: results.json (every
sample) and results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.scale import checks, servers, wrk
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
from bench.scale.workloads import WORKLOADS

TARGET = 10.0  # percent: "API memory under W4 for 5 minutes grows less than 10 %"


@dataclass(frozen=True)
class Sample:
    second: float  # since the load started
    rss_kb: dict[int, int]  # pid -> VmRSS

    @property
    def total_kb(self) -> int:
        return sum(self.rss_kb.values())


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.soak", description=__doc__)
    add_dataset_options(parser)
    parser.add_argument("--minutes", type=float, default=5.0, help="under load")
    parser.add_argument("--workload", choices=WORKLOADS, default="W4")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=0.1, help="share of the run, 0 to 0.9")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, help="default: bench/results/soak-<orders>")
    args = parser.parse_args()
    check_dataset_options(parser, args)
    if not 0 <= args.warmup <= 0.9 or args.minutes <= 0 or args.interval <= 0:
        parser.error("--warmup between 0 and 0.9; --minutes and --interval positive")
    args.out = args.out or ROOT / "bench" / "results" / f"soak-{args.orders}"
    return args


def processes(parent: int) -> list[int]:
    """The parent and its descendants (``serve`` forks its workers), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [parent]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return sorted(found)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def sample(parent: int, started: float) -> Sample:
    return Sample(round(time.monotonic() - started, 1), {p: rss_kb(p) for p in processes(parent)})


def soak(
    server: servers.Server, script: Path, args: argparse.Namespace
) -> tuple[wrk.Result, list[Sample]]:
    """wrk for the whole run in a thread; samples here until it ends (the last one under load)."""
    seconds = args.minutes * 60
    outcome: list[wrk.Result | BaseException] = []

    def load() -> None:
        try:
            outcome.append(wrk.run(script, server.port, args.concurrency, seconds))
        except BaseException as error:  # re-raised below, in the main thread
            outcome.append(error)

    thread = threading.Thread(target=load, daemon=True)
    started = time.monotonic()
    thread.start()
    samples = [sample(server.proc.pid, started)]
    warmup_at = seconds * args.warmup
    while True:
        after = samples[-1].second + args.interval
        if samples[-1].second < warmup_at < after:
            after = warmup_at  # one sample exactly at the warm-up's end
        thread.join(timeout=max(0.0, started + after - time.monotonic()))
        if not thread.is_alive() or time.monotonic() - started > seconds - 0.5:
            break
        samples.append(sample(server.proc.pid, started))
        say(f"  {samples[-1].second:6.1f} s: {samples[-1].total_kb / 1024:,.1f} MiB")
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0], samples


def growth(before: int, after: int) -> float:
    return 100.0 * (after - before) / before if before else 0.0


def summary(
    result: wrk.Result, errors: int, samples: list[Sample], args: argparse.Namespace
) -> dict[str, Any]:
    warm = next(s for s in samples if s.second >= args.minutes * 60 * args.warmup)
    end = samples[-1]
    per_process = {
        str(pid): {
            "warm_kb": warm.rss_kb.get(pid),
            "end_kb": kb,
            "growth_percent": round(growth(warm.rss_kb[pid], kb), 1)
            if pid in warm.rss_kb
            else None,
        }
        for pid, kb in end.rss_kb.items()
    }
    total = round(growth(warm.total_kb, end.total_kb), 1)
    return {
        "warm_second": warm.second,
        "end_second": end.second,
        "processes": per_process,
        "total_warm_kb": warm.total_kb,
        "total_end_kb": end.total_kb,
        "total_growth_percent": total,
        "requests": result.requests,
        "rate": round(result.rate, 1),
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": errors,
        "target": f"total RSS growth < {TARGET:g} % after warm-up",
        "met": total < TARGET and errors == 0,
    }


def markdown(meta: dict[str, Any], outcome: dict[str, Any], parent: int) -> str:
    rows = [
        "| process | RSS at warm-up end (MiB) | RSS at end (MiB) | growth |",
        "|---|---|---|---|",
    ]
    for pid, p in outcome["processes"].items():
        name = "parent" if int(pid) == parent else f"worker {pid}"
        warm = "n/a" if p["warm_kb"] is None else f"{p['warm_kb'] / 1024:,.1f}"
        grown = "new" if p["growth_percent"] is None else f"{p['growth_percent']:+.1f} %"
        rows.append(f"| {name} | {warm} | {p['end_kb'] / 1024:,.1f} | {grown} |")
    rows.append(
        f"| **total** | {outcome['total_warm_kb'] / 1024:,.1f} | {outcome['total_end_kb'] / 1024:,.1f}"
        f" | {outcome['total_growth_percent']:+.1f} % |"
    )
    header = "\n".join(f"- {key}: {value}" for key, value in meta.items())
    verdict = "met" if outcome["met"] else "NOT met"
    return (
        f"{header}\n\n{chr(10).join(rows)}\n\n"
        f"Warm-up end at {outcome['warm_second']} s, end at {outcome['end_second']} s under load;"
        f" {outcome['requests']:,} requests, {outcome['rate']:,.0f} req/s"
        f" (p50 {outcome['p50_ms']:.1f} / p99 {outcome['p99_ms']:.1f} ms),"
        f" {outcome['errors']} errors.\n\nTarget ({outcome['target']}, no errors): **{verdict}**.\n"
    )


def main() -> int:
    args = arguments()
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    with database() as db:
        _, people = asyncio.run(prepare(db, args))
        server = servers.start_ours(db.api, workdir)
        try:
            say(f"{server.label}: checking answers")
            say(
                f"{server.label}: {asyncio.run(checks.check(server, db.owner_dsn, people))} answers right"
            )
            script = wrk.script(
                workdir / f"soak-{args.workload}.lua", requests_for(server, args.workload, people)
            )
            before = asyncio.run(order_count(db))
            say(
                f"{args.workload} c={args.concurrency} for {args.minutes:g} min, RSS every {args.interval:g} s"
            )
            result, samples = soak(server, script, args)
            missing = asyncio.run(unwritten(db, args.workload, result, args.concurrency, before))
            parent = server.proc.pid
        finally:
            server.stop()
    outcome = summary(result, result.errors + missing, samples, args)
    meta = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "orders": args.orders,
        "command": "python -m bench.scale.soak " + " ".join(sys.argv[1:]),
        "server": "python -m app serve (defaults: one worker per CPU, DB_POOL_SIZE=10 each)",
        "workload": f"{args.workload}, c={args.concurrency}, {args.minutes:g} min,"
        f" warm-up {args.warmup:.0%} of it, RSS (VmRSS) every {args.interval:g} s",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps(
            {"meta": meta, "outcome": outcome, "samples": [asdict(s) for s in samples]}, indent=2
        )
        + "\n"
    )
    (args.out / "results.md").write_text(markdown(meta, outcome, parent))
    say(f"results: {args.out}/results.md, results.json")
    print((args.out / "results.md").read_text())
    return 0 if outcome["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
