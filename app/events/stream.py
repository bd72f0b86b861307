"""Reading the order-event stream: the settled audit rows after a cursor, as the caller sees them.

Runs inside a transaction the caller's claims opened (db/session.py), so row level security
decides which rows come back, exactly as for ``executionLogs``. One statement reads the
snapshot's xmin and the rows after the cursor in ``(stream_key, seq)`` order; those with
``stream_key`` below that xmin are settled (migration 013 shows why their set is final) and
are delivered, the first row at or above it ends the batch and marks it ``pending``: a
committed row waits for an older transaction to end, and nothing will announce the moment
it does, so the reader must look again.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import TextClause, text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.claims import Claims
from app.db.session import Database, Tx
from app.events.cursor import Cursor, CursorCodec, Snapshot
from app.orders import queries
from app.orders.errors import OrderError
from app.orders.fields import LOG

READ_BATCH = 500
"""Rows read at most per statement: what a subscriber holds in memory, however slow it is."""


class EventsInterrupted(OrderError):
    """The server ends an orderEvents stream (it is shutting down): the last error of the
    stream, carrying the cursor of the last event delivered, from which
    the client resumes with nothing lost."""

    code = "SERVICE_UNAVAILABLE"
    reason = "EVENTS_INTERRUPTED"

    def __init__(self, cursor: str) -> None:
        super().__init__("the event stream was interrupted; resume with extensions.cursor")
        self.cursor = cursor


@dataclass(frozen=True, slots=True)
class Event:
    cursor: Cursor
    """The stream's position once this event is delivered."""
    log: RowMapping
    order: RowMapping | None
    """None when the read built JSON instead (``Json``): then ``log`` has ``log_json`` and
    ``order_json``."""


@dataclass(frozen=True, slots=True)
class Json:
    """SQL JSON expressions of a selection (graphql/compiled/events.py), read with the rows:
    of the audit row ``execution_logs`` and of its order (None: not selected)."""

    log: str | None
    order: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    events: list[Event]
    pending: bool
    """A visible row after the last event waits to settle: read again soon."""
    full: bool
    """The read returned as many rows as it could: more may follow at once."""


_NAMED = {name: f":{name}" for name in ("stream_key", "seq", "seen", "limit", "order_id")}
"""The read's parameters as SQLAlchemy names them (``Tx``); ``_POSITIONAL`` as asyncpg
numbers them, without ``order_id`` for the read of every order (asyncpg must be able to
type each parameter, so each must occur in the text)."""
_POSITIONAL = {
    one: {name: f"${i}" for i, name in enumerate(list(_NAMED)[: 5 if one else 4], start=1)}
    for one in (False, True)
}


def _read_sql(*, one_order: bool, json: Json | None = None, p: dict[str, str] = _NAMED) -> str:
    # Two texts rather than "(:order_id IS NULL OR ...)": a generic plan could not use the
    # index of either. The snapshot filter is a filter only (no index can serve it).
    where = f"execution_logs.order_id = CAST({p['order_id']} AS uuid) AND " if one_order else ""
    # With JSON, the row's columns are not decoded at all: only what places it in the stream.
    columns = LOG.columns if json is None else "execution_logs.id, execution_logs.order_id"
    built = (
        ""
        if json is None
        else f", ({json.log or 'NULL'})::text AS log_json, ({json.order or 'NULL'})::text"
        " AS order_json"
    )
    return f"""
SELECT pg_snapshot_xmin(s.snap)::text AS horizon, e.*
  FROM (SELECT pg_current_snapshot() AS snap) s
  LEFT JOIN LATERAL (
    SELECT {columns}, execution_logs.stream_key::text AS stream_key,
           execution_logs.seq, execution_logs.stream_key < pg_snapshot_xmin(s.snap) AS settled
           {built}
      FROM public.execution_logs
     WHERE {where}(execution_logs.stream_key, execution_logs.seq)
           > (CAST(CAST({p["stream_key"]} AS text) AS xid8), CAST({p["seq"]} AS bigint))
       AND (CAST({p["seen"]} AS text) IS NULL
            OR NOT pg_visible_in_snapshot(execution_logs.xact, CAST({p["seen"]} AS pg_snapshot)))
     ORDER BY execution_logs.stream_key, execution_logs.seq
     LIMIT {p["limit"]}
  ) e ON true
"""


_READ = {one: text(_read_sql(one_order=one)) for one in (False, True)}


@functools.lru_cache(maxsize=256)
def _read_json(one_order: bool, json: Json) -> TextClause:
    # One text per selection a client subscribes with: a handful in practice.
    return text(_read_sql(one_order=one_order, json=json))


@functools.lru_cache(maxsize=256)
def _read_json_positional(one_order: bool, json: Json) -> str:
    return _read_sql(one_order=one_order, json=json, p=_POSITIONAL[one_order])


def _arguments(
    cursor: Cursor, order_id: UUID | None, limit: int
) -> dict[str, str | int | UUID | None]:
    return {
        "stream_key": str(cursor.stream_key),
        "seq": cursor.seq,
        "seen": None if cursor.seen is None else str(cursor.seen),
        "limit": limit,
        "order_id": order_id,
    }


_SNAPSHOT = text("SELECT pg_current_snapshot()::text")
# The read's plan, set in its transaction (one statement, before the read is planned):
# - A pooled connection that served live reads (a row or two each) caches a generic plan of
#   the read, and that plan took about 1 s per 500-row batch of a replay on it (1.2 s against
#   0.02 s, bench/order_events.py after its delivery rounds): plan each read for its cursor.
# - No bitmap scans: one cannot return rows in index order, and the planner, which cannot
#   know how many rows the trader policy's (SELECT auth.uid()) matches, chose one over
#   migration 016's (trader_id, stream_key, seq) index, then read and sorted every row of
#   the trader after the cursor for each batch (16 ms against 1.8 ms for 10,000 rows, so a
#   replay cost grew with the square of its length). An ordered index scan stops at LIMIT.
_PLAN_SETTINGS = (
    ", set_config('plan_cache_mode', 'force_custom_plan', true),"
    " set_config('enable_bitmapscan', 'off', true)"
)
_PLAN = text("SELECT" + _PLAN_SETTINGS.removeprefix(","))


async def snapshot_cursor(tx: Tx) -> Cursor:
    """After every event visible in the transaction's snapshot (the statement's, in READ
    COMMITTED; the transaction's, in REPEATABLE READ)."""
    return Cursor.of_snapshot(Snapshot.parse(str(await tx.scalar(_SNAPSHOT))))


async def read(
    tx: Tx,
    cursor: Cursor,
    *,
    order_id: UUID | None,
    limit: int = READ_BATCH,
    json: Json | None = None,
) -> Batch:
    """The settled events after ``cursor``, oldest first, each with its order as it is now
    (as rows, or as the JSON of ``json`` in the same statement)."""
    one = order_id is not None
    await tx.scalar(_PLAN)
    rows = await tx.all(
        _READ[one] if json is None else _read_json(one, json),
        _arguments(cursor, order_id, limit),
    )
    if json is not None:
        return _built(cursor, rows, limit)
    logs = [row for row in rows if row["id"] is not None]
    settled = [row for row in logs if row["settled"]]
    orders = {
        row["id"]: row
        for row in await queries.orders_by_ids(tx, list({r["order_id"] for r in settled}))
    }
    events = []
    for row in settled:
        # The same policies guard an order and its audit rows (trader_id), so a visible
        # row's order is visible: anything else is a broken invariant, not a row to skip.
        order = orders[row["order_id"]]
        cursor = cursor.after(int(row["stream_key"]), row["seq"])
        events.append(Event(cursor, row, order))
    return Batch(events, pending=len(settled) < len(logs), full=len(logs) >= limit)


async def read_built(
    db: Database,
    claims: Claims,
    cursor: Cursor,
    *,
    order_id: UUID | None,
    json: Json,
    limit: int = READ_BATCH,
) -> Batch:
    """``read`` with ``json``, in a transaction of its own straight on the pool's asyncpg
    connection (``Database.read_rows``): four round trips where ``read`` in
    ``Database.transaction`` takes five through SQLAlchemy, which was most of a live
    event's time from COMMIT to the subscriber (bench/figures/order-events.md)."""
    one = order_id is not None
    sql = _read_json_positional(one, json)
    named = _arguments(cursor, order_id, limit)
    args = [named[name] for name in _POSITIONAL[one]]  # in the order of their numbers
    return _built(cursor, await db.read_rows(claims, sql, args, settings=_PLAN_SETTINGS), limit)


def _built(cursor: Cursor, rows: Sequence[Any], limit: int) -> Batch:
    """The batch of a read whose rows carry their events' JSON (``log_json``, ``order_json``)."""
    logs = [row for row in rows if row["id"] is not None]
    settled = [row for row in logs if row["settled"]]
    events = []
    for row in settled:
        cursor = cursor.after(int(row["stream_key"]), row["seq"])
        events.append(Event(cursor, row, None))
    return Batch(events, pending=len(settled) < len(logs), full=len(logs) >= limit)


_KEY = text("SELECT key FROM order_api_private.event_cursor_key")
_codecs: weakref.WeakKeyDictionary[AsyncEngine, CursorCodec] = weakref.WeakKeyDictionary()


async def codec(engine: AsyncEngine) -> CursorCodec:
    """The codec under the database's cursor key (migration 013), read once per engine on a
    connection of the pool before any role switch: only the login role may read it."""
    known = _codecs.get(engine)
    if known is not None:
        return known
    async with engine.connect() as conn:
        key = (await conn.execute(_KEY)).scalar_one()
        await conn.rollback()
    made = CursorCodec(bytes(key))
    _codecs[engine] = made
    return made
