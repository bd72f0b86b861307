"""Misconfiguration and outages, as the operator meets them: the real commands, one line each.

Every case runs the command as a subprocess, the way a person (or a container runtime)
does, and asserts a non-zero exit, the one line that says what is wrong, and no traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.db.migrations import PROJECT_ROOT
from app.settings import Settings
from tests.api import make_token
from tests.conftest import Db
from tests.sql import as_role
from tests.test_cli import SECRET, free_port, run_app

CLOSED = "postgresql://someone:hunter2-secret@127.0.0.1:{port}/orders"
TRADER = uuid.UUID("5e1f0000-0000-4000-8000-000000000001")


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there now


def assert_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "hunter2" not in result.stderr + result.stdout  # a password is never printed
    return lines[0]


def env_without_database(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if "DATABASE_URL" not in name}
    env.update(
        {"ORDER_API_DATA_DIR": str(tmp_path / "data"), "JWT_SECRET": SECRET},
        **extra,
    )
    return env


def run_clean(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Like run_app, with exactly ``env`` (run_app adds the test process's environment)."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "command", ["dev", "serve", "worker", "db upgrade", "documents list", "documents remove x"]
)
def test_a_database_at_a_closed_port_is_one_line_and_a_failure(
    command: str, tmp_path: Path
) -> None:
    url = CLOSED.format(port=closed_port())
    env = env_without_database(
        tmp_path, DATABASE_URL=url, AUTHENTICATOR_PASSWORD="pw", PORT=str(free_port())
    )
    result = run_clean("app", *command.split(), env=env)
    line = assert_one_line(result, "cannot connect to the database")
    assert "connection refused" in line
    assert "127.0.0.1" in line


def test_alembic_current_at_a_closed_port_is_one_line(tmp_path: Path) -> None:
    env = env_without_database(tmp_path, DATABASE_URL=CLOSED.format(port=closed_port()))
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "current"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_one_line(result, "cannot connect to the database", "connection refused")


@pytest.mark.parametrize(
    "url", ["not a url", "postgresql://u:hunter2@host:notaport/db", "mysql://u:hunter2@h/db"]
)
@pytest.mark.parametrize(
    "command", [("app", "dev"), ("app", "serve"), ("app", "worker"), ("alembic", "current")]
)
def test_a_malformed_database_url_is_one_line(
    url: str, command: tuple[str, str], tmp_path: Path
) -> None:
    env = env_without_database(tmp_path, DATABASE_URL=url)
    assert_one_line(run_clean(*command, env=env), "DATABASE_URL is not a PostgreSQL URL")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sub", "notauuid"], "not a UUID"),
        (["--sub", str(uuid.uuid4()), "--ttl", "0"], "at least 1 second"),
        (["--sub", str(uuid.uuid4()), "--ttl", "-60"], "at least 1 second"),
        (["--sub", str(uuid.uuid4()), "--ttl", "soon"], "not a whole number"),
    ],
)
def test_token_refuses_a_bad_sub_or_lifetime_in_one_line(args: list[str], expected: str) -> None:
    result = run_app("token", *args, env={"JWT_SECRET": SECRET})
    assert_one_line(result, expected)
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_database_url_without_a_way_to_log_in_as_authenticator_is_refused(
    command: str, database: Db, tmp_path: Path
) -> None:
    env = env_without_database(
        tmp_path, DATABASE_URL=database.owner_url.render_as_string(hide_password=False)
    )
    env.pop("AUTHENTICATOR_PASSWORD", None)
    line = assert_one_line(run_clean("app", command, env=env), "API_DATABASE_URL is not set")
    assert "AUTHENTICATOR_PASSWORD" in line
    # And the embedded server was never started instead.
    assert not (tmp_path / "data" / "pgdata").exists()


async def test_worker_with_only_database_url_works_the_configured_database(
    database: Db, owner_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    async with as_role(owner_conn, "authenticated", TRADER, commit=True):
        order_id = await owner_conn.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
            " VALUES ($1, 'AAPL', 'BUY', 10, 'MARKET') RETURNING id",
            TRADER,
        )
    env = env_without_database(
        tmp_path,
        DATABASE_URL=database.owner_url.render_as_string(hide_password=False),
        # Derived: API_DATABASE_URL = DATABASE_URL as authenticator with this password.
        AUTHENTICATOR_PASSWORD="derived-login",
        ENGINE_POLL_SECONDS="0.05",
        VENUE_TICK_SECONDS="0.05",
        WORKER_METRICS_PORT=str(metrics_port := free_port()),
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            "worker",
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        status = None
        async with asyncio.timeout(30):
            while status != "FILLED" and process.returncode is None:
                await asyncio.sleep(0.1)
                status = await owner_conn.fetchval(
                    "SELECT status::text FROM orders WHERE id = $1", order_id
                )
        assert status == "FILLED", log_path.read_text()
        assert not (tmp_path / "data" / "pgdata").exists()  # no embedded server involved
        # The worker's own counters, on its metrics port.
        async with httpx.AsyncClient() as http:
            scraped = await http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        fills = [
            line
            for line in scraped.text.splitlines()
            if line.startswith("order_api_engine_fills_total ")
        ]
        assert len(fills) == 1, scraped.text
        assert float(fills[0].split()[1]) >= 1, scraped.text
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)


def test_a_taken_port_is_one_line_before_anything_starts(database: Db, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = env_without_database(
            tmp_path,
            API_DATABASE_URL=database.api_url.render_as_string(hide_password=False),
            PORT=str(port),
        )
        for command in ("serve", "dev"):
            result = run_clean("app", command, env=env)
            line = assert_one_line(result, f"cannot listen on 127.0.0.1:{port}")
            assert "address already in use" in line
            assert "ready" not in result.stdout.lower()
    # dev refused before it started the embedded server or migrated anything.
    assert not (tmp_path / "data" / "pgdata").exists()


def test_serve_says_ready_only_once_it_listens_and_logs_json_lines(
    database: Db, tmp_path: Path
) -> None:
    port = free_port()
    env = env_without_database(
        tmp_path,
        API_DATABASE_URL=database.api_url.render_as_string(hide_password=False),
        PORT=str(port),
        LOG_FORMAT="json",
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "Order API ready" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        # The moment the line is there, the port answers.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        text = log_path.read_text()
        assert text.index("Application startup complete") < text.index("Order API ready")
        token = make_token(Settings(jwt_secret=SECRET), TRADER)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"query": "{ viewer { role } }"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert answer.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
    # Every line is one JSON object, uvicorn's included; one of them is the request's.
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    [request] = [line for line in lines if line["logger"] == "app.requests"]
    assert request["request_id"] == answer.headers["x-request-id"]
    assert (request["operation"], request["role"], request["status"]) == (
        "query viewer",
        "authenticated",
        200,
    )
    assert token not in log_path.read_text()
