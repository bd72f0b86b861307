"""The hot paths take an idle pooled connection without SQLAlchemy's greenlet, but only one
that can be kept as it is: a connection the server closed while it sat idle, or one the pool
was told to replace, is replaced the awaiting way, and the read still succeeds once.
(A coroutine left unawaited by a checkout that tried to await would fail the test: pytest
turns the warning into an error.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from app.auth.claims import Claims
from app.db.pool import FairQueuePool
from app.db.session import Database, open_database
from app.db.urls import async_url
from tests.api import api_settings
from tests.conftest import Db

BACKEND = "SELECT json_build_object('pid', pg_backend_pid())::text"
CALLER = Claims(
    role="authenticated", sub=uuid.uuid4(), raw={"role": "authenticated"}, expires_at=None
)


@pytest.fixture
async def one_connection(database: Db) -> AsyncIterator[Database]:
    settings = api_settings(database, db_pool_size=1)
    assert settings.api_database_url is not None
    db = open_database(async_url(settings.api_database_url), settings, pooler=settings.db_pooler)
    try:
        yield db
    finally:
        await db.dispose()


def pool_of(db: Database) -> FairQueuePool:
    pool = db.engine.sync_engine.pool
    assert isinstance(pool, FairQueuePool)
    return pool


def waits_observed() -> float:
    return REGISTRY.get_sample_value("order_api_db_pool_wait_seconds_count") or 0.0


async def driver_of(db: Database) -> Any:
    proxied = await db._checkout()
    try:
        return proxied.driver_connection
    finally:
        proxied.close()


async def test_an_idle_connection_is_taken_as_it_is_and_its_wait_is_still_observed(
    one_connection: Database,
) -> None:
    await one_connection.read_json(CALLER, BACKEND, ())
    assert pool_of(one_connection).idle
    before = waits_observed()
    first = await driver_of(one_connection)
    await one_connection.read_json(CALLER, BACKEND, ())
    assert await driver_of(one_connection) is first
    assert waits_observed() == before + 3


async def test_a_connection_the_pool_was_told_to_replace_is_replaced_before_a_read(
    one_connection: Database,
) -> None:
    await one_connection.read_json(CALLER, BACKEND, ())
    proxied = await one_connection._checkout()
    old = proxied.driver_connection
    proxied.invalidate(soft=True)  # as SQLAlchemy marks connections after a disconnect
    proxied.close()
    assert not pool_of(one_connection).idle
    assert await one_connection.read_json(CALLER, BACKEND, ())
    assert await driver_of(one_connection) is not old
    assert pool_of(one_connection).idle


async def test_a_connection_the_server_closed_while_idle_is_replaced_before_a_read(
    database: Db, one_connection: Database
) -> None:
    if database.pooler is not None:
        pytest.skip("the pooler, not the API's connection, would see the backend end")
    first = await one_connection.read_json(CALLER, BACKEND, ())
    owner = await asyncpg.connect(database.dsn())
    try:
        await owner.execute("SELECT pg_terminate_backend(($1::json ->> 'pid')::int)", first)
    finally:
        await owner.close()
    for _ in range(100):  # asyncpg notices the server's goodbye when it arrives
        if not pool_of(one_connection).idle:
            break
        await asyncio.sleep(0.02)
    assert not pool_of(one_connection).idle
    assert await one_connection.read_json(CALLER, BACKEND, ()) != first
