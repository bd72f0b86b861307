"""Python time per compiled request, by stage; and round trips, from the database's own log.

    DATABASE_URL=... API_DATABASE_URL=... python -m bench.stage_profile [--orders 100000]
        [--requests 3000] [--rounds 5] [--statement-log PATH]

What runs: the real app (``create_app``) behind uvicorn's own HTTP protocol (httptools, the
``HeaderDeadline`` subclass ``serve`` uses, and uvicorn's ProxyHeadersMiddleware), on uvloop,
against the database of DATABASE_URL (a loaded data set: ``python -m bench.scale --orders``).
Raw HTTP/1.1 bytes go into the protocol's ``data_received`` over an in-memory transport, so
what is excluded is the kernel's socket work and the event loop's wait for the socket; the
parsing, the ASGI stack, the app, the driver and the response bytes are all included. Logging
is configured as ``serve`` does (its handler writes to /dev/null: formatting is counted,
the terminal is not). Requests go one at a time, each with the next of 1,000 rotating tokens
(readers for W1, writers for W2), as ``python -m bench.scale`` does with wrk.

How it measures: the thread's CPU clock (``time.thread_time_ns``), so time spent waiting for
PostgreSQL is not counted and the database's own work never is (it is another process).

- ``total``: CPU per request with nothing instrumented, over ``--requests`` requests;
- the stages: the same requests again with stage marks. Each mark wraps one function of the
  pipeline (at run time, from here: the app is not changed) and moves the clock to that stage
  until it returns; so each stage's figure is its own time, exclusive of the stages it calls,
  and the stages add up to the instrumented total. The marks cost a little themselves: the
  difference between the two totals is shown.

Rounds interleave plain and instrumented runs; every figure is the median over rounds.

Round trips come from PostgreSQL, not from our code: with ``--statement-log`` (the cluster's
log file, readable here) the script turns ``log_min_duration_statement = 0`` on for a few
requests (ALTER SYSTEM, then reset), and counts, per request, what the server logged for the
API's sessions (application_name order-api): each simple-protocol statement and each
extended-protocol execute is one round trip, and each parse logged separately from its
execute (a statement prepared in a round trip of its own) one more.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import asyncpg.transaction
import uvicorn
import uvloop
from uvicorn.server import ServerState

from app import logs
from app.db.urls import libpq_url
from app.main import create_app
from app.serving import uvicorn_options
from app.settings import Settings
from bench.scale import cpu, dataset, pgbench, workloads
from bench.scale.traders import SECRET, Clients, clients

clock = time.thread_time_ns


class Timeline:
    """The stage the thread is in, and the CPU time each stage has had (exclusive)."""

    def __init__(self) -> None:
        self.current = "loop and other"
        self.stack: list[str] = []
        self.since = clock()
        self.totals: Counter[str] = Counter()

    def enter(self, stage: str) -> None:
        now = clock()
        self.totals[self.current] += now - self.since
        self.stack.append(self.current)
        self.current, self.since = stage, now

    def leave(self) -> None:
        now = clock()
        self.totals[self.current] += now - self.since
        self.current, self.since = self.stack.pop(), now

    def flush(self) -> None:
        now = clock()
        self.totals[self.current] += now - self.since
        self.since = now

    def reset(self) -> None:
        self.totals.clear()
        self.stack.clear()
        self.current = "loop and other"
        self.since = clock()


TIMELINE = Timeline()


_ORIGINALS: list[tuple[Any, str, Any]] = []


def mark(owner: Any, name: str, stage: str) -> None:
    """Count the time inside ``owner.name`` (and what it calls, unless marked) as ``stage``."""
    if owner is None:
        return  # not in this version of the code
    original = owner.__dict__.get(name) if isinstance(owner, type) else None
    if isinstance(owner, type) and original is None:
        return  # inherited or not in this version of the code: its caller's stage keeps it
    if not isinstance(owner, type):
        original = getattr(owner, name, None)
        if original is None:
            return
    _ORIGINALS.append((owner, name, original))
    function = getattr(owner, name)
    enter, leave = TIMELINE.enter, TIMELINE.leave
    if inspect.iscoroutinefunction(function):

        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            enter(stage)
            try:
                return await function(*args, **kwargs)
            finally:
                leave()

        replacement: Any = wrapped_async
    else:

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            enter(stage)
            try:
                return function(*args, **kwargs)
            finally:
                leave()

        replacement = wrapped
    if isinstance(original, staticmethod):
        replacement = staticmethod(replacement)
    setattr(owner, name, replacement)


def uninstrument() -> None:
    while _ORIGINALS:
        owner, name, original = _ORIGINALS.pop()
        setattr(owner, name, original)


def instrument() -> None:
    """The stage marks: one per arrow of the pipeline, whichever version of it is running."""
    import prometheus_client.metrics as prom
    import starlette.applications
    import starlette.middleware.cors
    import starlette.middleware.errors
    import starlette.middleware.exceptions
    import starlette.requests
    import starlette.responses
    import starlette.routing
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool.base import _ConnectionFairy
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
    from uvicorn.protocols.http import httptools_impl as http

    from app import main, telemetry
    from app.auth.jwt import TokenVerifier
    from app.db import session
    from app.graphql import body, endpoint, errors, inputs
    from app.graphql.compiled import compiler, mutations, plans
    from app.graphql.compiled import http as compiled_http
    from app.orders import service, writers

    marks: list[tuple[Any, str, str]] = [
        # uvicorn: request bytes -> scope; the ASGI messages -> response bytes
        (http.HttpToolsProtocol, "data_received", "http: parse (uvicorn)"),
        (http.RequestResponseCycle, "run_asgi", "http: cycle (uvicorn)"),
        (http.RequestResponseCycle, "send", "http: write (uvicorn)"),
        (http.RequestResponseCycle, "receive", "http: write (uvicorn)"),
        # the ASGI stack, outermost first
        (ProxyHeadersMiddleware, "__call__", "asgi: proxy headers (uvicorn)"),
        (starlette.applications.Starlette, "__call__", "asgi: starlette + errors mw"),
        (getattr(main, "Api", None), "__call__", "asgi: starlette + errors mw"),
        (
            starlette.middleware.errors.ServerErrorMiddleware,
            "__call__",
            "asgi: starlette + errors mw",
        ),
        (telemetry.RequestTelemetry, "__call__", "asgi: telemetry mw"),
        (starlette.middleware.cors.CORSMiddleware, "__call__", "asgi: cors mw"),
        (starlette.middleware.exceptions.ExceptionMiddleware, "__call__", "asgi: router"),
        (starlette.routing.Router, "__call__", "asgi: router"),
        (starlette.routing.Route, "handle", "asgi: router"),
        # the front stage
        (endpoint.GraphQLEndpoint, "__call__", "front: request object"),
        (endpoint.GraphQLEndpoint, "serve", "front: headers"),
        (body, "check_content_type", "front: body"),
        (body, "check_length_header", "front: body"),
        (body, "parse_json", "front: body"),
        (starlette.requests.Request, "body", "front: body"),
        (TokenVerifier, "verify", "token cache"),
        (endpoint.GraphQLEndpoint, "claims_for", "token cache"),
        (inputs, "request_id", "telemetry: note"),
        (telemetry, "note", "telemetry: note"),
        # the operation stage
        (compiled_http.CompiledPath, "answer", "plan: lookup"),
        (compiled_http.CompiledPath, "mutate", "plan: lookup"),
        (plans.Plans, "get", "plan: lookup"),
        (compiler.CompiledQuery, "bind", "plan: bind"),
        (mutations.CompiledMutation, "arguments", "plan: bind"),
        (mutations.CompiledMutation, "run", "use case (orders/)"),
        (service, "submit_order", "use case (orders/)"),
        (writers.Autocommit, "call", "use case (orders/)"),
        (mutations.CompiledMutation, "respond", "response: build"),
        # db/session.py, and the driver's own calls
        (session.Database, "read_json", "session"),
        (session.Database, "autocommit_row", "session"),
        (session.Database, "run", "session"),
        (AsyncEngine, "raw_connection", "session: pool checkout"),
        (session.Database, "_checkout", "session: pool checkout"),
        (_ConnectionFairy, "close", "session: pool checkin"),
        (asyncpg.Connection, "execute", "driver: settings/other"),
        (asyncpg.Connection, "fetchval", "driver: statement"),
        (asyncpg.Connection, "fetchrow", "driver: statement"),
        (asyncpg.Connection, "fetch", "driver: statement"),
        (asyncpg.transaction.Transaction, "start", "driver: BEGIN"),
        (asyncpg.transaction.Transaction, "commit", "driver: COMMIT"),
        # the answer
        (starlette.responses.Response, "__init__", "response: build"),
        (errors, "http_response", "response: build"),
        (starlette.responses.Response, "__call__", "response: send (asgi chain)"),
        (telemetry.RequestTelemetry, "_record", "telemetry: record"),
        (prom.MetricWrapperBase, "labels", "metrics"),
        (prom.Counter, "inc", "metrics"),
        (prom.Histogram, "observe", "metrics"),
        (logging.Handler, "handle", "logging: handler"),
    ]
    for owner, name, stage in marks:
        mark(owner, name, stage)


class Transport(asyncio.Transport):
    """The socket's stand-in: keeps what the server writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    protocol: asyncio.BaseProtocol


def raw_request(token: str, payload: dict[str, object]) -> bytes:
    data = json.dumps(payload).encode()
    return (
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data
    )


class Client:
    """One kept-alive connection to the app through uvicorn's protocol."""

    def __init__(self, app: Any, settings: Settings) -> None:
        config = uvicorn.Config(app, log_config=None, access_log=False, **uvicorn_options(settings))
        config.load()
        self.state = ServerState()
        self.protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.state, app_state={}
        )
        self.transport = Transport()
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)

    async def send(self, request: bytes) -> bytes:
        self.transport.written.clear()
        self.protocol.data_received(request)
        await asyncio.gather(*self.state.tasks)
        return bytes(self.transport.written)


def check(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or b'"errors"' in body:
        raise SystemExit(f"unexpected answer: {answer[:600]!r}")


def requests_for(workload: str, people: Clients, count: int) -> list[bytes]:
    out = []
    for n in range(count):
        person = people.for_request(workload, n)
        out.append(
            raw_request(
                person.token, workloads.body("ours", workload, person.id, person.order_id, n)
            )
        )
    return out


async def run_requests(client: Client, requests: list[bytes]) -> tuple[int, int]:
    """(CPU ns, wall ns) for sending ``requests`` in turn."""
    used, wall = clock(), time.perf_counter_ns()
    for request in requests:
        check(await client.send(request))
    return clock() - used, time.perf_counter_ns() - wall


def database_seconds(postmaster: int | None) -> float:
    return cpu.seconds(postmaster) if postmaster is not None else float("nan")


def replay(api_dsn: str, script: Path, transactions: int, postmaster: int | None) -> float:
    """The database's CPU µs per transaction under pgbench replaying ``script``, one client
    (bench/scale/pgbench.py's scripts: the API's statements, prepared)."""
    before = database_seconds(postmaster)
    subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-c", "1", "-t", str(transactions), "-f", str(script),
         api_dsn],
        check=True, capture_output=True,
    )  # fmt: skip
    return (database_seconds(postmaster) - before) / transactions * 1e6


LOG_LINE = re.compile(
    r"\[(?P<pid>\d+)\] order-api .*?LOG:\s+duration: [\d.]+ ms\s+(?P<kind>statement|parse|bind|execute)"
    r"(?: [^:]*)?: (?P<sql>.*)"
)


async def round_trips(
    owner_dsn: str, log_path: Path, client: Client, requests: list[bytes]
) -> dict[str, Any]:
    """What PostgreSQL logged for ``requests`` (log_min_duration_statement = 0 meanwhile)."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
        await conn.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '")
        await conn.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.5)
        start = os.path.getsize(log_path)  # noqa: ASYNC240 - a stat, between measurements
        for request in requests:
            check(await client.send(request))
        await asyncio.sleep(0.5)
        end = os.path.getsize(log_path)  # noqa: ASYNC240 - a stat, between measurements
    finally:
        await conn.execute("ALTER SYSTEM RESET log_min_duration_statement")
        await conn.execute("ALTER SYSTEM RESET log_line_prefix")
        await conn.execute("SELECT pg_reload_conf()")
        await conn.close()
    with log_path.open("rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    kinds: Counter[str] = Counter()
    statements: Counter[str] = Counter()
    for line in text.splitlines():
        found = LOG_LINE.search(line)
        if found is None:
            continue
        kind, sql = found["kind"], found["sql"].strip()
        kinds[kind] += 1
        if kind in ("statement", "execute"):
            statements[" ".join(sql.split())[:70]] += 1
    n = len(requests)
    # asyncpg sends a bind with its execute (one round trip); a statement it has not prepared
    # on this connection (new, or never cached) is parsed first, in a round trip of its own.
    trips = kinds["statement"] + kinds["execute"] + max(0, kinds["parse"])
    return {
        "requests": n,
        "per request": {k: round(v / n, 2) for k, v in sorted(kinds.items())},
        "round trips per request": round(trips / n, 2),
        "statements": {k: round(v / n, 2) for k, v in statements.most_common()},
    }


async def profile(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env({**os.environ, "JWT_SECRET": SECRET})
    if settings.database_url is None or settings.api_database_url is None:
        raise SystemExit("set DATABASE_URL and API_DATABASE_URL (a loaded data set)")
    logs.configure(settings.log_format)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            # for the process' life; before anything is measured
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115, ASYNC230
    owner_dsn = libpq_url(settings.database_url)
    people = await clients(owner_dsn, dataset.Shape(args.orders), 1000)
    postmaster = cpu.postmaster(await cpu.data_directory(owner_dsn))
    api_dsn = libpq_url(settings.api_database_url)
    scripts = pgbench.scripts(
        Path(tempfile.mkdtemp(prefix="stage-profile-")), dataset.Shape(args.orders)
    )
    app = create_app(settings)
    results: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        client = Client(app, settings)
        batches = {w: requests_for(w, people, args.requests) for w in args.workloads}
        for batch in batches.values():
            # Twice: the document is learned (compiled) on its first request, then cached.
            await run_requests(client, batch[:50])
            await run_requests(client, batch)
        plain: dict[str, list[float]] = {w: [] for w in batches}
        walls: dict[str, list[float]] = {w: [] for w in batches}
        database: dict[str, list[float]] = {w: [] for w in batches}
        replayed: dict[str, list[float]] = {w: [] for w in batches}
        staged: dict[str, list[Counter[str]]] = {w: [] for w in batches}
        for _ in range(args.rounds):  # interleaved: plain, instrumented, plain, ...
            for workload, batch in batches.items():
                before = database_seconds(postmaster)
                used, wall = await run_requests(client, batch)
                database[workload].append(
                    (database_seconds(postmaster) - before) / len(batch) * 1e6
                )
                plain[workload].append(used / len(batch) / 1000)
                walls[workload].append(wall / len(batch) / 1000)
                if args.replay:
                    replayed[workload].append(
                        replay(api_dsn, scripts[workload], len(batch), postmaster)
                    )
                instrument()
                TIMELINE.reset()
                await run_requests(client, batch)
                TIMELINE.flush()
                uninstrument()
                staged[workload].append(
                    Counter({k: v / len(batch) / 1000 for k, v in TIMELINE.totals.items()})
                )
        for workload, batch in batches.items():
            stages = sorted({k for c in staged[workload] for k in c})
            table = {k: statistics.median(c.get(k, 0.0) for c in staged[workload]) for k in stages}
            results[workload] = {
                "cpu µs per request, not instrumented (median of rounds)": round(
                    statistics.median(plain[workload]), 1
                ),
                "rounds": [round(v, 1) for v in plain[workload]],
                "wall µs per request (includes the database)": round(
                    statistics.median(walls[workload]), 1
                ),
                "database cpu µs per request (all its processes)": round(
                    statistics.median(database[workload]), 1
                ),
                "database cpu µs per transaction under pgbench (same statements)": round(
                    statistics.median(replayed[workload]), 1
                )
                if replayed[workload]
                else None,
                "cpu µs per request, instrumented": round(sum(table.values()), 1),
                "stages": {k: round(v, 1) for k, v in table.items()},
            }
            if args.statement_log is not None:
                results[workload]["statement log"] = await round_trips(
                    owner_dsn, args.statement_log, client, batch[: args.logged]
                )
    return results


def show(results: dict[str, Any]) -> None:
    for workload, result in results.items():
        print(f"\n== {workload} ==")
        for key, value in result.items():
            if key == "stages":
                print("stage                                  CPU µs/request")
                for stage, us in sorted(value.items(), key=lambda kv: -kv[1]):
                    print(f"  {stage:<38} {us:8.1f}")
            elif key == "statement log":
                print("statement log:", json.dumps(value, indent=2, ensure_ascii=False))
            else:
                print(f"{key}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=["W1", "W2"])
    parser.add_argument("--requests", type=int, default=2000, help="per round and workload")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--orders", type=int, default=100_000, help="the loaded data set's")
    parser.add_argument("--statement-log", type=Path, help="the cluster's log file")
    parser.add_argument("--logged", type=int, default=50, help="requests under the log")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--no-replay", dest="replay", action="store_false", help="skip the pgbench comparison"
    )
    args = parser.parse_args()
    results = uvloop.run(profile(args))
    show(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
