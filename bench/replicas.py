"""Read replicas: the cost of routing a read, and the wait a consistency token adds.

    python -m bench.replicas [--rounds 5] [--seconds 2] [--orders 100]

Starts a primary and a streaming replica of it (tests/replica.py: the embedded PostgreSQL's
binaries, ``pg_basebackup -R``), one trader with ``--orders`` orders, and calls the app
in-process (httpx's ASGI transport, one client, sequential requests), in interleaved rounds:

- routing: W1 (bench/scale/workloads.py, the blotter's page, compiled) on three apps: without
  replicas (``primary``), with ``API_READ_DATABASE_URLS`` naming the primary itself, which is
  not in recovery, so each read takes the routing code and then the primary (``routed``: the
  routing's cost on the same server), and with the replica (``replica``, which answers): the
  median latency and the process CPU time per request of each, per round and in all; and the
  routing code alone (choosing the database, counting the read) in a tight loop
  (``routing_cpu_us_per_read``, and its share of W1's CPU per request on ``primary``);
- token: a submitOrder, then W1 at once with the token it returned, against W1 at once
  without it (a replica applies within milliseconds here): the added latency, p50 and p90
  (``token_added_ms``, a difference of two noisy latencies), and the time the reads with a
  token spent choosing their database, the wait for the replica included
  (``token_choice_ms``, timed around ``Replicas.candidates``), and the round trip that
  reads the primary's position for a mutation's token (``token_position_ms``).

On one 2-core machine the replica competes with the primary and the app for the same cores,
so only the cost of routing can be measured, not a gain in read rate.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
from prometheus_client import REGISTRY

from app import metrics
from app.auth.jwt import mint_token
from app.db.replicas import Replicas
from app.main import create_app
from app.settings import Settings
from bench.scale.workloads import OURS
from tests.replica import Pair, primary_and_replica

SECRET = "bench-secret-that-is-long-enough-for-hs256-000000"
SUBMIT = OURS["W2"]
W1 = OURS["W1"]


Side = Literal["primary", "routed", "replica"]
"""primary: no replicas configured; routed: API_READ_DATABASE_URLS names the primary itself,
which is not in recovery, so every read takes the routing code and then the primary (the cost
of routing alone, on the same server as primary's); replica: the real replica answers."""


def settings(pair: Pair, *, side: Side) -> Settings:
    environ = {
        "JWT_SECRET": SECRET,
        "API_DATABASE_URL": pair.primary.url("authenticator").render_as_string(),
        "LOG_FORMAT": "text",
    }
    if side != "primary":
        node = pair.replica if side == "replica" else pair.primary
        environ["API_READ_DATABASE_URLS"] = node.url("authenticator").render_as_string()
    return Settings.from_env(environ)


POSITION: list[float] = []
"""Seconds each read of the primary's position took (a mutation's token)."""
CHOOSING: list[float] = []
"""Seconds each read with a token spent choosing its database (the wait included)."""


def time_the_choice(replicas: Replicas) -> None:
    candidates = replicas.candidates

    async def timed(token: int | None) -> Any:
        started = time.perf_counter()
        try:
            return await candidates(token)
        finally:
            if token is not None:
                CHOOSING.append(time.perf_counter() - started)

    replicas.candidates = timed  # type: ignore[method-assign]
    position = replicas.position

    async def timed_position() -> int:
        started = time.perf_counter()
        try:
            return await position()
        finally:
            POSITION.append(time.perf_counter() - started)

    replicas.position = timed_position  # type: ignore[method-assign]


@asynccontextmanager
async def client(pair: Pair, *, side: Side) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(pair, side=side))
    if side == "replica":
        time_the_choice(app.state.replicas)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            yield http


def order_input() -> dict[str, Any]:
    return {
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 1,
        "orderType": "LIMIT",
        "price": "1.00",
        "clientOrderId": uuid.uuid4().hex,
    }


@dataclasses.dataclass
class Timing:
    seconds: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)


async def page(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await http.post("/graphql", json={"query": W1}, headers=headers)
    assert response.status_code == 200, response.text
    assert "errors" not in response.json(), response.text


async def routing_round(
    http: httpx.AsyncClient, headers: dict[str, str], seconds: float, into: Timing
) -> None:
    await page(http, headers)  # learned: the next ones are compiled
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        wall, cpu = time.perf_counter(), time.process_time()
        await page(http, headers)
        into.seconds.append(time.perf_counter() - wall)
        into.cpu.append(time.process_time() - cpu)


async def token_round(
    http: httpx.AsyncClient, headers: dict[str, str], count: int, added: list[float]
) -> None:
    for _ in range(count):
        after = []
        for send_token in (True, False):
            response = await http.post(
                "/graphql",
                json={"query": SUBMIT, "variables": {"input": order_input()}},
                headers=headers,
            )
            assert "errors" not in response.json(), response.text
            token = response.headers["x-consistency-token"]
            with_token = {**headers, "X-Consistency-Token": token} if send_token else headers
            started = time.perf_counter()
            await page(http, with_token)
            after.append(time.perf_counter() - started)
        added.append(after[0] - after[1])


async def routing_alone(http: httpx.AsyncClient, count: int = 20_000) -> float:
    """Microseconds of CPU the choice of a database costs one read without a token (what a
    read through the replicas runs that a read on the primary does not), in a tight loop."""
    app = http._transport.app  # type: ignore[attr-defined]
    replicas: Replicas = app.state.replicas
    started = time.process_time()
    for _ in range(count):
        candidates = await replicas.candidates(None)
        metrics.READS.labels(candidates[0][1].label if candidates[0][1] else "primary").inc()
    return (time.process_time() - started) / count * 1e6


def reads_answered() -> Counter[str]:
    """order_api_reads_total by database, so far."""
    return Counter(
        {
            sample.labels["database"]: sample.value
            for metric in REGISTRY.collect()
            if metric.name == "order_api_reads"
            for sample in metric.samples
            if sample.name == "order_api_reads_total"
        }
    )


async def run(pair: Pair, rounds: int, seconds: float, orders: int) -> dict[str, Any]:
    trader = uuid.uuid4()
    token = mint_token(settings(pair, side="primary"), sub=trader, role="authenticated")
    headers = {"Authorization": f"Bearer {token}"}
    async with client(pair, side="primary") as http:
        for _ in range(orders):
            response = await http.post(
                "/graphql",
                json={"query": SUBMIT, "variables": {"input": order_input()}},
                headers=headers,
            )
            assert "errors" not in response.json(), response.text
    await pair.caught_up()
    timings: dict[Side, Timing] = {"primary": Timing(), "routed": Timing(), "replica": Timing()}
    added: list[float] = []
    routing: list[float] = []
    per_round: list[dict[str, float]] = []
    micro: Counter[str] = Counter()  # the routing microbenchmark's, left out of reads_answered
    order: list[Side] = ["primary", "routed", "replica"]
    for number in range(rounds):  # interleaved, rotating which goes first
        pair_round = {}
        for side in order[number % 3 :] + order[: number % 3]:
            this = Timing()
            async with client(pair, side=side) as http:
                await routing_round(http, headers, seconds, this)
                if side == "replica":
                    await token_round(http, headers, 20, added)
                    before = reads_answered()
                    routing.append(await routing_alone(http))
                    micro += {k: v - before.get(k, 0) for k, v in reads_answered().items()}
            timings[side].seconds += this.seconds
            timings[side].cpu += this.cpu
            pair_round[f"{side}_median_ms"] = round(statistics.median(this.seconds) * 1000, 3)
            pair_round[f"{side}_cpu_ms"] = round(sum(this.cpu) / len(this.cpu) * 1000, 3)
        per_round.append(pair_round)
    reads = reads_answered() - micro
    median = statistics.median
    added_ms = sorted(x * 1000 for x in added)
    choosing_ms = sorted(x * 1000 for x in CHOOSING)
    position_ms = sorted(x * 1000 for x in POSITION)
    return {
        "rounds": rounds,
        "reads_answered_by": dict(reads),
        "w1_requests": {side: len(t.seconds) for side, t in timings.items()},
        "w1_median_ms": {side: round(median(t.seconds) * 1000, 3) for side, t in timings.items()},
        "w1_cpu_per_request_ms": {
            side: round(sum(t.cpu) / len(t.cpu) * 1000, 3) for side, t in timings.items()
        },
        "w1_per_round": per_round,
        "routing_cpu_us_per_read": round(median(routing), 2),
        "routing_share_of_w1_cpu_percent": round(
            median(routing)
            / 1e6
            / (sum(timings["primary"].cpu) / len(timings["primary"].cpu))
            * 100,
            3,
        ),
        "token_choice_ms": {
            "count": len(choosing_ms),
            "p50": round(median(choosing_ms), 3),
            "p90": round(choosing_ms[int(len(choosing_ms) * 0.9)], 3),
            "max": round(choosing_ms[-1], 3),
        },
        "token_position_ms": {
            "count": len(position_ms),
            "p50": round(median(position_ms), 3),
            "p90": round(position_ms[int(len(position_ms) * 0.9)], 3),
        },
        "token_added_ms": {
            "count": len(added_ms),
            "p50": round(median(added_ms), 3),
            "p90": round(added_ms[int(len(added_ms) * 0.9)], 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--orders", type=int, default=100)
    arguments = parser.parse_args()
    with primary_and_replica() as pair:
        figures = asyncio.run(run(pair, arguments.rounds, arguments.seconds, arguments.orders))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
