"""examples/ as a frontend developer runs them: the real client against a real ``python -m app dev``.

So that the examples cannot rot: a change of the API that breaks them fails here.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from app.db.migrations import PROJECT_ROOT
from tests.conftest import Db
from tests.test_cli import SEED_TRADER, free_port
from tests.test_cli_failures import env_without_database
from tests.test_serve_workers import start_until_ready

CLIENT = PROJECT_ROOT / "examples" / "python" / "client.py"
SEED_ORDERS = [f"a1000000-0000-4000-8000-00000000000{n}" for n in range(1, 6)]


@pytest.fixture
def dev_url_and_token(database: Db, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``python -m app dev`` on the test's database (seeded by dev itself), engine included."""
    port = free_port()
    env = env_without_database(
        tmp_path,
        DATABASE_URL=database.owner_url.render_as_string(hide_password=False),
        API_DATABASE_URL=database.api_url.render_as_string(hide_password=False),
        HOST="127.0.0.1",
        PORT=str(port),
    )
    log_path = tmp_path / "dev.log"
    process = start_until_ready(["dev"], env, log_path)
    try:
        # The token the banner offers, as the examples' README tells a newcomer to use.
        token = re.search(r"Bearer ([\w.-]+)", log_path.read_text())
        assert token, log_path.read_text()
        yield f"http://127.0.0.1:{port}/graphql", token.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_client(url: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLIENT), "--url", url, "--timeout", "20"],
        env={"ORDER_API_TOKEN": token, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
async def test_the_python_client_pages_submits_and_follows_its_order_until_filled(
    dev_url_and_token: tuple[str, str], database: Db
) -> None:
    url, token = dev_url_and_token

    refused = run_client(url, token[:-4] + "AAAA")
    assert refused.returncode == 1, refused
    [line] = refused.stderr.splitlines()
    assert line.startswith("error: UNAUTHENTICATED: invalid token"), line

    result = run_client(url, token)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"logged in: trader {SEED_TRADER}, role authenticated" in out
    # The seed trader's five orders, newest first, two to a page.
    listed = re.findall(r"page (\d): (\S+)", out)
    assert listed == [(str(n // 2 + 1), id) for n, id in enumerate(reversed(SEED_ORDERS))]
    [order_id] = re.findall(r"submitted: (\S+)", out)
    assert "retried with the same clientOrderId: the same order" in out
    assert re.search(r"^FILLED: 10 at \d", out, re.MULTILINE), out

    # What the client printed is what the database holds: one order for the two submits, filled.
    conn = await asyncpg.connect(database.dsn())
    try:
        rows = await conn.fetch(
            "SELECT id::text, status::text, filled_quantity FROM orders"
            " WHERE client_order_id LIKE 'example-%'"
        )
    finally:
        await conn.close()
    assert [tuple(row) for row in rows] == [(order_id, "FILLED", 10)]
