"""The change feed: which orders changed, read from the audit trail, fanned out to subscribers.

Every change of an order writes its ``execution_logs`` row in the same
transaction, and migration 004 numbers those rows (``seq``, an identity). A
server process that has subscribers reads the rows numbered after the last
one it saw, every ``poll_seconds``, as its login role (``authenticator``),
which may read ``seq``, ``order_id`` and ``trader_id`` and nothing else.
It never learns order data: a subscriber re-reads the order under its own
role and claims (graphql/subscriptions.py), so row level security stays the
only boundary.

Why it is shaped this way:

- Nothing goes over LISTEN/NOTIFY: any role may listen to or forge any
  channel, and a notifying transaction takes a database-wide lock at commit
  that serializes every writer (migration 004 says more).
- One reader per process, on a connection of its own: every ``poll_seconds``
  while the process has subscribers, every ``idle_poll_seconds`` while it has
  none (it keeps its position, so a new subscriber misses nothing committed
  after it subscribed). Not on the request pool: a busy pool must neither
  delay the feed nor look like an outage to every subscriber. The statement is
  two index range scans of ``seq`` (the new positions, the holes) in its own
  implicit transaction, so the connection may go through a transaction-mode
  pooler too.
- Positions are handed out when a row is inserted, not when it commits, so a
  transaction that commits late leaves a hole below positions already read.
  Holes are read again at every poll until they appear or ``hole_wait_seconds``
  pass (a rolled-back transaction leaves a hole for good).
- The feed is durable: after the database was unreachable, the reader goes on
  from where it stopped and delivers what was committed meanwhile. Subscribers
  still get one gap signal per outage, once the database answers again: their
  own re-reads failed meanwhile, and a hole may have timed out.
- Fan-out never waits for a subscriber. Each subscriber has a mailbox
  (db/mailbox.py), bounded in orders and in time, that hands out the orders
  that changed in batches, one re-read each: one slow client costs a bounded
  amount of memory and makes no one else wait, and a subscriber that cannot
  keep up gets the gap signal instead of falling silently behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from uuid import UUID

import asyncpg  # type: ignore[import-untyped]  # ships no type information

from app.db.mailbox import (
    DEFAULT_MAILBOX_CAPACITY,
    DEFAULT_MAX_LAG_SECONDS,
    Changed,
    Event,
    FeedStopped,
    Missed,
    Subscriber,
)

__all__ = ["ChangeFeed", "Changed", "Event", "FeedStopped", "Missed", "Subscriber"]

log = logging.getLogger(__name__)

APPLICATION_NAME = "order-api-change-feed"
"""How the feed's connection shows in ``pg_stat_activity``."""

MAX_HOLES = 10_000
"""Holes tracked at most; a larger jump of positions (a sequence that skipped ahead after a
crash) is not worth re-reading position by position."""

_START = "SELECT coalesce(max(seq), 0) FROM public.execution_logs"
# The positions after the newest read, and the holes below it (so the two never overlap),
# each branch an index scan of seq. Not "seq > $1 OR seq = ANY($2)": no index condition can
# serve an OR, so PostgreSQL walked the whole seq index in order, filtering, and a reader
# that was caught up scanned every audit row at every poll (9.5 s at 3,500,000 rows, longer
# than the read's timeout, so each poll left a backend scanning behind it).
_READ = """
SELECT seq, order_id, trader_id FROM (
    (SELECT seq, order_id, trader_id FROM public.execution_logs
      WHERE seq > $1 ORDER BY seq LIMIT $3)
    UNION ALL
    SELECT seq, order_id, trader_id FROM public.execution_logs
     WHERE seq = ANY($2::bigint[])
) AS feed
 ORDER BY seq
 LIMIT $3
"""


class ChangeFeed:
    """Reads the change feed for the subscribers of one server process.

    ``start`` and ``stop`` belong to the application lifespan. ``dsn`` is a libpq-style URL
    of the API's login role (``postgresql://authenticator:...@host/db``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        poll_seconds: float = 0.005,
        mailbox_capacity: int = DEFAULT_MAILBOX_CAPACITY,
        max_lag_seconds: float = DEFAULT_MAX_LAG_SECONDS,
        hole_wait_seconds: float = 60.0,
        idle_poll_seconds: float = 1.0,
        batch_size: int = 1000,
        backoff_initial_seconds: float = 0.1,
        backoff_max_seconds: float = 5.0,
        connect_timeout: float = 5.0,
        prepared_statements: bool = True,
    ) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        # A transaction-mode pooler may run each statement on another server connection.
        self._statement_cache_size = 100 if prepared_statements else 0
        self._conn: asyncpg.Connection | None = None
        self._poll_seconds = poll_seconds
        self._capacity = mailbox_capacity
        self._max_lag = max_lag_seconds
        self._hole_wait = hole_wait_seconds
        self._idle_poll_seconds = idle_poll_seconds
        self._batch_size = batch_size
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._by_order: dict[UUID, set[Subscriber]] = {}
        self._by_trader: dict[UUID, set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._healthy = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._tick = 0
        # The newest position read (None: start from the newest at the next read),
        # and the positions below it not seen yet, with the monotonic time they stop being awaited.
        self._high: int | None = None
        self._holes: dict[int, float] = {}
        self.polls = 0
        self.changes = 0
        """Changes handed to the subscribers' mailboxes' owners (one per audit row read)."""
        self.outages = 0
        self.lagged = 0
        """Subscribers marked as lagging, in all."""

    # --- subscribers ----------------------------------------------------------------------------

    def subscribe(
        self, *, order_id: UUID | None = None, trader_id: UUID | None = None
    ) -> Subscriber:
        """A mailbox for the changes of one order, of one trader's orders, or of every order.

        ``trader_id`` only narrows what is worth re-reading; it is never an access decision.
        """
        subscriber = Subscriber(
            self,
            order_id=order_id,
            trader_id=trader_id,
            capacity=self._capacity,
            max_lag=self._max_lag,
        )
        if self._stopping:
            subscriber._stop()
            return subscriber
        if order_id is not None:
            self._by_order.setdefault(order_id, set()).add(subscriber)
        elif trader_id is not None:
            self._by_trader.setdefault(trader_id, set()).add(subscriber)
        else:
            self._everything.add(subscriber)
        self._subscribed.set()  # an idle reader reads now, at the subscribers' pace
        return subscriber

    def _remove(self, subscriber: Subscriber) -> None:
        if subscriber.order_id is not None:
            _discard(self._by_order, subscriber.order_id, subscriber)
        elif subscriber.trader_id is not None:
            _discard(self._by_trader, subscriber.trader_id, subscriber)
        else:
            self._everything.discard(subscriber)

    def _subscribers(self) -> list[Subscriber]:
        everyone = list(self._everything)
        for group in (*self._by_order.values(), *self._by_trader.values()):
            everyone.extend(group)
        return everyone

    @property
    def subscriber_count(self) -> int:
        return (
            len(self._everything)
            + sum(len(s) for s in self._by_order.values())
            + sum(len(s) for s in self._by_trader.values())
        )

    @property
    def tick(self) -> int:
        """Counts changes read and gap signals. A read that starts at tick ``t`` sees every
        change read at a tick <= ``t`` (the feed read it, so it had committed)."""
        return self._tick

    @property
    def connected(self) -> bool:
        """Whether the last read of the feed succeeded."""
        return self._healthy.is_set()

    async def until_connected(self) -> None:
        """Waits until a read of the feed succeeds."""
        await self._healthy.wait()

    # --- reading ----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the change feed is already started")
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="order-change-feed")

    async def stop(self) -> None:
        self._stopping = True
        for subscriber in self._subscribers():
            subscriber._stop()
        self._by_order.clear()
        self._by_trader.clear()
        self._everything.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _run(self) -> None:
        delay = self._backoff_initial
        down = False
        while not self._stopping:
            try:
                changed, full = await self._read()
            except Exception as error:  # whatever the cause, the answer is to try again later
                self._healthy.clear()
                if not down:
                    down = True
                    self.outages += 1
                    log.warning("cannot read the change feed (%s); retrying", error)
                # Jitter keeps many server processes from retrying in lockstep after a restart.
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._backoff_max)
                continue
            if down:
                down = False
                log.info("reading the change feed again; subscribers are told to re-query")
                # Before the changes just read: a gap signal empties the mailboxes.
                self._announce_gap()
            now = time.monotonic()
            for order_id, trader_id in changed:
                self._deliver(order_id, trader_id, now)
            delay = self._backoff_initial
            self._healthy.set()
            if not full:
                await self._pause()

    async def _pause(self) -> None:
        if self.subscriber_count:
            await asyncio.sleep(self._poll_seconds)
            return
        self._subscribed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), self._idle_poll_seconds)

    async def _read(self) -> tuple[list[tuple[UUID, UUID]], bool]:
        """One read of the feed: the (order id, trader id) of each new change, and whether it
        was a full batch (more may be waiting)."""
        self.polls += 1
        if self._high is None:
            rows = await self._fetch(_START)
            self._high = int(rows[0][0])
            return [], False
        now = time.monotonic()
        changed: list[tuple[UUID, UUID]] = []
        rows = await self._fetch(_READ, self._high, list(self._holes), self._batch_size)
        for seq, order_id, trader_id in rows:
            if self._holes.pop(seq, None) is None:
                if seq <= self._high:
                    continue  # read already (a hole filled in the same batch)
                missing = seq - self._high - 1
                if 0 < missing <= MAX_HOLES - len(self._holes):
                    deadline = now + self._hole_wait
                    self._holes.update(dict.fromkeys(range(self._high + 1, seq), deadline))
                self._high = seq
            changed.append((order_id, trader_id))
        for seq, deadline in list(self._holes.items()):
            if deadline <= now:
                del self._holes[seq]
        return changed, len(rows) >= self._batch_size

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout,
                statement_cache_size=self._statement_cache_size,
                server_settings={"application_name": APPLICATION_NAME},
            )
        try:
            rows: list[asyncpg.Record] = await self._conn.fetch(
                sql, *args, timeout=self._connect_timeout
            )
        except BaseException:
            # Whatever went wrong, the next read starts on a fresh connection.
            self._conn.terminate()
            self._conn = None
            raise
        return rows

    def _deliver(self, order_id: UUID, trader_id: UUID, now: float) -> None:
        self.changes += 1
        self._tick += 1
        tick = self._tick
        for group in (
            self._by_order.get(order_id),
            self._by_trader.get(trader_id),
            self._everything,
        ):
            if group:
                for subscriber in group:
                    subscriber._offer(order_id, tick, now)

    def _announce_gap(self) -> None:
        self._tick += 1
        for subscriber in self._subscribers():
            subscriber._mark_missed("outage", self._tick)


def _discard(index: dict[UUID, set[Subscriber]], key: UUID, subscriber: Subscriber) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(subscriber)
        if not group:
            del index[key]
