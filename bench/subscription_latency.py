"""Subscription delivery latency: from COMMIT to the WebSocket client, against a bare feed reader.

    python bench/subscription_latency.py [--rounds 30] [--sizes 1,100,1000]

Uses DATABASE_URL (owner, to arrange data and make the changes) and
API_DATABASE_URL (authenticator, for the API) when both are set; otherwise a
throwaway embedded PostgreSQL in a temporary directory, migrated to head and
deleted at the end. The API runs in its own process under uvicorn on
127.0.0.1 (a free port), as in production; clients and the writer run in this
process, so both sides of each measurement use the same clock.

Each round commits one change (``UPDATE orders SET recovered_at = ...`` as the
owner, which writes a RECOVERED audit row: a position in the change feed of
migration 004), then waits (bounded) until
every subscriber that should see it has received it. Latency is measured from
the moment COMMIT is sent to the moment a client's message arrives; the
figures therefore include this process handling up to a thousand sockets.

Scenarios, for 1, 100 and 1,000 concurrent subscribers (one connection each,
``orderUpdates`` without ``orderId``, selecting id, status and updatedAt):

- one trader, shared token: every subscriber gets every change (worst-case
  fan-out); identical claims share one re-read per change.
- one trader, own tokens: the same, but each subscriber's token differs (a
  ``session_id`` claim), so every subscriber re-reads on its own: the cost of
  row level security per subscriber, through the API's pool of 10.
- spread: each subscriber is a different trader; a round changes one random
  trader's order, which exactly one subscriber receives, while the others
  idle on their connections.

Baseline, in the same run and on the same database: the same change observed
by a plain asyncpg connection in this process reading the feed's positions at
the API's interval (CHANGE_FEED_POLL_MS; no API, no RLS re-read, no
WebSocket): the floor of the design. Figures are quoted as ratios to its median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
from websockets.asyncio.client import ClientConnection, connect

from app.auth.jwt import mint_token
from app.db import embedded
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url
from app.settings import Settings

SECRET = "bench-secret-that-is-long-enough-for-hs256-000000"
ROUND_TIMEOUT = 15.0
SUBSCRIPTION = "subscription { orderUpdates { id status updatedAt } }"


# --- the server under test ---------------------------------------------------------------------


def serve(port: int) -> None:
    """Entry point of the server process (``--serve PORT``); settings come from the env."""
    import uvicorn

    from app.main import create_app

    uvicorn.run(create_app(Settings.from_env()), host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def api_server(owner_url: str, api_url: str) -> AsyncIterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "JWT_SECRET": SECRET,
        "DATABASE_URL": owner_url,
        "API_DATABASE_URL": api_url,
        "GRAPHIQL": "false",
    }
    process = subprocess.Popen(  # noqa: ASYNC220  (started once, not awaited on)
        [sys.executable, __file__, "--serve", str(port)], env=env
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{base}/readyz")).status_code == 200:
                        break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the API did not become ready within 30s")
                await asyncio.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/graphql"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- clients -----------------------------------------------------------------------------------


@dataclass
class Round:
    expected: int
    started: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def arrive(self, at: float) -> None:
        self.arrivals.append(at - self.started)
        if len(self.arrivals) >= self.expected:
            self.done.set()


@dataclass
class Subscriber:
    ws: ClientConnection
    trader: uuid.UUID
    current: Round | None = None
    errors: int = 0
    received: int = 0
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async for raw in self.ws:
            at = time.perf_counter()
            message = json.loads(raw)
            if message.get("type") != "next":
                continue
            self.received += 1
            if message["payload"].get("errors"):
                self.errors += 1
            elif self.current is not None:
                self.current.arrive(at)


async def subscribe(url: str, token: str, trader: uuid.UUID) -> Subscriber:
    ws = await connect(url, subprotocols=["graphql-transport-ws"], open_timeout=30)
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    ack = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if ack.get("type") != "connection_ack":
        raise RuntimeError(f"not acknowledged: {ack}")
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}))
    subscriber = Subscriber(ws, trader)
    subscriber.task = asyncio.create_task(subscriber.run())
    return subscriber


async def open_subscribers(url: str, tokens: list[tuple[str, uuid.UUID]]) -> list[Subscriber]:
    subscribers: list[Subscriber] = []
    for start in range(0, len(tokens), 100):  # in batches: a listen backlog is finite
        batch = tokens[start : start + 100]
        subscribers += await asyncio.gather(*(subscribe(url, t, trader) for t, trader in batch))
    return subscribers


async def close_subscribers(subscribers: list[Subscriber]) -> None:
    for s in subscribers:
        if s.task is not None:
            s.task.cancel()
    await asyncio.gather(*(s.ws.close() for s in subscribers), return_exceptions=True)


async def warm_up(
    owner: asyncpg.Connection, subscribers: list[Subscriber], orders: dict[uuid.UUID, uuid.UUID]
) -> None:
    """Changes every order until each subscriber has received something: subscriptions are
    registered asynchronously, and this proves that all of them are live before measuring."""
    for _ in range(20):
        await owner.execute(
            "UPDATE orders SET recovered_at = clock_timestamp() WHERE id = ANY($1)",
            list(orders.values()),
        )
        for _ in range(60):  # 3 s
            if all(s.received for s in subscribers):
                break
            await asyncio.sleep(0.05)
        if all(s.received for s in subscribers):
            await asyncio.sleep(0.2)  # let stragglers of the last warm-up change drain
            return
    raise RuntimeError("not every subscriber received the warm-up change")


# --- measurements ------------------------------------------------------------------------------


async def commit_change(owner: asyncpg.Connection, order_id: uuid.UUID, r: Round) -> None:
    async with owner.transaction():
        await owner.execute(
            "UPDATE orders SET recovered_at = clock_timestamp() WHERE id = $1", order_id
        )
        r.started = time.perf_counter()  # COMMIT is sent when the block ends, right after this


async def measure(
    owner: asyncpg.Connection,
    subscribers: list[Subscriber],
    orders: dict[uuid.UUID, uuid.UUID],
    rounds: int,
    spread: bool,
) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    missing = 0
    traders = list(orders)
    for _ in range(rounds):
        trader = random.choice(traders) if spread else traders[0]
        receivers = [s for s in subscribers if s.trader == trader]
        r = Round(expected=len(receivers))
        for s in receivers:
            s.current = r
        await commit_change(owner, orders[trader], r)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(r.done.wait(), ROUND_TIMEOUT)
        missing += r.expected - len(r.arrivals)
        latencies += r.arrivals
        for s in receivers:
            s.current = None
        await asyncio.sleep(0.02)  # let the server settle between rounds
    return latencies, missing, sum(s.errors for s in subscribers)


async def baseline(
    owner: asyncpg.Connection, api_dsn: str, order_id: uuid.UUID, rounds: int, poll_ms: int
) -> list[float]:
    """A bare reader polling the feed at the API's interval, on its own, as the API's does:
    a change waits for the next read (half an interval on average), then one query."""
    reader = await asyncpg.connect(api_dsn)
    current: list[Round] = []

    async def poll() -> None:
        high = await reader.fetchval("SELECT coalesce(max(seq), 0) FROM execution_logs")
        while True:
            seq = await reader.fetchval("SELECT max(seq) FROM execution_logs WHERE seq > $1", high)
            if seq is not None:
                high = seq
                if current:
                    current[-1].arrive(time.perf_counter())
            await asyncio.sleep(poll_ms / 1000)

    polling = asyncio.create_task(poll())
    try:
        latencies: list[float] = []
        for _ in range(rounds):
            r = Round(expected=1)
            current.append(r)
            await asyncio.sleep(random.uniform(0, poll_ms / 1000))  # commits fall anywhere
            await commit_change(owner, order_id, r)
            await asyncio.wait_for(r.done.wait(), ROUND_TIMEOUT)
            latencies += r.arrivals
            current.clear()
        return latencies
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await reader.close()


async def arrange(
    owner: asyncpg.Connection, traders: list[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    rows = await owner.fetch(
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
        " SELECT t, 'BENCH', 'BUY', 1, 'MARKET' FROM unnest($1::uuid[]) t RETURNING id, trader_id",
        traders,
    )
    # Approved, so that each round can mark it recovered (an audited change, see commit_change).
    await owner.execute(
        "UPDATE orders SET approved_at = now() WHERE id = ANY($1)", [row["id"] for row in rows]
    )
    return {row["trader_id"]: row["id"] for row in rows}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(owner_url: str, api_url: str, sizes: list[int], rounds: int) -> None:
    settings = Settings.from_env({"JWT_SECRET": SECRET, "API_DATABASE_URL": api_url})
    owner = await asyncpg.connect(libpq_url(owner_url))
    rows: list[tuple[str, int, int, int, int, list[float]]] = []
    try:
        base_order = await arrange(owner, [uuid.uuid4()])
        base = await baseline(
            owner,
            libpq_url(api_url),
            next(iter(base_order.values())),
            rounds * 5,
            settings.change_feed_poll_ms,
        )
        rows.append(("baseline: feed read -> asyncpg", 1, len(base), 0, 0, base))
        async with api_server(owner_url, api_url) as url:
            for size in sizes:
                for scenario in ("one trader, shared token", "one trader, own tokens", "spread"):
                    spread = scenario == "spread"
                    traders = [uuid.uuid4() for _ in range(size if spread else 1)]
                    orders = await arrange(owner, traders)
                    tokens = [
                        (
                            mint_token(
                                settings,
                                sub=traders[i if spread else 0],
                                extra={"session_id": str(i)}
                                if scenario.endswith("own tokens")
                                else None,
                            ),
                            traders[i if spread else 0],
                        )
                        for i in range(size)
                    ]
                    if scenario == "one trader, shared token":
                        tokens = [(tokens[0][0], tokens[0][1])] * size
                    subscribers = await open_subscribers(url, tokens)
                    try:
                        await warm_up(owner, subscribers, orders)
                        n = rounds if size < 1000 or spread else max(5, rounds // 3)
                        latencies, missing, errors = await measure(
                            owner, subscribers, orders, n, spread
                        )
                    finally:
                        await close_subscribers(subscribers)
                    rows.append((scenario, size, n, missing, errors, latencies))
                    print(f"  done: {scenario}, {size} subscribers", file=sys.stderr)
    finally:
        await owner.close()

    base_p50 = statistics.median(base)
    header = (
        f"{'scenario':30} {'subs':>5} {'rounds':>6} {'msgs':>6} {'lost':>5} {'gaps':>5}"
        f" {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'p50/base':>9}"
    )
    print("\n" + header)
    print("-" * len(header))
    for name, size, n, missing, errors, values in rows:
        p50 = statistics.median(values) if values else float("nan")
        print(
            f"{name:30} {size:5d} {n:6d} {len(values):6d} {missing:5d} {errors:5d}"
            f" {p50 * 1000:8.2f} {pct(values, 0.95) * 1000:8.2f} {max(values) * 1000:8.2f}"
            f" {p50 / base_p50:9.1f}"
        )
    print(
        "\nreproduce: python bench/subscription_latency.py --rounds",
        rounds,
        "--sizes",
        ",".join(map(str, sizes)),
    )


@contextlib.contextmanager
def database() -> Iterator[tuple[str, str]]:
    env = Settings.from_env()
    if env.database_url and env.api_database_url:
        yield env.database_url, env.api_database_url
        return
    with embedded.throwaway("order-api-bench-") as server:
        owner = server.owner_url.render_as_string(hide_password=False)
        upgrade_to_head(owner)
        yield owner, server.url_for("authenticator").render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sizes", default="1,100,1000")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with database() as (owner_url, api_url):
        asyncio.run(run(owner_url, api_url, sizes, args.rounds))


if __name__ == "__main__":
    main()
