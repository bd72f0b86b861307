"""Subscription.orderEvents and Query.eventsCursor: the audit trail as a resumable stream.

Each event is one audit row the caller may see (row level security, as ``executionLogs``),
with its cursor and its order as it is when read. History first, then live: the stream
reads the settled rows after its cursor (events/stream.py) in batches until it is caught
up, then waits for the change feed to announce a change of the caller's orders (or, while
a visible row waits to settle, for ``PENDING_POLL_SECONDS``) and reads again. Reads are
pulled by the client's pace: a slow consumer holds one batch (``READ_BATCH`` rows) and its
change-feed mailbox, both bounded, and no transaction while it is sent.

A read that fails because the database is away or the pool is busy is retried once the
change feed answers again, from the same cursor. When the server must end a stream (it is
shutting down) the last message is an error with extensions.reason EVENTS_INTERRUPTED and
extensions.cursor, the cursor of the last event delivered: resuming from it loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Iterator, Sequence
from datetime import UTC, datetime
from typing import NamedTuple, cast
from uuid import UUID

import strawberry
from sqlalchemy.engine import RowMapping
from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from app.auth.claims import Claims
from app.db.failures import DatabaseUnavailable
from app.db.mailbox import FeedStopped
from app.events import stream
from app.events.cursor import Cursor, CursorCodec
from app.graphql import subscriptions
from app.graphql.compiled import events as compiled_events
from app.graphql.context import Context
from app.graphql.subscriptions import OrderFeed, WebSocketOnly, _selects, _until_answering
from app.graphql.types import ExecutionLog, Order
from app.orders import queries
from app.orders.errors import Unauthenticated

log = logging.getLogger(__name__)

PENDING_POLL_SECONDS = (0.002, 0.25)
"""How soon a stream looks again while a committed row waits for an older transaction: at
first soon (the common wait is a few milliseconds), then twice as late each time up to the
second figure, so that a long transaction elsewhere does not make every waiting stream
read the database 500 times a second."""


@strawberry.type(
    description="One audit event of an order, delivered in the order the database committed it."
)
class OrderEvent:
    cursor: str = strawberry.field(
        description="Opaque. orderEvents(after: cursor) resumes right after this event."
    )
    log: ExecutionLog = strawberry.field(
        description="What happened, with its place in the order's hash chain."
    )
    order: Order = strawberry.field(
        description="The order as it is when the event is read (it may already reflect"
        " later events)."
    )


async def events_cursor(info: Info[Context, None]) -> str:
    """The cursor after every event the request's snapshot shows (graphql/operation.py reads
    a document that asks for it in one REPEATABLE READ snapshot)."""
    tx = info.context.tx
    cursor = await stream.snapshot_cursor(tx)
    return (await stream.codec(tx.conn.engine)).encode(cursor)


async def subscribe(
    info: Info[Context, None], after: str | None, order_id: UUID | None
) -> AsyncGenerator[OrderEvent, None]:
    # Refusals raised here reach the client as the protocol's error before the stream starts.
    context = info.context
    claims = context.claims
    if claims.role == "anon" or claims.expired(
        datetime.now(UTC), context.settings.jwt_leeway_seconds
    ):
        raise Unauthenticated("subscriptions need a valid token")
    if context.feed is None:
        raise WebSocketOnly()
    codec = await stream.codec(context.feed.database.engine)
    start = None if after is None else codec.decode(after)
    return cast(
        AsyncGenerator[OrderEvent, None],
        _events(info, context.feed, codec, claims, start, order_id),
    )


def _order_selections(info: Info[Context, None]) -> Sequence[Selection]:
    root = info.selected_fields[0].selections if info.selected_fields else []
    found: list[Selection] = []

    def visit(selections: Sequence[Selection]) -> None:
        for selection in selections:
            if isinstance(selection, SelectedField) and selection.name == "order":
                found.extend(selection.selections)
            elif isinstance(selection, FragmentSpread | InlineFragment):
                visit(selection.selections)

    visit(root)
    return found


@contextlib.contextmanager
def _primed(
    context: Context,
    event: stream.Event,
    fills: Sequence[RowMapping],
    logs: Sequence[RowMapping],
    wants_fills: bool,
    wants_logs: bool,
) -> Iterator[None]:
    """The event's order's fills and audit rows, read in the batch's transaction, primed
    into the loaders while graphql-core executes the event."""
    target = event.log["order_id"]
    primed = []
    for loader, rows, wanted in (
        (context.fills, fills, wants_fills),
        (context.logs, logs, wants_logs),
    ):
        if wanted:
            loader.prime(target, [r for r in rows if r["order_id"] == target], force=True)
            primed.append(loader)
    try:
        yield
    finally:
        for loader in primed:
            loader.clear(target)


class _Read(NamedTuple):
    cursor: Cursor
    """Where the read started (the subscription's snapshot, for the first read)."""
    batch: stream.Batch
    fills: Sequence[RowMapping]
    logs: Sequence[RowMapping]


async def _events(
    info: Info[Context, None],
    feed: OrderFeed,
    codec: CursorCodec,
    claims: Claims,
    start: Cursor | None,
    order_id: UUID | None,
) -> AsyncGenerator[OrderEvent | compiled_events.Answered | stream.EventsInterrupted, None]:
    context = info.context
    # The selection built by PostgreSQL with the rows when it compiles (compiled/events.py).
    shape = compiled_events.shape_of(list(info._raw_info.field_nodes), context.settings)
    json = None if shape is None else stream.Json(shape.log_json, shape.order_json)
    selections = [] if shape is not None else _order_selections(info)
    wants_fills, wants_logs = _selects(selections, "fills"), _selects(selections, "executionLogs")
    # Only saves work (which announcements wake this stream); the reads' policies decide.
    trader_id = claims.sub if claims.role == "authenticated" else None

    async def read(after: Cursor | None) -> _Read:
        if after is not None and json is not None:
            # The common read (built events after a known cursor) in four round trips.
            built = await stream.read_built(
                feed.database, claims, after, order_id=order_id, json=json
            )
            return _Read(after, built, [], [])
        async with feed.database.transaction(claims, read_only=True) as tx:
            if after is None:
                after = await stream.snapshot_cursor(tx)
            batch = await stream.read(tx, after, order_id=order_id, json=json)
            touched = list(dict.fromkeys(e.log["order_id"] for e in batch.events))
            fills = await queries.fills_of(tx, touched) if wants_fills and touched else []
            logs = await queries.logs_of(tx, touched) if wants_logs and touched else []
            return _Read(after, batch, fills, logs)

    ahead: asyncio.Task[_Read] | None = None
    # Subscribed before the first read: whatever commits after that read is announced.
    with feed.changes.subscribe(order_id=order_id, trader_id=trader_id) as wake:
        cursor = start
        pause = PENDING_POLL_SECONDS[0]
        try:
            while True:
                try:
                    reading, ahead = ahead, None
                    cursor, batch, fills, logs = await (reading or read(cursor))
                except DatabaseUnavailable as error:
                    # Nothing is lost by waiting: the next read starts from the same cursor. A
                    # busy pool (a thousand subscriptions starting at once) is the common case.
                    log.info("orderEvents %s: read failed (%s)", context.request_id, error)
                    await _until_answering(feed.changes)
                    continue
                if batch.full:
                    # More follows at once (a replay): read it while this batch is sent, so
                    # the database's time and the sending overlap. Two batches at most.
                    ahead = asyncio.create_task(read(batch.events[-1].cursor))
                if shape is None:
                    for event in batch.events:
                        with _primed(context, event, fills, logs, wants_fills, wants_logs):
                            yield OrderEvent(
                                cursor=codec.encode(event.cursor),
                                log=ExecutionLog.from_row(event.log),
                                order=Order.from_row(cast(RowMapping, event.order)),
                            )
                        cursor = event.cursor
                elif batch.events:
                    # The whole batch as one result; websocket.py sends its events one by one.
                    yield compiled_events.Answered(
                        [
                            shape.data(
                                codec.encode(e.cursor), e.log["log_json"], e.log["order_json"]
                            )
                            for e in batch.events
                        ]
                    )
                    cursor = batch.events[-1].cursor
                if batch.full:
                    continue
                if claims.expired(datetime.now(UTC), context.settings.jwt_leeway_seconds):
                    raise Unauthenticated("the token expired")
                if batch.events or not batch.pending:
                    pause = PENDING_POLL_SECONDS[0]
                try:
                    if batch.pending:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.take(stream.READ_BATCH), pause)
                        pause = min(2 * pause, PENDING_POLL_SECONDS[1])
                    else:
                        await wake.take(stream.READ_BATCH)
                except FeedStopped:
                    yield stream.EventsInterrupted(codec.encode(cursor))
                    return
        finally:
            if ahead is not None:
                ahead.cancel()
                # Read for a stream that ended: whatever became of it no longer matters.
                ahead.add_done_callback(lambda task: task.cancelled() or task.exception())


@strawberry.type
class Subscription(subscriptions.Subscription):
    """orderUpdates (graphql/subscriptions.py) and orderEvents."""

    @strawberry.subscription(
        description="Every audit event of the caller's orders (or of one order) committed"
        " after the cursor (from the subscription's start when null): history first, then"
        " live; each exactly once, none skipped, also when transactions commit out of order"
        " and across reconnects."
    )
    async def order_events(
        self, info: Info[Context, None], after: str | None = None, order_id: UUID | None = None
    ) -> AsyncGenerator[OrderEvent, None]:
        return await subscribe(info, after, order_id)
