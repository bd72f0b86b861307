"""Subscription.orderUpdates: announcements in, each order re-read under the subscriber's RLS.

The change feed says which order changed (migration 004, db/change_feed.py),
never what it contains. The orders announced to a subscriber are read again,
all that waited in its mailbox (up to ``READ_BATCH``) in one statement of one
read-only transaction, as the subscriber's own role with the subscriber's own
claims, exactly like a query; an order is sent only if that read returns it.
Whatever an announcement says, a trader can therefore only ever receive what
``order(id:)`` would show them: row level security is the boundary, not the
announcement. service_role and compliance_auditor see every order because the
policies say so.

One re-read per batch, not per order: a subscriber who sees every order
(compliance_auditor) needed a transaction per submit, fell tens of seconds
behind, and held the writers back (bench/scale/live.py, README).

Messages carry the order's state at the moment it was read, not a diff: when
changes follow each other faster than the re-read, intermediate states may be
skipped, but the last message sent after a change always shows that change or
a later one.

Gap signal. When updates may have been missed (the database was unreachable
for a while: one signal per outage, once it answers again; or the subscriber
fell more than a mailbox's worth of orders, or more than
``SUBSCRIPTION_MAX_LAG_MS``, behind: db/mailbox.py), the subscription stays open
and the client receives one event with ``data: null`` and the error

    {"message": "updates may have been missed; re-query",
     "path": ["orderUpdates"],
     "extensions": {"code": "SERVICE_UNAVAILABLE", "reason": "UPDATES_MISSED"}}

after which updates continue. A subscription to one order (``orderId``) then
also receives that order's current state, so it is whole again on its own; a
subscription to all of the caller's orders should re-query ``orders``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, cast
from uuid import UUID

import strawberry
from sqlalchemy.engine import RowMapping
from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from app import metrics
from app.auth.claims import Claims
from app.db.change_feed import Changed, ChangeFeed, FeedStopped, Missed
from app.db.replicas import Reader, Replicas
from app.db.session import Database, DatabaseUnavailable
from app.graphql.context import Context
from app.graphql.types import Order
from app.orders import fields, queries
from app.orders.errors import InvalidInput, OrderError, OrderNotFound, Unauthenticated

log = logging.getLogger(__name__)

UPDATES_MISSED = "updates may have been missed; re-query"

RETRY_READ_SECONDS = 0.5
"""Pause before a subscriber retries a re-read that failed because the database was away."""

READ_BATCH = 100

LAST_SENT_KEPT = 1000
"""Orders whose last event a subscription remembers, so as not to send it twice."""
"""Changed orders a subscriber re-reads together at most, in one statement."""

SHUTDOWN_GRACE_SECONDS = 5.0
"""How long shutdown waits for the re-reads in flight before cancelling them."""


class UpdatesMissed(OrderError):
    """The gap signal: sent in the stream as an error, after which the stream goes on."""

    code = "SERVICE_UNAVAILABLE"
    reason = "UPDATES_MISSED"

    def __init__(self) -> None:
        super().__init__(UPDATES_MISSED)


class WebSocketOnly(OrderError):
    """A subscription sent over HTTP: the client's mistake, not the server's."""

    code = "BAD_USER_INPUT"

    def __init__(self) -> None:
        super().__init__(
            "subscriptions are served over WebSocket only (graphql-transport-ws or graphql-ws)"
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    order: RowMapping
    fills: Sequence[RowMapping] | None
    logs: Sequence[RowMapping] | None


@dataclass(frozen=True, slots=True)
class _Read:
    started_at: int
    order_ids: frozenset[UUID]
    task: asyncio.Task[dict[UUID, Snapshot]]


_ReadKey = tuple[str, bool, bool]


@dataclass
class OrderFeed:
    """What the subscription resolvers of one server process share."""

    database: Database
    changes: ChangeFeed
    replicas: Replicas | None = None
    """Read replicas (db/replicas.py): re-reads go to one that has replayed the changes."""
    _reads: dict[_ReadKey, list[_Read]] = field(default_factory=dict)
    """The reads in flight, by claims and what they read: those a subscriber may share."""
    _running: set[asyncio.Task[dict[UUID, Snapshot]]] = field(default_factory=set)
    """Every read still running, shared or not."""

    async def read(
        self, claims: Claims, order_ids: Sequence[UUID], *, fresh_from: int, fills: bool, logs: bool
    ) -> dict[UUID, Snapshot]:
        """The orders as ``claims`` sees them, in a state at least as new as change feed tick
        ``fresh_from``, read together in one transaction; an order row level security hides
        (or that does not exist) is left out.

        One statement for all of them, not one transaction each: a subscriber who sees many
        orders change (compliance_auditor, service_role, a busy trader) costs one re-read per
        batch, so its re-reads keep up with the writers instead of queueing one by one.

        Subscribers with identical claims share one read while it is in flight: the same role
        and the same ``request.jwt.claims`` make the same policies give the same answer, so a
        thousand tabs of one trader cost one read per batch, not a thousand. A read is shared
        only with a caller whose orders it covers and whose announcements it does not predate.
        """
        key = (claims.to_json(), fills, logs)
        wanted = frozenset(order_ids)
        shared = next(
            (
                r
                for r in self._reads.get(key, ())
                if r.started_at >= fresh_from and wanted <= r.order_ids
            ),
            None,
        )
        if shared is None:
            shared = _Read(
                self.changes.tick,
                wanted,
                asyncio.create_task(self._read(claims, list(wanted), fills=fills, logs=logs)),
            )
            self._reads.setdefault(key, []).append(shared)
            self._running.add(shared.task)
            read = shared
            shared.task.add_done_callback(lambda _: self._forget(key, read))
        # Shielded: one subscriber going away must not cancel the read for the others.
        return await asyncio.shield(shared.task)

    @property
    def reading(self) -> int:
        """How many reads are running."""
        return len(self._running)

    async def close(self) -> None:
        """Wait for the reads in flight, cancelling those still running after
        ``SHUTDOWN_GRACE_SECONDS``: called once the change feed has stopped and before the pool
        is disposed. A read outlives the subscribers that wanted it (it is shielded from them),
        and a connection it brought back to a disposed pool would never be closed: the
        database, or a pooler in front of it, would keep it until its own timeout."""
        while self._running:
            running = set(self._running)  # a subscriber may still start one while we wait
            _, late = await asyncio.wait(running, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    def _forget(self, key: _ReadKey, read: _Read) -> None:
        self._running.discard(read.task)
        reads = self._reads.get(key)
        if reads is not None:
            reads.remove(read)
            if not reads:
                del self._reads[key]
        if not read.task.cancelled():
            # Retrieved here so that a failure nobody waited for is not reported as unhandled.
            read.task.exception()

    async def _read(
        self, claims: Claims, order_ids: list[UUID], *, fills: bool, logs: bool
    ) -> dict[UUID, Snapshot]:
        source: Database | Reader = self.database
        if self.replicas is not None:
            # The change feed read these changes on the primary, so its position now is at or
            # past their commits: a replica that has replayed it sees them (else the primary).
            source = self.replicas.reader(await self.replicas.position())
        async with source.transaction(claims, read_only=True) as tx:
            orders = await queries.orders_by_ids(tx, order_ids)
            seen = [row["id"] for row in orders]
            if not seen:
                return {}
            fills_of = _by_order(await queries.fills_of(tx, seen)) if fills else None
            logs_of = _by_order(await queries.logs_of(tx, seen)) if logs else None
            return {
                row["id"]: Snapshot(
                    order=row,
                    fills=None if fills_of is None else fills_of.get(row["id"], []),
                    logs=None if logs_of is None else logs_of.get(row["id"], []),
                )
                for row in orders
            }


def _by_order(rows: Sequence[RowMapping]) -> dict[UUID, list[RowMapping]]:
    """Rows of several orders, each order's in the order they came (oldest first)."""
    grouped: dict[UUID, list[RowMapping]] = {}
    for row in rows:
        grouped.setdefault(row["order_id"], []).append(row)
    return grouped


def _feed(context: Context) -> OrderFeed:
    if context.feed is None:
        raise WebSocketOnly()
    return context.feed


def _selects(selections: Sequence[Selection], name: str) -> bool:
    """Whether ``name`` is selected directly on the order, through fragments too."""
    for selection in selections:
        if isinstance(selection, SelectedField) and selection.name == name:
            return True
        if isinstance(selection, FragmentSpread | InlineFragment) and _selects(
            selection.selections, name
        ):
            return True
    return False


def _selected_names(selections: Sequence[Selection]) -> frozenset[str]:
    """The order's fields the subscription selects, through fragments too."""
    names: set[str] = set()
    for selection in selections:
        if isinstance(selection, SelectedField):
            names.add(selection.name)
        elif isinstance(selection, FragmentSpread | InlineFragment):
            names |= _selected_names(selection.selections)
    return frozenset(names)


def _what_is_sent(read: Snapshot, selected: frozenset[str]) -> tuple[object, ...]:
    """What an event shows of an order: the selected fields' values and, when selected, its
    fills and audit rows. Two equal ones are the same event to the subscriber."""
    values = tuple(read.order[f.name] for f in fields.ORDER.fields if f.graphql in selected)
    return (
        values,
        None if read.fills is None else tuple(tuple(row.values()) for row in read.fills),
        None if read.logs is None else tuple(tuple(row.values()) for row in read.logs),
    )


async def _updates(
    info: Info[Context, None], claims: Claims, order_id: UUID | None, snapshot: bool
) -> AsyncGenerator[Order | UpdatesMissed | OrderNotFound, None]:
    context = info.context
    feed = _feed(context)
    root = info.selected_fields[0].selections if info.selected_fields else []
    wants_fills = _selects(root, "fills")
    wants_logs = _selects(root, "executionLogs")
    selected = _selected_names(root)
    # What each order's last event showed: a change the subscription does not select (the
    # engine's approval and routing leave status and fills as they were) is not sent again
    # (issue 23: three identical PENDING events before FILLED). Bounded like the mailbox.
    last_sent: dict[UUID, tuple[object, ...]] = {}
    # Only saves work: changes announced for other traders are not worth re-reading. The
    # re-read under the subscriber's own claims is what isolates traders.
    trader_id = claims.sub if claims.role == "authenticated" else None
    # Registered here, in the generator's body, so that the finally of the with block always
    # unregisters it (a generator that never started would not run its finally).
    with feed.changes.subscribe(order_id=order_id, trader_id=trader_id) as subscriber:
        # The snapshot is read once subscribed: a change committed meanwhile is then both in
        # it and in the feed, never in neither.
        initial = order_id if snapshot else None
        while True:
            batch: list[Changed] = []
            if initial is not None:
                targets, tick = [initial], feed.changes.tick
            else:
                try:
                    event = await subscriber.take(READ_BATCH)
                except FeedStopped:
                    return  # the server is shutting down: the stream completes
                if claims.expired(datetime.now(UTC), context.settings.jwt_leeway_seconds):
                    # The connection is closed at expiry as well; this covers the moment between.
                    raise Unauthenticated("the token expired")
                if isinstance(event, Missed):
                    metrics.SUBSCRIPTION_GAPS.labels(event.reason).inc()
                    # The client rebuilds its view: whatever comes next is sent.
                    last_sent.clear()
                    yield UpdatesMissed()
                    if order_id is None:
                        continue
                    # Made whole again: its order's state, retried like a change if need be.
                    batch = [Changed(order_id, event.tick)]
                else:
                    batch = event
                targets = [change.order_id for change in batch]
                tick = max(change.tick for change in batch)
            try:
                reads = await feed.read(
                    claims, targets, fresh_from=tick, fills=wants_fills, logs=wants_logs
                )
            except DatabaseUnavailable as error:
                # The database is away: the changes are read again once it answers, and the
                # feed then sends this subscriber the one gap signal of the outage.
                log.info("subscription %s: re-read failed (%s)", context.request_id, error)
                for change in batch:
                    subscriber.retry_later(change.order_id, change.tick)
                await _until_answering(feed.changes)
                continue
            if initial is not None and initial not in reads:
                # Asked for the order's state, and there is none to see: as order(id:) null.
                yield OrderNotFound(initial)
                return
            initial = None
            # Oldest change first; an order the subscriber may not see is left out.
            for target in targets:
                read = reads.get(target)
                if read is None:
                    continue
                shown = _what_is_sent(read, selected)
                if last_sent.get(target) == shown:
                    continue
                last_sent.pop(target, None)
                last_sent[target] = shown
                if len(last_sent) > LAST_SENT_KEPT:
                    del last_sent[next(iter(last_sent))]
                # The fields resolve after the yield, without a transaction: hand them the
                # rows read above (context is this operation's own, see graphql/websocket.py).
                primed = []
                for loader, rows in ((context.fills, read.fills), (context.logs, read.logs)):
                    if rows is not None:
                        loader.prime(target, list(rows), force=True)
                        primed.append(loader)
                try:
                    yield Order.from_row(read.order)
                finally:
                    # Nothing of this event is kept for the next one, or past the subscription.
                    for loader in primed:
                        loader.clear(target)


async def _until_answering(changes: ChangeFeed) -> None:
    # A pause first: the feed may not have noticed the outage yet (it still looks connected).
    await asyncio.sleep(RETRY_READ_SECONDS)
    await changes.until_connected()


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Every change to the caller's orders (or to one order), as the order after"
        " the change. Runs under the same row level security as queries. When updates may"
        " have been missed, the stream carries an error with extensions.code"
        " SERVICE_UNAVAILABLE and extensions.reason UPDATES_MISSED, and goes on."
    )
    async def order_updates(
        self,
        info: Info[Context, None],
        order_id: UUID | None = None,
        snapshot: Annotated[
            bool,
            strawberry.argument(
                description="With orderId: first send the order's current state (NOT_FOUND"
                " if the caller cannot see it), then its changes, so no change falls between"
                " a query and the subscription. Not allowed without orderId: query orders for"
                " the current state of all of them."
            ),
        ] = False,
    ) -> AsyncGenerator[Order, None]:
        # A coroutine returning the stream, not a generator itself: refusals raised here
        # reach the client as the protocol's "error" message before the stream starts.
        claims = info.context.claims
        leeway = info.context.settings.jwt_leeway_seconds
        if claims.role == "anon" or claims.expired(datetime.now(UTC), leeway):
            raise Unauthenticated("subscriptions need a valid token")
        if snapshot and order_id is None:
            raise InvalidInput("snapshot", "snapshot needs orderId; query orders for all orders")
        _feed(info.context)
        # graphql-core turns a yielded exception into an error for that one event (see
        # UpdatesMissed); the schema's type stays Order.
        return cast(AsyncGenerator[Order, None], _updates(info, claims, order_id, snapshot))
