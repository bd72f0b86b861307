"""The README's promises, as a newcomer runs them: real processes, a real embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.auth.jwt import TokenVerifier
from app.db.migrations import PROJECT_ROOT
from app.settings import Settings

SECRET = "cli-test-secret-that-is-long-enough-0123456789"
SEED_TRADER = "11111111-1111-4111-8111-111111111111"


def run_app(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_token_command_mints_a_token_the_api_accepts() -> None:
    sub = uuid.uuid4()
    result = run_app(
        "token",
        "--sub",
        str(sub),
        "--role",
        "service_role",
        "--ttl",
        "60",
        env={"JWT_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    claims = await TokenVerifier(Settings(jwt_secret=SECRET)).verify(result.stdout.strip())
    assert (claims.sub, claims.role) == (sub, "service_role")


def test_token_command_refuses_a_trader_token_without_sub() -> None:
    result = run_app("token", env={"JWT_SECRET": SECRET})
    assert result.returncode != 0
    assert "--sub is required" in result.stderr


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    port = free_port()
    env = {
        **os.environ,
        "ORDER_API_DATA_DIR": str(tmp_path / "data"),
        # --port and --host win over PORT and HOST (PORT alone is serve's tests').
        "PORT": str(free_port()),
        "HOST": "localhost",
        "VENUE_TICK_SECONDS": "0.05",
        "ENGINE_POLL_SECONDS": "0.05",
    }
    for name in ("DATABASE_URL", "API_DATABASE_URL", "JWT_SECRET"):
        env.pop(name, None)
    # A file, not a pipe: the server logs every order, and a full pipe would block it.
    log_path = tmp_path / "dev.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "dev", "--port", str(port), "--host", "127.0.0.1"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 90
        match = None
        while match is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            match = re.search(r"Bearer ([\w.-]+)", log_path.read_text())
        assert match, log_path.read_text()
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, match.group(1), tmp_path / "data"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # dev started the embedded server, so dev stops it, and says so.
        assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists()
        assert log_path.read_text().rstrip().endswith("embedded PostgreSQL stopped")


@pytest.mark.slow
def test_dev_serves_the_seed_and_an_order_submitted_fills_with_its_audit_trail(
    dev_server: tuple[str, str, Path],
) -> None:
    url, token, data_dir = dev_server
    headers = {"Authorization": f"Bearer {token}"}

    def gql(query: str, variables: dict | None = None, auth: dict | None = headers) -> dict:
        response = httpx.post(
            f"{url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=auth or {},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    seeded = gql("{ viewer { traderId role } orders(first: 100) { edges { node { traderId } } } }")
    assert seeded["viewer"] == {"traderId": SEED_TRADER, "role": "authenticated"}
    assert seeded["orders"]["edges"]
    assert {e["node"]["traderId"] for e in seeded["orders"]["edges"]} == {SEED_TRADER}

    submitted = gql(
        'mutation { submitOrder(input: {symbol: "AAPL", side: BUY, quantity: 100,'
        " orderType: MARKET}) { id status } }"
    )["submitOrder"]
    assert submitted["status"] == "PENDING"

    query = (
        "query($id: UUID!) { order(id: $id) { status filledQuantity fills { quantityFilled venue }"
        " executionLogs { action status } } }"
    )
    deadline = time.monotonic() + 10
    order = gql(query, {"id": submitted["id"]})["order"]
    while order["status"] != "FILLED" and time.monotonic() < deadline:
        time.sleep(0.1)
        order = gql(query, {"id": submitted["id"]})["order"]
    assert order["status"] == "FILLED", order
    assert sum(f["quantityFilled"] for f in order["fills"]) == 100
    assert {f["venue"] for f in order["fills"]} == {"Mock"}
    actions = [log["action"] for log in order["executionLogs"]]
    assert actions[:3] == ["SUBMITTED", "APPROVED", "EXECUTED"]
    assert actions[-1] == "FILLED"
    # Nobody else sees it: no token at all, then anonymous queries see nothing.
    assert gql(query, {"id": submitted["id"]}, auth={})["order"] is None

    # The database dev uses is not stopped under it, and a --help never acts.
    env = {"ORDER_API_DATA_DIR": str(data_dir), "DATABASE_URL": "", "API_DATABASE_URL": ""}
    assert run_app("db", "stop", "--help", env=env).returncode == 0
    refused = run_app("db", "stop", env=env)
    assert refused.returncode == 1
    assert "is in use by another command" in refused.stderr
    assert gql("{ viewer { role } }")["viewer"] == {"role": "authenticated"}


@pytest.mark.slow
def test_dev_graphiql_opens_with_the_example_operations_and_the_dev_token(
    dev_server: tuple[str, str, Path],
) -> None:
    url, token, _ = dev_server
    page = httpx.get(f"{url}/graphql", headers={"Accept": "text/html"}, timeout=10)
    assert 'fetch("graphiql/defaults.json"' in page.text
    defaults = httpx.get(f"{url}/graphiql/defaults.json", timeout=10)
    assert defaults.headers["cache-control"] == "no-store"
    tabs = defaults.json()["tabs"]
    assert [tab["query"].split()[0] for tab in tabs] == ["query", "mutation", "subscription"]
    for tab in tabs:
        assert json.loads(tab["headers"]) == {"Authorization": f"Bearer {token}"}
    # Each tab runs as it is (the subscription over HTTP is refused only for its transport).
    for tab in tabs:
        body = httpx.post(
            f"{url}/graphql",
            json={"query": tab["query"], "variables": json.loads(tab["variables"] or "{}")},
            headers=json.loads(tab["headers"]),
            timeout=10,
        ).json()
        if tab["query"].startswith("subscription"):
            assert "WebSocket" in body["errors"][0]["message"], body
        else:
            assert "errors" not in body, body


@pytest.mark.slow
def test_a_first_dev_start_is_clean_and_says_ready_once_it_listens(
    dev_server: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, token, _ = dev_server
    response = httpx.post(
        f"{url}/graphql",
        json={"query": "{ viewer { role } }"},
        headers={"Authorization": f"Bearer {token}", "x-request-id": "first-look"},
        timeout=10,
    )
    assert response.status_code == 200
    log_path = tmp_path / "dev.log"
    # The engine takes over the seed's in-flight orders on its first passes (three at once;
    # a fourth shares its lease key with an order that may still be working).
    deadline = time.monotonic() + 20
    while log_path.read_text().count(": resumed (left in flight") < 3:
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)
    time.sleep(1.0)
    text = log_path.read_text()
    assert text.index("Application startup complete") < text.index("Order API ready")
    problems = [
        line for line in text.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)
    ]
    assert problems == [], text
    assert "Traceback" not in text
    # uvicorn's access log is off; the app's request line is there, without the token.
    request_lines = [line for line in text.splitlines() if "first-look" in line]
    assert len(request_lines) == 1, text
    assert "query viewer" in request_lines[0]
    assert "role=authenticated" in request_lines[0]
    assert token not in text.replace(f"Bearer {token}", "", 1)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["dev"],
        ["serve"],
        ["worker"],
        ["token"],
        ["db"],
        ["db", "upgrade"],
        ["db", "psql"],
        ["audit"],
        ["audit", "verify"],
        ["audit", "export"],
    ],
)
def test_each_commands_help_says_what_it_does_and_shows_an_example(command: list[str]) -> None:
    result = run_app(*command, "--help", env={})

    assert (result.returncode, result.stderr) == (0, "")
    usage, description, *_ = result.stdout.split("\n\n")
    assert usage.startswith(" ".join(["usage: python -m app", *command]))
    assert description.strip().endswith(".")
    assert re.search(r"\nexamples?:\n  python -m app |\nexamples?:\n  \w+=", result.stdout)


def test_dev_and_serve_help_list_where_they_listen() -> None:
    for command in ("dev", "serve"):
        text = run_app(command, "--help", env={}).stdout
        assert "--host HOST" in text
        assert "--port PORT" in text
