"""The API through PgBouncer in transaction pooling mode (as through Supabase's Supavisor on
port 6543), with ``DB_POOLER=transaction``.

Each transaction may run on another server session, so nothing may rely on a session: no
startup parameter the pooler refuses, no named prepared statement, the statement timeout
set per transaction, and the caller's role and claims never surviving into the next
transaction on that server session. Skipped when pgbouncer is not installed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from app.auth.claims import Claims
from app.db import failures
from app.db.failures import STATEMENT_TIMEOUT, DatabaseUnavailable
from app.db.urls import libpq_url
from app.engine.leases import LEASE_NAMESPACE
from app.engine.run import run_worker
from app.settings import SettingsError
from tests import pg
from tests.api import api_client, api_settings
from tests.conftest import Db
from tests.pooler import pgbouncer, through

ORDERS = "{ orders(first: 50) { edges { node { id traderId symbol } } } }"
# Not compiled (a fragment): the resolvers' path, through SQLAlchemy.
ORDERS_BY_RESOLVERS = (
    "query { orders(first: 50) { edges { node { ...o } } } } fragment o on Order { id traderId }"
)
VIEWER = "{ viewer { traderId role } }"
SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id traderId status } }"
TRADERS = 12
ORDERS_EACH = 3


@pytest.fixture(scope="module")
def bouncer(cluster: pg.Cluster) -> Iterator[URL]:
    # Few server connections for many clients: every transaction changes hands.
    with pgbouncer(cluster.owner_url, pool_size=3) as url:
        yield url


@pytest.fixture
def pooled(database: Db, bouncer: URL) -> Db:
    return dataclasses.replace(database, pooler=bouncer)


async def test_many_traders_at_once_through_the_pooler_each_see_only_their_own_rows(
    pooled: Db, owner_conn: asyncpg.Connection
) -> None:
    traders = [uuid.uuid4() for _ in range(TRADERS)]
    for trader in traders:
        await owner_conn.execute(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
            " SELECT $1, 'AAPL', 'BUY', 1, 'MARKET' FROM generate_series(1, $2)",
            trader,
            ORDERS_EACH,
        )
    settings = api_settings(pooled, db_pool_size=8)
    assert settings.db_pooler == "transaction"
    async with api_client(settings) as client:
        tokens = {trader: client.token(trader) for trader in traders}
        # Each trader submits one more order, concurrently (writes, through SQLAlchemy).
        submitted = await asyncio.gather(
            *(
                client.gql(
                    SUBMIT,
                    {
                        "input": {
                            "symbol": "MSFT",
                            "side": "SELL",
                            "quantity": 2,
                            "orderType": "MARKET",
                            "clientOrderId": f"pooled-{n}",
                        }
                    },
                    token=tokens[trader],
                )
                for n, trader in enumerate(traders)
            )
        )
        for trader, body in zip(traders, submitted, strict=True):
            assert "errors" not in body, body
            assert body["data"]["submitOrder"]["traderId"] == str(trader)

        async def ask(trader: uuid.UUID, query: str) -> tuple[uuid.UUID, str, dict]:
            response = await client.post(query, token=tokens[trader])
            assert response.status_code == 200, response.text
            return trader, query, response.json()

        rounds = [
            ask(trader, query)
            for _ in range(4)
            for trader in traders
            for query in (ORDERS, ORDERS_BY_RESOLVERS, VIEWER)
        ]
        answers = await asyncio.gather(*rounds)
        rows_checked = 0
        for trader, query, body in answers:
            assert "errors" not in body, body
            if query == VIEWER:
                assert body["data"]["viewer"] == {"traderId": str(trader), "role": "authenticated"}
                continue
            owners = Counter(edge["node"]["traderId"] for edge in body["data"]["orders"]["edges"])
            assert owners == {str(trader): ORDERS_EACH + 1}, (trader, owners)
            rows_checked += sum(owners.values())
        assert rows_checked == 4 * TRADERS * 2 * (ORDERS_EACH + 1)


async def test_without_db_pooler_the_failures_are_graphql_shaped_and_name_the_setting(
    pooled: Db, caplog: pytest.LogCaptureFixture
) -> None:
    failures._log_pooler_hint.cache_clear()
    async with api_client(api_settings(pooled, db_pooler="none")) as client:
        responses = await asyncio.gather(
            *(client.post(ORDERS, token=client.token(uuid.uuid4())) for _ in range(30))
        )
    failed = [response for response in responses if response.status_code != 200]
    assert failed, "every request worked: the pooler did not pool per transaction"
    for response in failed:
        assert response.status_code == 500
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    hints = [record for record in caplog.records if "set DB_POOLER=transaction" in record.message]
    assert len(hints) == 1


async def test_the_statement_timeout_holds_per_transaction_through_the_pooler(
    pooled: Db,
) -> None:
    settings = api_settings(pooled, statement_timeout_ms=200)
    async with api_client(settings) as client:
        database = client.app.state.database
        claims = Claims.anonymous()
        async with database.transaction(claims) as tx:
            assert await tx.scalar(text("SHOW statement_timeout")) == "200ms"
        with pytest.raises(DatabaseUnavailable) as caught:
            async with database.transaction(claims) as tx:
                await tx.scalar(text("SELECT pg_sleep(2)"))
        assert caught.value.reason == STATEMENT_TIMEOUT
        # And it is the transaction's own: nothing of it is left on the server sessions.
        conn = await asyncpg.connect(libpq_url(pooled.api_url), statement_cache_size=0)
        try:
            for _ in range(6):
                assert await conn.fetchval("SHOW statement_timeout") == "0"
        finally:
            await conn.close()


async def test_the_engine_refuses_a_transaction_pooler_for_its_leases(database: Db) -> None:
    # No pooler needed: the refusal comes from the settings, before any connection.
    settings = dataclasses.replace(api_settings(database), db_pooler="transaction")
    with pytest.raises(SettingsError, match="ENGINE_DATABASE_URL"):
        await run_worker(settings, asyncio.Event())


async def test_the_engine_through_a_session_mode_pooler_fills_what_the_pooled_api_takes(
    pooled: Db, tmp_path: Path, owner_conn: asyncpg.Connection
) -> None:
    # The deployment the README describes: the API on the transaction pooler, the engine on a
    # session-mode one (ENGINE_DATABASE_URL), where its leases, session advisory locks, hold
    # because each client connection keeps its server session.
    with pgbouncer(pooled.cluster.owner_url, pool_size=4, pool_mode="session") as sessions:
        engine_url = through(pooled.cluster.url(pooled.name, "authenticator"), sessions)
        settings = api_settings(
            pooled,
            engine_database_url=engine_url.render_as_string(hide_password=False),
            data_dir=tmp_path,
            venue_tick_seconds=0.05,
        )
        trader = uuid.uuid4()
        stop = asyncio.Event()
        async with api_client(settings) as client:
            worker = asyncio.create_task(run_worker(settings, stop))
            try:
                body = await client.gql(
                    SUBMIT,
                    {
                        "input": {
                            "symbol": "AAPL",
                            "side": "BUY",
                            "quantity": 5,
                            "orderType": "MARKET",
                        }
                    },
                    token=client.token(trader),
                )
                order_id = body["data"]["submitOrder"]["id"]
                query = "query($id: UUID!) { order(id: $id) { status filledQuantity } }"
                async with asyncio.timeout(20):
                    while True:
                        seen = await client.gql(query, {"id": order_id}, token=client.token(trader))
                        assert "errors" not in seen, seen
                        if seen["data"]["order"]["status"] == "FILLED":
                            break
                        await asyncio.sleep(0.05)
                assert seen["data"]["order"]["filledQuantity"] == 5
            finally:
                stop.set()
                await asyncio.wait_for(worker, 10)
    # Each lease was released on the server session that took it (or with the session, when
    # the pooler reset it for its next client): none is left held.
    held = await owner_conn.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND l.classid = $1 AND d.datname = current_database()",
        LEASE_NAMESPACE,
    )
    assert held == 0
