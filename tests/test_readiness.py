"""The database's real state in /readyz, and an engine that backs off quietly while it is wrong.

The scenario of the issue: the tables are dropped (``alembic downgrade base``) under a
running server and engine, then migrated back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from alembic import command
from app import metrics
from app.db.migrations import alembic_config, head_revision
from app.engine.run import run_worker
from app.main import create_app
from tests.api import api_client, api_settings
from tests.conftest import Db
from tests.sql import as_role
from tests.test_cli import free_port

TRADER = uuid.UUID("4d1e0000-0000-4000-8000-000000000001")


def migrate(database: Db, revision: str) -> asyncio.Future[None]:
    url = database.owner_url.render_as_string(hide_password=False)
    action = command.upgrade if revision == "head" else command.downgrade
    return asyncio.ensure_future(asyncio.to_thread(action, alembic_config(url), revision))


async def test_readyz_tells_not_migrated_from_unreachable(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        ready = await client.http.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        await migrate(database, "base")
        behind = await client.http.get("/readyz")
        assert behind.status_code == 503
        assert behind.json() == {
            "status": "unavailable",
            "database": "not migrated",
            "migration": None,
            "expected": head_revision(),
        }
        await migrate(database, "head")
        assert (await client.http.get("/readyz")).status_code == 200

    closed = f"postgresql://authenticator@127.0.0.1:{free_port()}/postgres"
    settings = dataclasses.replace(api_settings(database), api_database_url=closed)
    app = create_app(settings)  # not started: its pool has never connected
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        down = await http.get("/readyz")
    assert down.status_code == 503
    assert down.json() == {"status": "unavailable", "database": "unreachable"}


async def test_engine_backs_off_and_logs_once_while_the_tables_are_missing(
    database: Db, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.engine")
    settings = api_settings(database, data_dir=tmp_path, engine_poll_seconds=0.05)
    stop = asyncio.Event()
    await migrate(database, "base")
    failures_before = metrics.ENGINE_PASS_FAILURES._value.get()
    worker = asyncio.create_task(run_worker(settings, stop))
    try:
        await asyncio.sleep(3.0)
        failures = metrics.ENGINE_PASS_FAILURES._value.get() - failures_before
        # Without backoff: a pass every 0.05 s, 60 in 3 s. With it: 0.1 + 0.2 + 0.4 + 0.8 + 1.6.
        assert 2 <= failures <= 7, failures
        logged = [r for r in caplog.records if r.name.startswith("app.engine")]
        warnings = [r for r in logged if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in logged]
        assert "not migrated (revision none, expected" in warnings[0].getMessage()
        assert warnings[0].exc_info is None  # a state, not a traceback
        assert len(logged) <= 3, [r.getMessage() for r in logged]

        # Migrated again: the engine notices (one line) and works orders.
        await migrate(database, "head")
        conn = await asyncpg.connect(database.dsn())
        try:
            async with as_role(conn, "authenticated", TRADER, commit=True):
                order_id = await conn.fetchval(
                    "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
                    " VALUES ($1, 'AAPL', 'BUY', 1, 'MARKET') RETURNING id",
                    TRADER,
                )
            async with asyncio.timeout(20):
                while not await conn.fetchval(  # noqa: ASYNC110 (polls the database)
                    "SELECT approved_at IS NOT NULL FROM orders WHERE id = $1", order_id
                ):
                    await asyncio.sleep(0.1)
        finally:
            await conn.close()

        def again() -> list[str]:
            return [r.getMessage() for r in caplog.records if "ready again" in r.getMessage()]

        async with asyncio.timeout(5):
            while not again():  # noqa: ASYNC110 (the line comes at the end of the pass)
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert len(again()) == 1
    finally:
        stop.set()
        await asyncio.wait_for(worker, 20)
