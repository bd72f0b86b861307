"""A subscriber's mailbox: the orders that changed since it last took them (db/change_feed.py).

Coalesced per order (a subscriber re-reads the order's current state anyway),
handed out oldest first and in batches (one re-read for many orders,
graphql/subscriptions.py), and bounded twice: in orders (memory) and in time
(how long a change may wait). Past either bound the mailbox is emptied and the
subscriber gets the gap signal instead: a subscriber that cannot keep up is
told so rather than falling silently behind, and costs no one else anything.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Literal, Protocol
from uuid import UUID

log = logging.getLogger(__name__)

DEFAULT_MAILBOX_CAPACITY = 1000
"""Distinct orders a subscriber may have waiting before it is marked as lagging."""

DEFAULT_MAX_LAG_SECONDS = 1.0
"""How long a change may wait in a subscriber's mailbox before it is marked as lagging."""


@dataclass(frozen=True, slots=True)
class Changed:
    """The order changed (perhaps several times) since the subscriber last heard of it."""

    order_id: UUID
    tick: int
    """The feed's tick when its newest change was read; see ``ChangeFeed.tick``."""


@dataclass(frozen=True, slots=True)
class Missed:
    """Changes may have been lost for this subscriber: its view must be rebuilt."""

    reason: Literal["outage", "lagged"]
    tick: int


Event = Changed | Missed


class FeedStopped(Exception):
    """The feed shut down (the server is stopping); no more events will come."""


class Feed(Protocol):
    """What a mailbox needs of its feed (db/change_feed.py's ChangeFeed), named here so that
    the two modules do not import each other."""

    lagged: int

    @property
    def tick(self) -> int: ...

    def _remove(self, subscriber: Subscriber) -> None: ...


class Subscriber:
    """One subscription's mailbox. Create with ``ChangeFeed.subscribe``."""

    def __init__(
        self,
        feed: Feed,
        *,
        order_id: UUID | None,
        trader_id: UUID | None,
        capacity: int,
        max_lag: float,
    ) -> None:
        self.order_id = order_id
        self.trader_id = trader_id
        self._feed = feed
        self._capacity = capacity
        self._max_lag = max_lag
        # Insertion-ordered, oldest first: each order's newest tick, and the monotonic time the
        # feed read its oldest change not taken yet (a repeat keeps the order's place and time).
        self._pending: dict[UUID, tuple[int, float]] = {}
        self._missed: Missed | None = None
        self._closed = False
        self._wake = asyncio.Event()
        self.lagged_count = 0
        """How often this subscriber fell too far behind (in orders or in time)."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def get(self) -> Event:
        """The next event; waits for one. Raises FeedStopped once the feed stops."""
        batch = await self.take(1)
        return batch if isinstance(batch, Missed) else batch[0]

    async def take(self, limit: int) -> Missed | list[Changed]:
        """The gap signal, or the oldest ``limit`` changes at most (at least one), so that a
        subscriber re-reads them together; waits for one. Raises FeedStopped once the feed
        stops. Changes that waited longer than the feed's ``max_lag_seconds`` are dropped
        for the gap signal: a subscriber that cannot keep up is told so, not left behind."""
        while True:
            if self._closed:
                raise FeedStopped
            if self._pending and self._missed is None:
                self._check_lag(time.monotonic())
            if self._missed is not None:
                missed, self._missed = self._missed, None
                return missed
            if self._pending:
                taken = list(itertools.islice(self._pending.items(), limit))
                for order_id, _ in taken:
                    del self._pending[order_id]
                return [Changed(order_id, tick) for order_id, (tick, _) in taken]
            self._wake.clear()
            await self._wake.wait()

    def retry_later(self, order_id: UUID, tick: int) -> None:
        """Put back a change whose re-read failed, to be read again once the database answers."""
        self._offer(order_id, tick, time.monotonic())

    def close(self) -> None:
        """Stop receiving; idempotent."""
        if not self._closed:
            self._closed = True
            self._pending.clear()
            self._feed._remove(self)
            self._wake.set()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- called by the feed, synchronously ----------------------------------------------------

    def _offer(self, order_id: UUID, tick: int, now: float) -> None:
        if self._missed is not None:
            # Whatever rebuilds the view after the pending gap signal reads state at least this
            # new, so queueing the change as well would only cost memory.
            return
        if order_id in self._pending:
            self._pending[order_id] = (tick, self._pending[order_id][1])
            self._check_lag(now)
            return
        if len(self._pending) >= self._capacity:
            self._lagged(f"fell {self._capacity} orders behind", tick)
            return
        self._pending[order_id] = (tick, now)
        self._check_lag(now)
        self._wake.set()

    def _check_lag(self, now: float) -> None:
        oldest = next(iter(self._pending.values()))
        if now - oldest[1] > self._max_lag:
            self._lagged(f"left a change unread for over {self._max_lag:g} s", self._feed.tick)

    def _lagged(self, how: str, tick: int) -> None:
        self.lagged_count += 1
        self._feed.lagged += 1
        log.warning("a subscriber %s; it is told that it missed updates", how)
        self._mark_missed("lagged", tick)

    def _mark_missed(self, reason: Literal["outage", "lagged"], tick: int) -> None:
        self._pending.clear()
        self._missed = Missed(reason, tick)
        self._wake.set()

    def _stop(self) -> None:
        self._closed = True
        self._pending.clear()
        self._wake.set()
