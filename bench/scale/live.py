"""python -m bench.scale.live: live-update delivery latency while submits arrive at a fixed rate.

    python -m bench.scale.live [--subscribers 100] [--watchers 10] [--rate 190] [--seconds 20]
                               [--runs 3] [--orders 100000] [--reuse]

The scale benchmark's pieces: its data set (``--orders``, loaded into a throwaway embedded
PostgreSQL, or ``DATABASE_URL``/``API_DATABASE_URL`` with ``--reuse``), its writer traders
and their tokens, and the API started as users start it (``python -m app serve``: one
worker per CPU, its defaults). Then, on loopback:

- ``--subscribers`` WebSocket connections (this process), each with
  ``orderUpdates { id status updatedAt }``: ``--watchers`` of them as
  compliance_auditor, each with claims of its own (so no two share a re-read), who see
  every order; the others as writer traders, who see their own orders.
- A separate process submits W2 orders (``submitOrder``, LIMIT) at ``--rate`` per second
  for ``--seconds``, open loop (request i is due at i / rate, at most 64 in flight,
  nothing sent after twice ``--seconds``: the rate achieved is reported),
  rotating the trader subscribers' tokens: every submit reaches one trader subscriber and
  every watcher. No engine runs (as in the scale benchmark), so each submit is one change.

Latency is each message's receipt (wall clock) minus the order's ``updatedAt`` (its
transaction's start, a few ms before its commit; same machine, same clock). After the
load, the run waits (at most ``--drain`` seconds) for every expected message, then counts
what never arrived ("lost"), and the gap signals (``UPDATES_MISSED``) each subscriber got:
a subscriber with a gap signal is allowed to have lost updates; one without is not.
Everything shares the machine's cores (2 here): read the figures as before/after of one
commit against another, median of ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect

from app.auth.jwt import mint_token
from app.settings import Settings
from bench.scale import cpu, dataset, servers
from bench.scale.database import Database, database
from bench.scale.traders import SECRET, TOKEN_SECONDS, Trader, traders
from bench.scale.workloads import body

SUBSCRIPTION = "subscription { orderUpdates { id status updatedAt } }"
IN_FLIGHT = 64
GIVE_UP = 2.0
"""The generator sends nothing more after this many times ``--seconds``."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the load generator (its own process) --------------------------------------------------------


async def drive(port: int, tokens: list[str], rate: float, seconds: float) -> dict[str, object]:
    """Submits at ``rate`` per second for ``seconds``; which token's submits succeeded."""
    url = f"http://127.0.0.1:{port}/graphql"
    total = int(rate * seconds)
    ok = [0] * len(tokens)
    errors: list[str] = []
    late: list[float] = []
    slots = asyncio.Semaphore(IN_FLIGHT)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        start = time.monotonic()

        async def one(n: int) -> None:
            who = n % len(tokens)
            try:
                answer = await http.post(
                    url,
                    json=body("ours", "W2", "", "", n),
                    headers={"Authorization": f"Bearer {tokens[who]}"},
                )
                document = answer.json()
                if answer.status_code == 200 and not document.get("errors"):
                    ok[who] += 1
                else:
                    errors.append(answer.text[:200])
            except httpx.HTTPError as error:
                errors.append(repr(error))
            finally:
                slots.release()

        tasks = []
        # Bounded in time as well as in count: a server that cannot take the rate gets fewer
        # submits (reported as the rate achieved), not a run that never ends.
        stop_at = start + GIVE_UP * seconds
        for n in range(total):
            due = start + n / rate
            if time.monotonic() > stop_at:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await slots.acquire()
            late.append(time.monotonic() - due)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    return {
        "ok": ok,
        "sent": len(tasks),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "rate": len(tasks) / elapsed,
        "late_p99_ms": 1000 * sorted(late)[int(0.99 * (len(late) - 1))] if late else 0.0,
    }


# --- subscribers ---------------------------------------------------------------------------------


@dataclass
class Subscriber:
    ws: ClientConnection
    watcher: bool
    received: int = 0
    events: int = 0  # received, and gap signals: proof that the subscription is live
    other: list[object] = field(default_factory=list)  # messages other than "next"
    latencies: list[float] = field(default_factory=list)
    gaps: int = 0
    since: float = 0.0  # wall-clock start of the measured load
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async for raw in self.ws:
            at = time.time()
            message = json.loads(raw)
            if message.get("type") != "next":
                self.other.append(message)
                continue
            self.events += 1
            payload = message["payload"]
            if payload.get("errors"):
                reasons = [e.get("extensions", {}).get("reason") for e in payload["errors"]]
                if reasons != ["UPDATES_MISSED"]:
                    raise RuntimeError(f"unexpected error event: {payload}")
                if self.since:
                    self.gaps += 1
                continue
            self.received += 1
            updated = datetime.fromisoformat(payload["data"]["orderUpdates"]["updatedAt"])
            committed = updated.timestamp()
            if self.since and committed >= self.since:
                self.latencies.append(at - committed)


async def subscribe(url: str, token: str, watcher: bool) -> Subscriber:
    ws = await connect(url, subprotocols=["graphql-transport-ws"], open_timeout=30, max_queue=None)
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
    await ws.send(json.dumps(init))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if ack.get("type") != "connection_ack":
        raise RuntimeError(f"not acknowledged: {ack}")
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}))
    subscriber = Subscriber(ws, watcher)
    subscriber.task = asyncio.create_task(subscriber.run())
    return subscriber


async def until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


# --- one run -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    port: int, writers: list[Trader], args: argparse.Namespace, tokens_file: Path, meter: cpu.Meter
) -> dict[str, object]:
    url = f"ws://127.0.0.1:{port}/graphql"
    settings = Settings(jwt_secret=SECRET)
    watchers = [
        mint_token(settings, sub=uuid.uuid4(), role="compliance_auditor", ttl_seconds=TOKEN_SECONDS)
        for _ in range(args.watchers)
    ]
    subs: list[Subscriber] = []
    for start in range(0, args.subscribers, 50):
        batch = range(start, min(args.subscribers, start + 50))
        subs += await asyncio.gather(
            *(
                subscribe(url, watchers[i], True)
                if i < args.watchers
                else subscribe(url, writers[i - args.watchers].token, False)
                for i in batch
            )
        )
    traders_subs = subs[args.watchers :]
    try:
        # Registration is asynchronous: a round of submits, one per trader subscriber (through
        # the load generator, so this process stays a pure receiver), proves all are live.
        for _ in range(5):
            await load(port, tokens_file, rate=len(traders_subs) * 2, seconds=0.5)
            if await until(lambda: all(s.events for s in subs), 10):
                break
        else:
            silent = [s for s in subs if not s.events]
            ended = [repr(s.task.exception()) for s in silent if s.task and s.task.done()]
            raise RuntimeError(
                f"{len(silent)} subscribers received nothing from the warm-up submits"
                f" ({sum(s.watcher for s in silent)} watchers); ended: {ended[:3]};"
                f" their other messages: {[s.other[:2] for s in silent][:3]}"
            )
        await asyncio.sleep(1)
        since = time.time()
        for s in subs:
            s.since, s.latencies, s.gaps = since, [], 0
        before = [s.received for s in subs]
        meter.start()
        result = await load(port, tokens_file, rate=args.rate, seconds=args.seconds)
        ok: list[int] = result["ok"]  # type: ignore[assignment]
        expected = [sum(ok) if s.watcher else ok[i - args.watchers] for i, s in enumerate(subs)]

        def arrived() -> bool:
            return all(
                s.received - b >= e or s.gaps
                for s, b, e in zip(subs, before, expected, strict=True)
            )

        await until(arrived, args.drain)
        spent = meter.per_request(sum(ok))
        lost = [
            max(0, e - (s.received - b)) for s, b, e in zip(subs, before, expected, strict=True)
        ]
    finally:
        for s in subs:
            if s.task is not None:
                s.task.cancel()
        await asyncio.gather(*(s.ws.close() for s in subs), return_exceptions=True)

    def summary(group: list[int]) -> dict[str, object]:
        values = [v for i in group for v in subs[i].latencies]
        return {
            "subscribers": len(group),
            "messages": len(values),
            "p50_ms": 1000 * pct(values, 0.5),
            "p99_ms": 1000 * pct(values, 0.99),
            "max_ms": 1000 * max(values, default=float("nan")),
            "with_gap_signal": sum(1 for i in group if subs[i].gaps),
            "lost_silently": sum(lost[i] for i in group if not subs[i].gaps),
        }

    return {
        "submits": sum(ok),
        "rate": result["rate"],
        "errors": result["errors"],
        "first_error": result["first_error"],
        "generator_late_p99_ms": result["late_p99_ms"],
        **spent,
        "all": summary(list(range(len(subs)))),
        "watchers": summary(list(range(args.watchers))),
        "traders": summary(list(range(args.watchers, len(subs)))),
    }


async def load(port: int, tokens_file: Path, *, rate: float, seconds: float) -> dict[str, object]:
    """The load generator, in a process of its own (so its CPU is not this process's)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.scale.live", "--drive", str(port),
        "--tokens", str(tokens_file), "--rate", str(rate), "--seconds", str(seconds),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), GIVE_UP * seconds + 60)
    if process.returncode:
        raise RuntimeError(f"the load generator failed ({process.returncode})")
    result: dict[str, object] = json.loads(out)
    return result


def row(run: int, r: dict[str, object], group: str) -> str:
    g: dict[str, float] = r[group]  # type: ignore[assignment]
    return (
        f"| {run} | {group} | {g['subscribers']} | {r['rate']:.0f} | {g['messages']:,}"
        f" | {g['p50_ms']:.0f} | {g['p99_ms']:.0f} | {g['max_ms']:.0f}"
        f" | {g['with_gap_signal']} | {g['lost_silently']}"
        f" | {r.get('server_cpu_ms')} / {r.get('db_cpu_ms')} |"
    )


async def run(args: argparse.Namespace, db: Database, tmp: Path) -> None:
    shape = dataset.Shape(args.orders)
    if not args.reuse:
        await dataset.load(db.owner_dsn, shape)
    count = args.subscribers - args.watchers
    # One more asked for: traders.writer_numbers may come one short of a small count.
    writers = (await traders(db.owner_dsn, shape, count + 1, writers=True))[:count]
    tokens_file = tmp / "tokens.json"
    tokens_file.write_text(json.dumps([w.token for w in writers]))
    server = servers.start_ours(db.api, tmp)
    postmaster = db.postmaster or cpu.postmaster(await cpu.data_directory(db.owner_dsn))
    results = []
    try:
        for n in range(args.runs):
            say(f"run {n + 1}/{args.runs}: {args.rate}/s for {args.seconds} s")
            meter = cpu.Meter(server.proc.pid, postmaster)
            results.append(await measure(server.port, writers, args, tokens_file, meter))
            say(json.dumps(results[-1]))
    except BaseException:
        lines = server.log.read_text().splitlines()
        worth = [line for line in lines if " INFO app.requests: " not in line]
        say("the server's log, without its request lines:\n" + "\n".join(worth[-60:]))
        raise
    finally:
        server.stop()
    print(
        "\n| run | subscribers | n | submits/s | messages | p50 ms | p99 ms | max ms"
        " | with gap signal | lost without one | CPU ms per submit: server / database |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, r in enumerate(results, 1):
        for group in ("watchers", "traders", "all"):
            print(row(n, r, group))
    p99s = [r["all"]["p99_ms"] for r in results]  # type: ignore[index]
    print(
        f"\nmedian p99 over {len(results)} runs, all subscribers: {statistics.median(p99s):.0f} ms"
    )
    if args.out:
        args.out.write_text(
            json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": results})
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.live", description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--reuse", action="store_true", help="DATABASE_URL holds the data set")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--watchers", type=int, default=10, help="of them, compliance_auditor")
    parser.add_argument("--rate", type=float, default=190.0, help="submits per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--drain", type=float, default=60.0, help="max wait after the load")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        tokens = json.loads(args.tokens.read_text())
        print(json.dumps(asyncio.run(drive(args.drive, tokens, args.rate, args.seconds))))
        return
    if not 0 <= args.watchers < args.subscribers:
        parser.error("--watchers must be fewer than --subscribers")
    # Outside the event loop: migrating runs one of its own.
    with database() as db, tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        asyncio.run(run(args, db, Path(tmp)))


if __name__ == "__main__":
    main()
