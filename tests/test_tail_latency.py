"""What keeps a busy worker's slowest requests close to its typical one (README, "Tail
latency"): connections handed out in arrival order, and the signals an operator reads."""

from __future__ import annotations

import asyncio
import gc
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty

from app.auth.claims import Claims
from app.db.failures import DatabaseUnavailable
from app.db.pool import FairQueue, FairQueuePool
from tests.api import api_client, api_settings
from tests.conftest import Db
from tests.test_cli_failures import assert_one_line, env_without_database, run_clean
from tests.test_metrics import value
from tests.test_serve_workers import children, serving, socket_inodes

# The compiled path (Database.read_json) and the resolvers' (Database.transaction).
COMPILED = "{ orders(first: 5) { edges { node { id } } } }"
RESOLVERS = "{ orders(first: 5) { edges { node { ...o } } } } fragment o on Order { id }"


def get(queue: FairQueue, seconds: float = 5.0) -> asyncio.Task[object]:
    """A caller waiting for a connection, as the pool asks for one (inside SQLAlchemy's
    greenlet)."""
    return asyncio.ensure_future(greenlet_spawn(queue.get, True, seconds))


async def test_a_returned_connection_goes_to_the_caller_waiting_not_to_a_newcomer() -> None:
    queue = FairQueue(2)
    waiting = get(queue)
    await asyncio.sleep(0.01)
    assert queue.waiting == 1
    queue.put_nowait("connection")  # type: ignore[arg-type]
    # asyncio.Queue would leave it idle until the waiter runs, for anyone to take.
    with pytest.raises(Empty):
        queue.get_nowait()
    assert await waiting == "connection"
    assert queue.waiting == 0


async def test_waiting_callers_are_served_in_arrival_order() -> None:
    queue = FairQueue(3)
    callers = []
    for _ in range(3):
        callers.append(get(queue))
        await asyncio.sleep(0.01)
    for n in range(3):
        queue.put_nowait(n)  # type: ignore[arg-type]
    assert [await caller for caller in callers] == [0, 1, 2]


async def test_a_caller_that_gives_up_is_skipped_and_one_handed_a_connection_passes_it_on() -> None:
    queue = FairQueue(2)
    with pytest.raises(Empty):  # the pool turns this into its TimeoutError (POOL_EXHAUSTED)
        await greenlet_spawn(queue.get, True, 0.05)
    assert queue.waiting == 0
    cancelled, served = get(queue), get(queue)
    await asyncio.sleep(0.01)
    queue.put_nowait("connection")  # type: ignore[arg-type]  # handed to `cancelled`...
    cancelled.cancel()  # ...which gives up before it ran: the next caller gets it
    assert await served == "connection"
    assert cancelled.cancelled()
    assert queue.qsize() == 0


async def test_requests_on_both_paths_wait_their_turn_and_the_wait_is_measured(
    database: Db,
) -> None:
    settings = api_settings(database, db_pool_size=1, db_pool_timeout=5.0)
    async with api_client(settings) as client:
        pool = client.app.state.database.engine.sync_engine.pool
        assert isinstance(pool, FairQueuePool)
        token = client.token(uuid.uuid4())
        await client.post(COMPILED, token=token)  # learned: compiled from now on
        before = (await client.http.get("/metrics")).text
        answered: list[str] = []

        async def ask(name: str, document: str) -> None:
            response = await client.post(document, token=token)
            assert response.status_code == 200
            assert "errors" not in response.json()
            answered.append(name)

        async with client.app.state.database.engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")
            asking = []
            for name, document in [("a", COMPILED), ("b", RESOLVERS), ("c", COMPILED)]:
                asking.append(asyncio.create_task(ask(name, document)))
                await waiting(pool, len(asking))
            await asyncio.sleep(0.2)  # held for 0.2 s at least
        await asyncio.gather(*asking)
        after = (await client.http.get("/metrics")).text
    assert answered == ["a", "b", "c"]
    waits = "order_api_db_pool_wait_seconds"
    assert value(after, f"{waits}_count") - value(before, f"{waits}_count") >= 3
    assert value(after, f"{waits}_sum") - value(before, f"{waits}_sum") >= 0.2 * 3


async def waiting(pool: FairQueuePool, callers: int) -> None:
    for _ in range(500):
        if pool.waiting >= callers:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{pool.waiting} callers waiting, not {callers}")


async def test_an_exhausted_pool_is_still_answered_503_pool_exhausted(database: Db) -> None:
    settings = api_settings(database, db_pool_size=1, db_pool_timeout=0.1)
    async with api_client(settings) as client:
        db = client.app.state.database
        async with db.engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")
            with pytest.raises(DatabaseUnavailable) as refused:
                await db.read_json(Claims.anonymous(), "SELECT '1'", [])
        assert refused.value.reason == "POOL_EXHAUSTED"
        assert pool_is_idle(db.engine.sync_engine.pool)


def pool_is_idle(pool: object) -> bool:
    assert isinstance(pool, FairQueuePool)
    return pool.waiting == 0 and pool.checkedout() == 0


async def test_metrics_show_event_loop_lag_and_gc_pauses(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        await asyncio.sleep(0.35)  # a few samples of the loop's lag (every 0.1 s)
        before = (await client.http.get("/metrics")).text
        gc.collect()
        after = (await client.http.get("/metrics")).text
    assert value(before, "order_api_event_loop_lag_seconds_count") >= 2
    full = "order_api_gc_pause_seconds_count"
    assert value(after, full, generation="2") > value(before, full, generation="2")


@pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balances on Linux only")
def test_each_worker_listens_on_its_own_socket_and_a_second_server_is_still_refused(
    database: Db, tmp_path: Path
) -> None:
    with serving(database, tmp_path, "--workers", "2") as (process, port):
        workers = children(process.pid)
        listening = {pid: listening_sockets(pid, port) for pid in workers}
        assert all(len(inodes) == 1 for inodes in listening.values()), listening
        assert len(set().union(*listening.values())) == 2  # one each, not one shared
        assert not listening_sockets(process.pid, port)  # the parent accepts nothing
        env = env_without_database(
            tmp_path,
            API_DATABASE_URL=database.api_url.render_as_string(hide_password=False),
            PORT=str(port),
        )
        second = run_clean("app", "serve", "--workers", "2", env=env)
    line = assert_one_line(second, f"cannot listen on 127.0.0.1:{port}")
    assert "address already in use" in line
    assert second.returncode == 1


def listening_sockets(pid: int, port: int) -> set[int]:
    """The inodes of the sockets ``pid`` holds that listen on ``port``."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # TCP_LISTEN
            listening.add(int(fields[9]))
    return listening & socket_inodes(pid)
