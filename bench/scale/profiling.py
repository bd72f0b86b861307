"""Where a request's Python time goes: the whole ASGI app in-process, under cProfile.

    DATABASE_URL=... API_DATABASE_URL=... python -m bench.scale.profiling [--workload W2] [--requests 2000]

One client, requests in turn (so the profile is the server's CPU per request, not waiting);
prints the wall time per request, then the functions with the most time of their own and
the most cumulative time. Needs a database that holds the data set (python -m bench.scale
leaves none behind; load one with ``--orders`` into DATABASE_URL first).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import time
from typing import Any

from app.db.urls import libpq_url
from app.main import create_app
from app.settings import Settings
from bench.scale import dataset, workloads
from bench.scale.traders import SECRET, traders


def asgi_call(app: Any, token: str, body: dict[str, object]) -> Any:
    raw = json.dumps(body).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
    }  # fmt: skip

    async def call() -> None:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(dict(scope), receive, send)
        answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert sent[0]["status"] == 200, answer
        assert b'"errors"' not in answer, answer

    return call


async def run(args: argparse.Namespace) -> None:
    settings = Settings.from_env({**os.environ, "JWT_SECRET": SECRET})
    if settings.database_url is None or settings.api_database_url is None:
        raise SystemExit("set DATABASE_URL and API_DATABASE_URL (a loaded data set)")
    shape = dataset.Shape(args.orders)
    people = await traders(libpq_url(settings.database_url), shape, 200)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        calls = [
            asgi_call(app, t.token, workloads.body("ours", args.workload, t.id, t.order_id, n))
            for n, t in enumerate(people)
        ]
        for call in calls * 2:  # warm: compiled plans, pool, caches
            await call()
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for n in range(args.requests):
            await calls[n % len(calls)]()
        profiler.disable()
        elapsed = time.perf_counter() - started
    print(f"{args.workload}: {elapsed / args.requests * 1000:.2f} ms per request (profiled)")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
        print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("W1", "W2", "W3"), default="W2")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--orders", type=int, default=100_000, help="the loaded data set's")
    parser.add_argument("--top", type=int, default=30)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
