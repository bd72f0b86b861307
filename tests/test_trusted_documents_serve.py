"""Trusted documents in a deploy: ``documents add`` and ``documents remove`` against a running
``python -m app serve --workers 2``, which picks both up without a restart."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path

import httpx

from app.settings import Settings
from tests.api import make_token
from tests.conftest import Db
from tests.test_cli import SECRET
from tests.test_cli_failures import env_without_database, run_clean
from tests.test_serve_workers import children, serving

TRADER = uuid.UUID("d0c00000-0000-4000-8000-0000000000f1")
VIEWER = "query Viewer { viewer { role } }"
DOCUMENT_ID = f"sha256:{hashlib.sha256(VIEWER.encode()).hexdigest()}"
PICKUP_SECONDS = 5.0


def answers(port: int, token: str, requests: int = 30) -> set[int]:
    """The statuses of ``requests`` requests for the document, each on a new connection (so
    that every worker is asked: a worker holds the connections it accepted)."""
    statuses = set()
    for _ in range(requests):
        response = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"documentId": DOCUMENT_ID},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        statuses.add(response.status_code)
    return statuses


def seconds_until(port: int, token: str, status: int) -> float:
    """From now until a round of requests that every worker answered with ``status`` began."""
    started = time.monotonic()
    while True:
        round_started = time.monotonic()
        if answers(port, token) == {status}:
            return round_started - started
        assert time.monotonic() - started < PICKUP_SECONDS + 10, "not picked up"


def test_every_worker_picks_up_an_addition_and_a_removal_without_a_restart(
    database: Db, tmp_path: Path
) -> None:
    token = make_token(Settings(jwt_secret=SECRET), TRADER)
    manifest = tmp_path / "persisted-documents.json"
    manifest.write_text(json.dumps({DOCUMENT_ID: VIEWER}))
    owner = env_without_database(
        tmp_path, DATABASE_URL=database.owner_url.render_as_string(hide_password=False)
    )
    with serving(database, tmp_path, "--workers", "2") as (process, port):
        workers = children(process.pid)
        assert len(workers) == 2
        assert answers(port, token) == {400}

        added = run_clean("app", "documents", "add", str(manifest), env=owner)
        assert added.returncode == 0, added.stderr
        assert seconds_until(port, token, 200) < PICKUP_SECONDS

        removed = run_clean("app", "documents", "remove", DOCUMENT_ID, env=owner)
        assert removed.returncode == 0, removed.stderr
        assert seconds_until(port, token, 400) < PICKUP_SECONDS
        assert children(process.pid) == workers  # no worker was restarted
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log
    assert log.count("trusted documents at version") >= 6  # start, add, remove: per worker
