"""One LISTEN connection per server process, fanning order change announcements out.

Migration 001 makes PostgreSQL announce every committed change of an order on
the channel ``order_changes``, with identifiers only (order id, trader id).
This module keeps the one dedicated connection that listens, and hands each
announcement to the subscribers it may concern. It never learns order data:
a subscriber re-reads the order under its own role and claims
(graphql/subscriptions.py), so row level security stays the only boundary.

Why it is shaped this way:

- The connection is its own, not borrowed from the pool: LISTEN is session
  state, and a pooled connection goes to the next request. It logs in as the
  pool's role (``authenticator``); LISTEN needs no other role or privilege.
  It must reach PostgreSQL directly or through a session-mode pooler:
  a transaction-mode pooler (PgBouncer, Supavisor on 6543) drops LISTEN.
- Fan-out runs synchronously in the notification callback and never waits for
  a subscriber. Each subscriber has a bounded mailbox of the orders that
  changed, coalesced per order: a second announcement of an order still
  waiting adds nothing, because the subscriber re-reads the order's current
  state anyway. A mailbox that would overflow is emptied and the subscriber
  marked as having missed updates: one slow client costs a bounded amount of
  memory and makes no one else wait.
- Announcements made while nothing listens are gone for good. After every
  (re)connection, once LISTEN runs, every subscriber is told that updates may
  have been missed. The signal comes after LISTEN on purpose: whatever the
  subscriber reads because of it is at least as new as everything that will
  not be announced to it.
- The connection is watched (asyncpg's termination callback, and a periodic
  round trip for connections that die silently) and re-established with
  exponential backoff, capped, for as long as the process runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import asyncpg  # type: ignore[import-untyped]  # ships no type information

log = logging.getLogger(__name__)

CHANNEL = "order_changes"
APPLICATION_NAME = "order-api-listener"
"""How the listening connection shows in ``pg_stat_activity``."""

DEFAULT_MAILBOX_CAPACITY = 1000
"""Distinct orders a subscriber may have waiting before it is marked as lagging."""


@dataclass(frozen=True, slots=True)
class Changed:
    """The order changed (perhaps several times) since the subscriber last heard of it."""

    order_id: UUID
    tick: int
    """The listener's tick when its newest announcement arrived; see ``OrderChangeListener.tick``."""


@dataclass(frozen=True, slots=True)
class Missed:
    """Announcements may have been lost for this subscriber: its view must be rebuilt."""

    reason: Literal["reconnected", "lagged"]
    tick: int


Event = Changed | Missed


class ListenerStopped(Exception):
    """The listener shut down (the server is stopping); no more events will come."""


class Subscriber:
    """One subscription's mailbox. Create with ``OrderChangeListener.subscribe``."""

    def __init__(
        self,
        listener: OrderChangeListener,
        *,
        order_id: UUID | None,
        trader_id: UUID | None,
        capacity: int,
    ) -> None:
        self.order_id = order_id
        self.trader_id = trader_id
        self._listener = listener
        self._capacity = capacity
        # Insertion-ordered: changes are handed out oldest first.
        self._pending: dict[UUID, int] = {}
        self._missed: Missed | None = None
        self._closed = False
        self._wake = asyncio.Event()
        self.lagged_count = 0
        """How often this subscriber's mailbox overflowed."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def get(self) -> Event:
        """The next event; waits for one. Raises ListenerStopped once the listener stops."""
        while True:
            if self._closed:
                raise ListenerStopped
            if self._missed is not None:
                missed, self._missed = self._missed, None
                return missed
            if self._pending:
                order_id = next(iter(self._pending))
                return Changed(order_id, self._pending.pop(order_id))
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        """Stop receiving; idempotent."""
        if not self._closed:
            self._closed = True
            self._pending.clear()
            self._listener._remove(self)
            self._wake.set()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- called by the listener, synchronously, from the notification callback ---------------

    def _offer(self, order_id: UUID, tick: int) -> None:
        if self._missed is not None:
            # Whatever rebuilds the view after the pending gap signal reads state at least this
            # new, so queueing the change as well would only cost memory.
            return
        if order_id in self._pending:
            self._pending[order_id] = tick
            return
        if len(self._pending) >= self._capacity:
            self.lagged_count += 1
            log.warning(
                "a subscriber fell %d orders behind; it is told that it missed updates",
                self._capacity,
            )
            self._mark_missed("lagged", tick)
            return
        self._pending[order_id] = tick
        self._wake.set()

    def _mark_missed(self, reason: Literal["reconnected", "lagged"], tick: int) -> None:
        self._pending.clear()
        self._missed = Missed(reason, tick)
        self._wake.set()

    def _stop(self) -> None:
        self._closed = True
        self._pending.clear()
        self._wake.set()


class OrderChangeListener:
    """Owns the LISTEN connection and the subscribers of one server process.

    ``start``/``stop`` belong to the application lifespan. ``dsn`` is a libpq-style URL
    (``postgresql://authenticator:...@host/db``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        mailbox_capacity: int = DEFAULT_MAILBOX_CAPACITY,
        connect_timeout: float = 5.0,
        health_check_seconds: float = 10.0,
        backoff_initial_seconds: float = 0.1,
        backoff_max_seconds: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._capacity = mailbox_capacity
        self._connect_timeout = connect_timeout
        self._health_check_seconds = health_check_seconds
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._by_order: dict[UUID, set[Subscriber]] = {}
        self._by_trader: dict[UUID, set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        self._tick = 0
        self.connections = 0
        """How many times LISTEN was established (1 after start, +1 per reconnection)."""
        self.announcements = 0
        self.malformed = 0

    # --- subscribers ----------------------------------------------------------------------------

    def subscribe(
        self, *, order_id: UUID | None = None, trader_id: UUID | None = None
    ) -> Subscriber:
        """A mailbox for the changes of one order, of one trader's orders, or of every order.

        ``trader_id`` only narrows what is worth re-reading; it is never an access decision.
        """
        subscriber = Subscriber(
            self, order_id=order_id, trader_id=trader_id, capacity=self._capacity
        )
        if self._stopping:
            subscriber._stop()
        elif order_id is not None:
            self._by_order.setdefault(order_id, set()).add(subscriber)
        elif trader_id is not None:
            self._by_trader.setdefault(trader_id, set()).add(subscriber)
        else:
            self._everything.add(subscriber)
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
        """Counts announcements and gap signals. A read that starts at tick ``t`` sees every
        change whose announcement arrived at a tick <= ``t`` (the change had committed)."""
        return self._tick

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- the notification callback ---------------------------------------------------------------

    def _on_notification(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
            order_id = UUID(data["id"])
            trader_id = UUID(data["trader_id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            # Any role with a login can NOTIFY on any channel; a stray message is not news.
            self.malformed += 1
            log.warning("ignoring a malformed announcement on %s (%d bytes)", channel, len(payload))
            return
        self.announcements += 1
        self._tick += 1
        tick = self._tick
        for group in (
            self._by_order.get(order_id),
            self._by_trader.get(trader_id),
            self._everything,
        ):
            if group:
                for subscriber in group:
                    subscriber._offer(order_id, tick)

    def _announce_gap(self) -> None:
        self._tick += 1
        for subscriber in self._subscribers():
            subscriber._mark_missed("reconnected", self._tick)

    # --- the connection ------------------------------------------------------------------------

    async def start(self, *, wait_seconds: float = 5.0) -> None:
        """Start listening; waits (bounded) for the first LISTEN, then keeps trying in the
        background, so that a database that is still starting does not stop the server."""
        if self._task is not None:
            raise RuntimeError("the listener is already started")
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="order-change-listener")
        try:
            await asyncio.wait_for(self._connected.wait(), wait_seconds)
        except TimeoutError:
            log.warning(
                "not listening on %s after %.1fs; retrying in the background",
                CHANNEL,
                wait_seconds,
            )

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

    async def _run(self) -> None:
        delay = self._backoff_initial
        while not self._stopping:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout,
                    server_settings={"application_name": APPLICATION_NAME},
                )
            except Exception as error:  # whatever the cause, the answer is to try again later
                log.warning("cannot connect to listen on %s (%s); retrying", CHANNEL, error)
            else:
                listened = self.connections
                try:
                    await self._listen(conn)
                except Exception as error:
                    log.warning("listening on %s failed (%s); reconnecting", CHANNEL, error)
                else:
                    log.warning("lost the connection listening on %s; reconnecting", CHANNEL)
                finally:
                    self._connected.clear()
                    conn.terminate()
                if self.connections != listened:
                    # It did listen: this is a new outage, not more of the last one.
                    delay = self._backoff_initial
            # Jitter keeps many server processes from reconnecting in lockstep after a restart.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff_max)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        """Listen until the connection is lost."""
        lost = asyncio.Event()
        conn.add_termination_listener(_setter(lost))
        await conn.add_listener(CHANNEL, self._on_notification)
        self.connections += 1
        if self.connections > 1:
            log.info(
                "listening on %s again; subscribers are told they may have missed updates", CHANNEL
            )
        self._announce_gap()
        self._connected.set()
        while True:
            try:
                await asyncio.wait_for(lost.wait(), self._health_check_seconds)
            except TimeoutError:
                # A connection whose peer vanished without a word is only noticed by using it.
                await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
            else:
                return


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    def callback(_conn: Any) -> None:
        event.set()

    return callback


def _discard(index: dict[UUID, set[Subscriber]], key: UUID, subscriber: Subscriber) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(subscriber)
        if not group:
            del index[key]
