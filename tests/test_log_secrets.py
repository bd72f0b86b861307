"""No token, claim set, password or secret in any log line, at any level: over requests that
succeed, fail in the database (a trigger's refusal, a statement timeout, a connection killed
under the pool) or are refused, and over a migration that sets AUTHENTICATOR_PASSWORD, with
every logger capturing at DEBUG, SQLAlchemy's too (which it keeps at WARNING unless told: an
operator turning SQL logging on must not log secrets either)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg
import pytest

from app.db.migrations import upgrade_to_head
from app.orders import lifecycle
from tests import pg
from tests.api import SECRET, api_client, api_settings
from tests.conftest import Db

CANARY = f"claim-canary-{uuid.uuid4().hex}"
SUBMIT = (
    'mutation { submitOrder(input: {symbol: "AAPL", side: BUY, quantity: 5, orderType: MARKET})'
    " { id } }"
)
CANCEL = "mutation($id: UUID!) { cancelOrder(id: $id) { id } }"


def capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # each statement and its parameters


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as a handler would write it, tracebacks included."""
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


async def test_no_token_claim_or_secret_in_any_log_line_when_requests_fail_in_the_database(
    database: Db,
    owner_conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    capture_everything(caplog)
    settings = api_settings(database, statement_timeout_ms=300, db_pool_size=1)
    async with api_client(settings) as client:
        trader_id = uuid.uuid4()
        trader = client.token(trader_id, canary=CANARY)
        engine = client.token(None, "service_role", canary=CANARY)
        tokens = [trader, engine]

        order_id = (await client.gql(SUBMIT, token=trader))["data"]["submitOrder"]["id"]
        for _ in range(2):  # the second time by the compiled statement (graphql/compiled/)
            await client.gql("{ orders { edges { node { id status } } } }", token=trader)
        assert "errors" not in await client.gql(CANCEL, {"id": order_id}, token=trader)

        # The lifecycle trigger refuses what the service would have refused first.
        monkeypatch.setattr(lifecycle, "allows", lambda *_: True)
        body = await client.gql(CANCEL, {"id": order_id}, token=trader)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["CONFLICT"]
        monkeypatch.undo()

        # A statement timeout: the read waits behind the owner's lock until it runs out.
        async with owner_conn.transaction():
            await owner_conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            body = await client.gql("{ orders { edges { cursor } } }", token=engine)
        assert body["errors"], body

        # The pooled connection is killed: setting the role and claims is what fails.
        await owner_conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'order-api' AND datname = current_database()"
        )
        response = await client.post("{ viewer { role } }", token=trader)
        assert response.status_code in (200, 503), response.text

        # Refused tokens: a forged signature and an expired token carry the canary too.
        header, payload, _ = trader.split(".")
        forged = f"{header}.{payload}.{'A' * 43}"
        expired = client.token(trader_id, canary=CANARY, exp=1)
        tokens += [forged, expired]
        for token in (forged, expired):
            assert (await client.post("{ viewer { role } }", token=token)).status_code == 401

    logged = logged_text(caplog)
    assert "statement timeout" in logged  # the failures above were logged, and are checked
    assert "request.jwt.claims" in logged  # so were the statements setting the claims
    assert CANARY not in logged
    assert SECRET not in logged
    for token in tokens:
        assert token not in logged
        assert token.split(".")[1] not in logged  # the claims, base64url-encoded


def test_the_authenticator_password_is_not_logged_even_when_sql_is(
    cluster: pg.Cluster, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture_everything(caplog)
    password = f"password-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("AUTHENTICATOR_PASSWORD", password)
    name = f"e_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg.admin_execute(cluster, f"CREATE DATABASE {name}"))
    try:
        upgrade_to_head(cluster.url(name).render_as_string(hide_password=False))
    finally:
        # The password is cluster-wide: leave the cluster as the other tests expect it.
        asyncio.run(pg.admin_execute(cluster, "ALTER ROLE authenticator PASSWORD NULL"))
        asyncio.run(pg.drop_test_database(cluster, name))
    logged = logged_text(caplog)
    assert "PASSWORD 'SCRAM-SHA-256$" in logged  # the statement was logged, with a verifier
    assert password not in logged
