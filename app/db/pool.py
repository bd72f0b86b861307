"""The API's connection pool: SQLAlchemy's async pool with a first-come, first-served queue.

SQLAlchemy's async pool keeps its idle connections in an ``asyncio.Queue``, which lets
callers barge: a returned connection stays in the queue until the waiter it woke gets to
run, so a request arriving in between takes it (without waiting at all), and the woken
waiter finds the queue empty and queues again *at the back*. Under load some requests
then wait many turns while others never wait: at 32 concurrent clients on the shared
2-core machine the wait for a connection had a median of 11 ms and a p99 of 270 ms
(max 550 ms), and that wait was most of the API's p99.

``FairQueue`` hands a returned connection directly to the longest-waiting caller, and
takes an idle connection only when nobody waits, so connections go out in arrival order
(the same run: a wait p99 of 70-100 ms for a median of 3-16 ms). A caller that gives up
(``DB_POOL_TIMEOUT``, cancellation) just as it was handed a connection passes it on.

Every checkout's wait (opening a new connection included) is observed as
``order_api_db_pool_wait_seconds`` (app/metrics.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_only
from sqlalchemy.util import queue as sqla_queue

from app import metrics


class FairQueue(sqla_queue.QueueCommon[ConnectionPoolEntry]):
    """Idle connections, and the callers waiting for one, each served in order.

    Never both at once: a connection is put aside only when nobody waits, and a caller
    waits only when no connection is idle.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo  # SQLAlchemy's option; the pool never sets it here
        self._idle: deque[ConnectionPoolEntry] = deque()
        self._waiters: deque[asyncio.Future[ConnectionPoolEntry]] = deque()

    @property
    def waiting(self) -> int:
        """Callers waiting for a connection now."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    def qsize(self) -> int:
        return len(self._idle)

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._idle)

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # else it timed out or was cancelled: the next one
                waiter.set_result(item)
                return
        if self.full():
            raise sqla_queue.Full()
        self._idle.append(item)

    def put(
        self, item: ConnectionPoolEntry, block: bool = True, timeout: float | None = None
    ) -> None:
        # The pool puts back only what it took out, so there is always room.
        self.put_nowait(item)

    def get_nowait(self) -> ConnectionPoolEntry:
        if not self._idle:
            raise sqla_queue.Empty()
        return self._idle.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> ConnectionPoolEntry:
        if self._idle or not block:
            return self.get_nowait()
        # Called by the pool inside SQLAlchemy's greenlet, as its own queue's get is.
        return await_only(self._wait(timeout))

    async def _wait(self, seconds: float | None) -> ConnectionPoolEntry:
        waiter: asyncio.Future[ConnectionPoolEntry] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection in the same instant it gave up: not ours to keep.
                self.put_nowait(waiter.result())
            if isinstance(error, TimeoutError):
                raise sqla_queue.Empty() from None  # the pool makes it its TimeoutError
            raise


class FairQueuePool(AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` with connections handed out in arrival order."""

    _queue_class = FairQueue
    # Its log lines where SQLAlchemy's pool writes them (the "sqlalchemy" loggers, WARNING
    # by default), not among the app's: "Pool disposed" is no news to an operator.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def _do_get(self) -> ConnectionPoolEntry:
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            metrics.DB_POOL_WAIT_SECONDS.observe(time.perf_counter() - started)

    @property
    def waiting(self) -> int:
        queue = self._pool
        assert isinstance(queue, FairQueue)
        return queue.waiting

    @property
    def idle(self) -> bool:
        """Whether the next checkout takes an idle connection as it is: no wait for one, no new
        connection and no replacement, so nothing to await and no greenlet to run it in
        (app/db/session.py's ``_checkout``).

        The conditions are those under which SQLAlchemy's checkout (``get_connection``) and
        ``_refuse_closed_connection`` keep the connection; else it is replaced, which awaits.
        """
        idle = self._pool._idle  # type: ignore[attr-defined]  # a FairQueue (above)
        if not idle:
            return False
        record = idle[0]
        driver = record.driver_connection
        started = record.starttime
        return (
            driver is not None
            and not driver.is_closed()
            and self._recycle < 0
            and self._invalidate_time <= started
            and record._soft_invalidate_time <= started
        )
