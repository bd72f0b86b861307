"""orderEvents: delivery latency from COMMIT, many subscribers on one process, a replay.

    python -m bench.order_events [--rounds 200] [--subscribers 1000] [--replay 10000]
                                 [--scenarios delivery,fan-out,replay,settling,write-cost]

The database is DATABASE_URL/API_DATABASE_URL when both are set, else a throwaway embedded
PostgreSQL; the API runs in its own process under uvicorn (bench/subscription_latency.py's
harness), clients and the writer in this one, so both ends of a measurement share a clock.

- delivery: one subscriber; each round commits one audit row (``UPDATE orders SET
  recovered_at``, as the owner) and waits for its event; latency from sending COMMIT to the
  event's arrival.
- fan-out: ``--subscribers`` traders, one connection each, all subscribed; each round
  changes one random trader's order, which exactly one subscriber receives. The server
  process's CPU time over the rounds and its resident memory are reported.
- replay: ``--replay`` audit rows committed before subscribing; the time from sending the
  subscription with the earlier cursor to the last event's arrival. ``--history`` more rows
  of the same trader before that cursor (a trader with a past: the rows a read must not
  scan).
- settling: the wait that commit order itself adds, without the API. ``--writers``
  connections commit short transactions (an order and its audit row) back to back; each
  round commits one more and polls, from another connection, until that row is settled
  (its ``stream_key`` below the xmin of a fresh snapshot, migration 013).
- write-cost: what migration 016's index costs the write path. Two databases at head, one
  with the index dropped; ``--pgbench-rounds`` runs of pgbench's submit-and-fill
  (bench/positions.py's script: five audit rows per transaction) with ``--clients`` clients
  for ``--pgbench-seconds`` each, alternating. Only in the embedded PostgreSQL (it creates
  databases); needs pgbench (``PGBENCH``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid

import asyncpg
import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

from app.auth.jwt import mint_token
from app.db.urls import libpq_url
from app.settings import Settings
from bench import pairs
from bench.audit_chain import _create, _pgbench, _pgbench_tps
from bench.positions.writes import PGBENCH_SCRIPT
from bench.subscription_latency import SECRET, api_server, database

EVENTS = (
    "subscription($after: String) { orderEvents(after: $after) {"
    " cursor log { id hash prevHash } order { id status } } }"
)
INSERT = (
    "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
    " SELECT $1, 'IBM', 'BUY', 1, 'MARKET' FROM generate_series(1, $2) RETURNING id"
)
APPROVE = "UPDATE orders SET approved_at = now() WHERE trader_id = $1"
TOUCH = "UPDATE orders SET recovered_at = clock_timestamp() WHERE id = $1"


def token(settings: Settings, trader: uuid.UUID) -> str:
    return mint_token(settings, sub=trader, role="authenticated", ttl_seconds=3600)


COMPRESSION: list[str | None] = ["deflate"]
"""What the clients offer: permessage-deflate (as browsers do) unless ``--no-compression``."""


async def subscribe(url: str, bearer: str, after: str | None = None) -> ClientConnection:
    ws = await connect(
        url, subprotocols=["graphql-transport-ws"], open_timeout=60, compression=COMPRESSION[0]
    )
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {bearer}"}}
    await ws.send(json.dumps(init))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 60))
    assert ack["type"] == "connection_ack", ack
    payload = {"query": EVENTS, "variables": {"after": after}}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    return ws


async def next_event(ws: ClientConnection) -> dict[str, object]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message["type"] == "next":
            assert "errors" not in message["payload"], message
            event: dict[str, object] = message["payload"]["data"]["orderEvents"]
            return event


async def events_cursor(http: httpx.AsyncClient, base: str, bearer: str) -> str:
    response = await http.post(
        f"{base}/graphql",
        json={"query": "{ eventsCursor }"},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    cursor: str = response.json()["data"]["eventsCursor"]
    return cursor


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, latencies: list[float]) -> None:
    ms = [v * 1000 for v in latencies]
    print(
        f"{name}: n={len(ms)} p50={statistics.median(ms):.1f} ms"
        f" p90={pct(ms, 0.9):.1f} ms p99={pct(ms, 0.99):.1f} ms max={max(ms):.1f} ms"
    )


async def pause() -> None:
    """Between rounds: 10 to 20 ms, drawn, so that commits fall anywhere in the change feed's
    poll cycle. A fixed pause kept each commit at about the same point of it (a round takes
    about as long each time), which biased every round's wait for the poll alike."""
    await asyncio.sleep(random.uniform(0.01, 0.02))


def server_process() -> psutil.Process:
    """The uvicorn child this process started."""
    [child] = psutil.Process().children()
    return child


async def delivery(url: str, owner: asyncpg.Connection, settings: Settings, rounds: int) -> None:
    trader = uuid.uuid4()
    [order_id] = [r["id"] for r in await owner.fetch(INSERT, trader, 1)]
    await owner.execute(APPROVE, trader)
    ws = await subscribe(url, token(settings, trader))
    await asyncio.sleep(0.5)
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        await owner.execute(TOUCH, order_id)
        await next_event(ws)
        latencies.append(time.perf_counter() - started)
        await pause()
    await ws.close()
    report("delivery, 1 subscriber", latencies)


async def fan_out(
    url: str, owner: asyncpg.Connection, settings: Settings, count: int, rounds: int
) -> None:
    traders = [uuid.uuid4() for _ in range(count)]
    orders = {}
    for trader in traders:
        [orders[trader]] = [r["id"] for r in await owner.fetch(INSERT, trader, 1)]
        await owner.execute(APPROVE, trader)
    sockets: dict[uuid.UUID, ClientConnection] = {}
    for start in range(0, count, 100):
        batch = traders[start : start + 100]
        opened = await asyncio.gather(*(subscribe(url, token(settings, t)) for t in batch))
        sockets.update(zip(batch, opened, strict=True))
    await asyncio.sleep(2)
    server = server_process()
    cpu_before = server.cpu_times()
    wall_before = time.perf_counter()
    latencies = []
    for _ in range(rounds):
        trader = random.choice(traders)
        started = time.perf_counter()
        await owner.execute(TOUCH, orders[trader])
        await next_event(sockets[trader])
        latencies.append(time.perf_counter() - started)
        await pause()
    wall = time.perf_counter() - wall_before
    cpu_after = server.cpu_times()
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    rss = server.memory_info().rss / 2**20
    report(f"fan-out, {count} subscribers (one receives each round)", latencies)
    print(
        f"  server process: CPU {cpu:.2f} s over {wall:.1f} s ({100 * cpu / wall:.0f}% of a"
        f" core), RSS {rss:.0f} MiB with {count} subscriptions open"
    )
    await asyncio.gather(*(ws.close() for ws in sockets.values()))


async def replay(
    url: str, base: str, owner: asyncpg.Connection, settings: Settings, count: int, history: int
) -> None:
    trader = uuid.uuid4()
    bearer = token(settings, trader)
    if history:
        await owner.fetch(INSERT, trader, history)
    async with httpx.AsyncClient() as http:
        cursor = await events_cursor(http, base, bearer)
    await owner.fetch(INSERT, trader, count)
    server, client = server_process(), psutil.Process()
    server_before, client_before = server.cpu_times(), client.cpu_times()
    started = time.perf_counter()
    ws = await subscribe(url, bearer, cursor)
    # One deadline for the whole replay: a timer per message would cost the client more
    # than reading the message.
    async with asyncio.timeout(120):
        for _ in range(count):
            message = json.loads(await ws.recv())
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
    elapsed = time.perf_counter() - started
    server_cpu, client_cpu = (
        (after.user + after.system) - (before.user + before.system)
        for before, after in (
            (server_before, server.cpu_times()),
            (client_before, client.cpu_times()),
        )
    )
    await ws.close()
    print(
        f"replay of {count} events (after {history} of the trader's): {elapsed:.3f} s ({count / elapsed:,.0f} events/s);"
        f" server CPU {server_cpu:.2f} s ({1000 * server_cpu / count:.2f} ms per event),"
        f" client CPU {client_cpu:.2f} s"
    )


async def settling(owner_url: str, writers: int, rounds: int) -> None:
    stop = asyncio.Event()

    async def write() -> None:
        conn = await asyncpg.connect(libpq_url(owner_url))
        try:
            while not stop.is_set():
                await conn.fetch(INSERT, uuid.uuid4(), 1)
        finally:
            await conn.close()

    background = [asyncio.create_task(write()) for _ in range(writers)]
    writer = await asyncpg.connect(libpq_url(owner_url))
    reader = await asyncpg.connect(libpq_url(owner_url))
    waits = []
    try:
        await asyncio.sleep(0.5)
        for _ in range(rounds):
            [order_id] = [r["id"] for r in await writer.fetch(INSERT, uuid.uuid4(), 1)]
            committed = time.perf_counter()
            key = await reader.fetchval(
                "SELECT stream_key FROM execution_logs WHERE order_id = $1", order_id
            )
            settled = "SELECT $1::xid8 < pg_snapshot_xmin(pg_current_snapshot())"
            # Polling: what is awaited is the database's state, which signals nothing.
            while not await reader.fetchval(settled, key):  # noqa: ASYNC110
                await asyncio.sleep(0)
            waits.append(time.perf_counter() - committed)
    finally:
        stop.set()
        await asyncio.gather(*background)
        await writer.close()
        await reader.close()
    report(f"settled after COMMIT, {writers} writers committing back to back", waits)


async def write_cost(owner_url: str, rounds: int, clients: int, seconds: int) -> None:
    pgbench = _pgbench()
    if pgbench is None:
        print("write cost: SKIPPED (pgbench not installed; set PGBENCH to its path)")
        return
    admin = await asyncpg.connect(libpq_url(owner_url))
    suffix = uuid.uuid4().hex[:8]
    names = {mode: f"bench_events_{mode}_{suffix}" for mode in ("with", "without")}
    try:
        urls = {mode: await _create(admin, owner_url, name) for mode, name in names.items()}
        plain = await asyncpg.connect(libpq_url(urls["without"]))
        await plain.execute("DROP INDEX public.idx_execution_logs_trader_stream")
        await plain.close()
        tps: dict[str, list[float]] = {"with": [], "without": []}
        for i in range(rounds):
            for mode in ("without", "with") if i % 2 else ("with", "without"):
                tps[mode].append(
                    await asyncio.to_thread(
                        _pgbench_tps, pgbench, urls[mode], clients, seconds, PGBENCH_SCRIPT
                    )
                )
    finally:
        for name in names.values():
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
    without, with_index, paired = pairs.rates(tps)
    print(
        f"write cost of the (trader_id, stream_key, seq) index, pgbench submit-and-fill,"
        f" {clients} clients, {rounds} x {seconds} s each: without {without:.0f} tps,"
        f" with {with_index:.0f} tps ({(with_index / without - 1) * 100:+.1f}%), median paired"
        f" ratio {paired * 100:+.1f}%; {pairs.runs(tps)}"
    )


async def run(owner_url: str, api_url: str, args: argparse.Namespace) -> None:
    settings = Settings.from_env({"JWT_SECRET": SECRET, "API_DATABASE_URL": api_url})
    owner = await asyncpg.connect(libpq_url(owner_url))
    try:
        scenarios = {"settling"} if args.only_settling else set(args.scenarios.split(","))
        if scenarios - {"settling", "write-cost"}:
            async with api_server(owner_url, api_url) as url:
                base = url.replace("ws://", "http://").removesuffix("/graphql")
                if "delivery" in scenarios:
                    await delivery(url, owner, settings, args.rounds)
                if "fan-out" in scenarios:
                    await fan_out(url, owner, settings, args.subscribers, args.rounds)
                if "replay" in scenarios:
                    await replay(url, base, owner, settings, args.replay, args.history)
        if "settling" in scenarios:
            await settling(owner_url, args.writers, args.rounds)
        if "write-cost" in scenarios:
            await write_cost(owner_url, args.pgbench_rounds, args.clients, args.pgbench_seconds)
    finally:
        await owner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--replay", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=0)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--pgbench-rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pgbench-seconds", type=int, default=5)
    parser.add_argument(
        "--scenarios",
        default="delivery,fan-out,replay,settling",
        help="which to run, comma-separated (default: all but write-cost)",
    )
    parser.add_argument("--only-settling", action="store_true", help="--scenarios settling")
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="clients do not offer permessage-deflate (the server then sends frames as they are)",
    )
    args = parser.parse_args()
    if args.no_compression:
        COMPRESSION[0] = None
    with database() as (owner_url, api_url):
        asyncio.run(run(owner_url, api_url, args))


if __name__ == "__main__":
    main()
