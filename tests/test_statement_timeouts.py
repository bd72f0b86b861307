"""A statement that outlives STATEMENT_TIMEOUT_MS is cancelled by PostgreSQL (SQLSTATE 57014)
and answered HTTP 503 SERVICE_UNAVAILABLE, reason STATEMENT_TIMEOUT: retryable, nothing
written. It runs once: a compiled query that fails is answered, not run again through the
resolvers. A table held under an exclusive lock makes any statement on it wait past the
timeout, whatever the query and the policies look like.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from app.graphql import compiled
from tests.api import api_client, api_settings, statements_sent
from tests.conftest import Db

TIMEOUT_MS = 300
ORDERS = "{ orders(first: 5) { edges { node { id status } } } }"
# A fragment keeps this one on the resolvers' path.
ORDERS_BY_RESOLVERS = "{ orders(first: 5) { edges { node { ...o } } } } fragment o on Order { id }"
SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"
MARKET = {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}


@asynccontextmanager
async def orders_locked(owner_conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Every statement touching ``orders`` waits until the block ends."""
    tx = owner_conn.transaction()
    await tx.start()
    try:
        await owner_conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        await tx.rollback()


def timed_out(response: Any) -> None:
    assert response.status_code == 503, response.text
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "reason": "STATEMENT_TIMEOUT"}


async def test_a_statement_timeout_is_a_retryable_503_and_runs_once(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    settings = api_settings(database, statement_timeout_ms=TIMEOUT_MS)
    async with api_client(settings) as client:
        token = client.token(uuid.uuid4())
        assert (await client.post(ORDERS, token=token)).status_code == 200  # now compiled
        async with orders_locked(owner_conn):
            with statements_sent(client) as sent:
                started = time.monotonic()
                response = await client.post(ORDERS, token=token)
                elapsed = time.monotonic() - started
            timed_out(response)
            # The role and claims, then the compiled statement: no second run by the resolvers.
            assert len(sent) == 2, sent
            assert elapsed < 4 * TIMEOUT_MS / 1000

            timed_out(await client.post(ORDERS_BY_RESOLVERS, token=token))
            submitted = await client.post(
                SUBMIT, {"input": {**MARKET, "clientOrderId": "late-1"}}, token=token
            )
            timed_out(submitted)
        assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 0
        # Retryable indeed: once the lock is gone, the same requests succeed.
        assert (await client.post(ORDERS, token=token)).status_code == 200
        again = await client.post(
            SUBMIT, {"input": {**MARKET, "clientOrderId": "late-1"}}, token=token
        )
        assert again.status_code == 200, again.text
        assert "errors" not in again.json()


async def test_a_compiled_statement_that_fails_is_answered_once_like_the_resolvers_would(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        token = client.token(uuid.uuid4())
        assert (await client.post(ORDERS, token=token)).status_code == 200  # now compiled
        # A database error the resolvers would answer as INTERNAL_SERVER_ERROR too.
        await owner_conn.execute("REVOKE SELECT ON orders FROM authenticated")
        with statements_sent(client) as sent:
            response = await client.post(ORDERS, token=token)
        assert response.status_code == 200
        body = response.json()
        [error] = body["errors"]
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]
        assert body["data"] is None
        assert "orders" not in error["message"]  # no internals
        assert len(sent) == 2, sent  # not run again through the resolvers


async def test_a_query_that_fails_to_compile_raises_in_tests_and_takes_the_resolvers_else(
    database: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(document: str, operation_name: str | None) -> compiled.CompiledQuery | None:
        raise RuntimeError("a bug of the compiler")

    monkeypatch.setattr(compiled.compiler, "compile_query", broken)
    fallbacks = fallback_count()
    async with api_client(api_settings(database, compiled_queries_strict=False)) as client:
        token = client.token(uuid.uuid4())
        for _ in range(2):  # both answered by the resolvers
            response = await client.post(ORDERS, token=token)
            assert response.status_code == 200
            assert "errors" not in response.json()
    # Not silent: operators see each fallback in /metrics.
    assert fallback_count() == fallbacks + 2
    # The tests' setting (tests/api.py): a compiler bug fails the request instead.
    async with api_client(api_settings(database)) as client:
        response = await client.post(ORDERS, token=client.token(uuid.uuid4()))
        assert response.status_code == 500
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"


def fallback_count() -> float:
    sample = REGISTRY.get_sample_value("order_api_compiled_queries_total", {"outcome": "fallback"})
    return sample or 0.0
