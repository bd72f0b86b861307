"""The two GraphQL servers, started as their users start them, on 127.0.0.1.

- ours: ``python -m app serve`` with only what it needs (API_DATABASE_URL, JWT_SECRET, PORT),
  so its defaults are what is measured: one worker per CPU, DB_POOL_SIZE connections each.
- PostGraphile 5 (bench/postgraphile, Amber preset on node:http; the same JWT, role and
  claims per request, so the same RLS) in 1 or several processes (node:cluster), a pool of
  ``PG_POOL`` connections each. Node >= 22 comes from the ``node`` npm package there;
  ``npm install`` runs on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.scale.traders import SECRET

ROOT = Path(__file__).resolve().parents[2]
PGL_DIR = ROOT / "bench" / "postgraphile"
PG_POOL = 10  # PostGraphile's pool per process: the API's DB_POOL_SIZE default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, body: dict[str, object], token: str | None) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", json.dumps(body).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


@dataclass
class Server:
    name: str  # "ours", "postgraphile"
    label: str  # what the report calls it
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def wait_ready(self, seconds: float = 120.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if post(self.port, {"query": "{ __typename }"}, None)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} not ready after {seconds:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_ours(api_url: str, workdir: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    env.update(API_DATABASE_URL=api_url, JWT_SECRET=SECRET, HOST="127.0.0.1", PORT=str(port))
    log = workdir / "ours.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server("ours", "this API (python -m app serve)", proc, port, log)
    server.wait_ready()
    return server


def node() -> str:
    """Node >= 22 from bench/postgraphile's node_modules, installing them on first use."""
    modules = PGL_DIR / "node_modules"
    if not (modules / "postgraphile" / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is not on PATH: needed once to install bench/postgraphile")
        print("installing PostGraphile (npm install in bench/postgraphile)", file=sys.stderr)
        subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=PGL_DIR, check=True)
    return str(modules / ".bin" / "node")


def start_postgraphile(api_url: str, workdir: Path, processes: int) -> Server:
    url = make_url(api_url)
    port = free_port()
    env = dict(os.environ)
    env.update(
        PGHOST=str(url.query.get("host") or url.host or "localhost"),
        PGDATABASE=url.database or "postgres",
        PGUSER=url.username or "authenticator",
        PG_POOL_MAX=str(PG_POOL),
        JWT_SECRET=SECRET,
        HOST="127.0.0.1",
        PORT=str(port),
        PROCESSES=str(processes),
        NODE_ENV="production",
        GRAPHILE_ENV="production",
    )
    if url.port:
        env["PGPORT"] = str(url.port)
    if url.password:
        env["PGPASSWORD"] = url.password
    log = workdir / f"postgraphile-{processes}.log"
    proc = subprocess.Popen(
        [node(), "cluster.mjs"],
        cwd=PGL_DIR,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    plural = "es" if processes > 1 else ""
    server = Server(
        "postgraphile", f"PostGraphile 5 ({processes} process{plural})", proc, port, log
    )
    server.wait_ready()
    return server
