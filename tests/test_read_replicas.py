"""Read replicas against a real streaming replica (tests/replica.py): routing, the consistency
token and its wait, the fallback to the primary, lag exclusion, and failover both ways.

The replica is made visibly late with ``recovery_min_apply_delay``: an order just submitted is
missing from what it answers, so "who answered" is seen in the data itself, and counted in
``order_api_reads_total`` too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.engine import URL

from app.db.consistency import TOKEN_HEADER, format_token
from tests.api import Client, api_client, api_settings
from tests.conftest import Db
from tests.replica import Pair, primary_and_replica
from tests.test_subscriptions import harness, state, subscribed

pytestmark = pytest.mark.slow

SUBMIT = """
mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id status } }
"""
PAGE = "query Page { orders(first: 50) { edges { node { id } } } }"


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with primary_and_replica() as started:
        yield started


@dataclasses.dataclass(frozen=True)
class PairDb:
    """What ``api_settings`` needs of a database: the primary's URLs."""

    owner_url: URL
    api_url: URL


def replica_url(pair: Pair) -> tuple[str]:
    return (pair.replica.url("authenticator").render_as_string(hide_password=False),)


def settings_for(pair: Pair, **overrides: Any) -> Any:
    database = PairDb(pair.primary.url(), pair.primary.url("authenticator"))
    return api_settings(database, read_database_urls=replica_url(pair), **overrides)


@pytest.fixture
async def late(pair: Pair) -> AsyncIterator[Pair]:
    """The pair with its replica caught up, then applying each commit 1.5 s late."""
    await pair.delay(0)
    await pair.caught_up()
    await pair.delay(1.5)
    yield pair
    await pair.delay(0)


def reads_by(database: str) -> float:
    return REGISTRY.get_sample_value("order_api_reads_total", {"database": database}) or 0.0


async def submit(client: Client, token: str) -> tuple[str, str]:
    """A new order's id and the consistency token of the answer (header and extensions agree)."""
    order = {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}
    response = await client.post(
        SUBMIT, {"input": {**order, "clientOrderId": uuid.uuid4().hex}}, token=token
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["extensions"]["consistencyToken"] == response.headers[TOKEN_HEADER]
    return body["data"]["submitOrder"]["id"], response.headers[TOKEN_HEADER]


async def page(
    client: Client, token: str, *, consistency: str | None = None, via: str = "header"
) -> tuple[int, list[str]]:
    """(status, the ids of the caller's orders) of one read, sending ``consistency`` back."""
    headers = {"Authorization": f"Bearer {token}"}
    payload: dict[str, Any] = {"query": PAGE, "operationName": "Page"}
    if consistency is not None and via == "header":
        headers[TOKEN_HEADER] = consistency
    elif consistency is not None:
        payload["extensions"] = {"consistencyToken": consistency}
    response = await client.http.post("/graphql", json=payload, headers=headers)
    if response.status_code != 200:
        return response.status_code, []
    return 200, [edge["node"]["id"] for edge in response.json()["data"]["orders"]["edges"]]


async def test_queries_read_the_replica_mutations_write_the_primary_and_a_token_reads_the_write(
    late: Pair,
) -> None:
    async with api_client(settings_for(late)) as client:
        trader = client.token(uuid.uuid4())
        order_id, token = await submit(client, trader)
        replica_reads = reads_by("replica1")
        # Twice: the resolvers, then the compiled statement they taught; the replica is late.
        assert await page(client, trader) == (200, [])
        assert await page(client, trader) == (200, [])
        assert reads_by("replica1") == replica_reads + 2
        # The token: no replica has the write within READ_YOUR_WRITES_WAIT_MS (500 ms), so
        # the primary answers, after that wait, on either path and either way of sending it.
        for via in ("header", "extensions"):
            started = time.monotonic()
            assert await page(client, trader, consistency=token, via=via) == (200, [order_id])
            assert 0.45 <= time.monotonic() - started < 1.4


async def test_a_token_waits_for_the_replica_to_replay_the_write(late: Pair) -> None:
    settings = settings_for(late, read_your_writes_wait_ms=4000)
    async with api_client(settings) as client:
        trader = client.token(uuid.uuid4())
        order_id, token = await submit(client, trader)
        replica_reads, primary_reads = reads_by("replica1"), reads_by("primary")
        started = time.monotonic()
        assert await page(client, trader, consistency=token) == (200, [order_id])
        assert 0.5 < time.monotonic() - started < 3.5  # the replica's 1.5 s, not the 4 s
        assert (reads_by("replica1"), reads_by("primary")) == (replica_reads + 1, primary_reads)
        # Replayed now, and known to be: the next read with the token does not wait.
        started = time.monotonic()
        assert await page(client, trader, consistency=token) == (200, [order_id])
        assert time.monotonic() - started < 0.3


@pytest.mark.parametrize("token", ["nonsense", "1.12", "2.0000000001000000", ""])
async def test_a_malformed_token_is_bad_user_input(pair: Pair, token: str) -> None:
    async with api_client(settings_for(pair)) as client:
        response = await client.http.post(
            "/graphql",
            json={"query": PAGE, "extensions": {"consistencyToken": token}},
            headers={"Authorization": f"Bearer {client.token(uuid.uuid4())}"},
        )
        assert response.status_code == 400
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_token_from_another_cluster_is_answered_by_the_primary_at_once(
    late: Pair,
) -> None:
    async with api_client(settings_for(late, read_your_writes_wait_ms=4000)) as client:
        trader = client.token(uuid.uuid4())
        order_id, token = await submit(client, trader)
        future = format_token(int(token.split(".")[1], 16) + 2**40)
        primary_reads = reads_by("primary")
        started = time.monotonic()
        assert await page(client, trader, consistency=future) == (200, [order_id])
        # At once: not after READ_YOUR_WRITES_WAIT_MS (4 s), nor the replica's 1.5 s delay.
        # (0.3 s was exceeded once, 0.79 s, by a CI pass on PostgreSQL 15.)
        assert time.monotonic() - started < 1.2
        assert reads_by("primary") == primary_reads + 1


async def wait_for_state(client: Client, state: str, within: float) -> float:
    """Seconds until /readyz says the replica is in ``state``; fails after ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        databases = (await client.http.get("/readyz")).json()["databases"]
        if databases[1]["state"] == state:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"replica1 not {state} within {within} s: {databases}")


async def test_a_replica_further_behind_than_allowed_is_not_read_until_it_catches_up(
    late: Pair,
) -> None:
    await late.delay(3)
    settings = settings_for(late, read_replica_max_lag_seconds=1.0)
    async with api_client(settings) as client:
        trader = client.token(uuid.uuid4())
        order_id, _ = await submit(client, trader)
        await wait_for_state(client, "lagging", within=3)
        readyz = (await client.http.get("/readyz")).json()["databases"]
        assert readyz[1]["lagSeconds"] > 1
        metrics = (await client.http.get("/metrics")).text
        assert 'order_api_database_up{database="replica1"} 0.0' in metrics
        assert await page(client, trader) == (200, [order_id])  # the primary's answer
        await late.delay(0)
        await wait_for_state(client, "up", within=3)
        replica_reads = reads_by("replica1")
        assert await page(client, trader) == (200, [order_id])
        assert reads_by("replica1") == replica_reads + 1
        assert (
            'order_api_database_up{database="replica1"} 1.0'
            in (await client.http.get("/metrics")).text
        )


async def read_continuously(client: Client, trader: str, until: asyncio.Event) -> list[int]:
    statuses = []
    while not until.is_set():
        statuses.append((await page(client, trader))[0])
        await asyncio.sleep(0.01)
    return statuses


async def test_reads_leave_a_replica_that_goes_away_without_errors_and_return_to_it(
    pair: Pair,
) -> None:
    await pair.delay(0)
    async with api_client(settings_for(pair)) as client:
        trader = client.token(uuid.uuid4())
        done = asyncio.Event()
        reader = asyncio.create_task(read_continuously(client, trader, done))
        await asyncio.sleep(0.2)
        try:
            await asyncio.to_thread(pair.replica.stop, "fast")
            await wait_for_state(client, "down", within=2)
            await asyncio.sleep(0.5)
        finally:
            await asyncio.to_thread(pair.replica.start)
        await wait_for_state(client, "up", within=3)
        replica_reads = reads_by("replica1")
        await asyncio.sleep(0.3)
        done.set()
        statuses = await reader
        assert set(statuses) == {200}, statuses
        assert reads_by("replica1") > replica_reads  # back on the replica


async def test_with_the_primary_away_reads_go_on_writes_are_503_and_work_again_when_it_is_back(
    pair: Pair,
) -> None:
    await pair.delay(0)
    async with api_client(settings_for(pair)) as client:
        trader = client.token(uuid.uuid4())
        order_id, _ = await submit(client, trader)
        await pair.caught_up()
        await asyncio.to_thread(pair.primary.stop, "fast")
        try:
            assert await page(client, trader) == (200, [order_id])
            order = {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}
            write = await client.post(
                SUBMIT, {"input": {**order, "clientOrderId": "while-away"}}, token=trader
            )
            assert write.status_code == 503
            error = write.json()["errors"][0]["extensions"]
            assert error["code"] == "SERVICE_UNAVAILABLE"
            await asyncio.sleep(1)  # past a check of the databases: the replica still serves
            assert await page(client, trader) == (200, [order_id])
        finally:
            await asyncio.to_thread(pair.primary.start)
        started = time.monotonic()
        while True:
            response = await client.post(
                SUBMIT, {"input": {**order, "clientOrderId": "while-away"}}, token=trader
            )
            if response.status_code == 200:
                break
            assert time.monotonic() - started < 5, response.text
            await asyncio.sleep(0.1)


async def test_subscription_re_reads_go_to_the_replica_once_it_has_the_change(late: Pair) -> None:
    await late.delay(0.3)  # below READ_YOUR_WRITES_WAIT_MS: the replica answers, late
    database = PairDb(late.primary.url(), late.primary.url("authenticator"))
    trader = uuid.uuid4()
    async with (
        harness(database, read_database_urls=replica_url(late)) as h,  # type: ignore[arg-type]
        subscribed(h, h.token(trader)) as stream,
    ):
        await h.subscribers(1)
        replica_reads = reads_by("replica1")
        order_id = await h.submit(trader)
        assert state(await stream.order()) == ("PENDING", 0, "SUBMITTED")
        await h.approve(order_id)
        assert state(await stream.order()) == ("PENDING", 0, "APPROVED")
        assert reads_by("replica1") >= replica_reads + 2


async def test_without_replicas_no_token_is_issued_and_none_is_read(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        trader = client.token(uuid.uuid4())
        order = {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}
        for _ in range(2):  # the resolvers, then the compiled mutation
            response = await client.post(
                SUBMIT, {"input": {**order, "clientOrderId": uuid.uuid4().hex}}, token=trader
            )
            assert response.status_code == 200
            assert TOKEN_HEADER not in response.headers
            assert "extensions" not in response.json()
        assert (await page(client, trader, consistency="not a token"))[0] == 200
