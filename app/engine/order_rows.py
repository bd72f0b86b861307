"""The engine's view of an ``orders`` row: ``OrderRow``, the statements that read it, and
the compound writes made on a locked one.

``OrderRow`` holds what the engine needs of an order, with what it decides in the
database's clock (expired, retry due) rather than the worker's. The writes themselves
are ``app.orders.ledger``'s, the same statements as the API's (``close_order`` and
``record_fills`` only combine them); the migration's triggers derive fill state and
statuses and write every ``execution_logs`` row. The engine works as ``service_role``
through ``Database.transaction``, exactly like the API (``transaction``).

Every state change the engine makes re-reads the order under its row lock (``lock``:
``FOR UPDATE``) and checks it is still in the expected state, so a racing trader cancel
or another worker never leads to a double transition.

Statements that read an ``OrderRow`` bind ``:retry_base`` and ``:max_exponent``:
pass their parameters through ``row_params``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final
from uuid import UUID

from sqlalchemy import text

from app import metrics
from app.auth.claims import Claims
from app.db.session import Database, Tx
from app.engine.venue import Execution, VenueOrder
from app.models.order import ActionEnum as Action
from app.models.order import OrderStatusEnum as Status
from app.orders import ledger as writes
from app.orders import lifecycle
from app.orders.fields import ORDER
from app.orders.lifecycle import State

__all__ = [
    "CLAIM_NEW",
    "LIFECYCLE_COLUMNS",
    "LOCK_ONE",
    "NOW",
    "ORDERS_WITH_STATE",
    "READ_MANY",
    "SERVICE_CLAIMS",
    "STOPPED_SINCE",
    "WAITING_REPLACEMENTS",
    "OrderRow",
    "close_order",
    "lock",
    "record_fills",
    "row_params",
    "transaction",
]

log = logging.getLogger(__name__)

SERVICE_CLAIMS: Final = Claims(
    role="service_role", sub=None, raw=MappingProxyType({"role": "service_role"}), expires_at=None
)

_MAX_BACKOFF_EXPONENT: Final = 20

LIFECYCLE_COLUMNS: Final = """
    o.status::text AS status, o.approved_at IS NOT NULL AS approved,
    o.routed_at IS NOT NULL AS routed,
    coalesce(o.expires_at <= now(), false) AS expiry_reached,
    (o.replaces_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM orders p WHERE p.id = o.replaces_id AND p.replaced_by_id = o.id
    )) AS awaiting_confirmation,
    waiting.id AS replacement_id,
    waiting.id IS NOT NULL AS replacement_waiting,
    coalesce(waiting.filled_since, false) AS filled_since_replacement
"""
"""What ``lifecycle.State`` needs of order ``o`` (with ``_WAITING`` joined), decided in the
database's clock: the same test as the lifecycle trigger's for the expiry, and for a
waiting replacement whether ``o`` filled after its request's SUBMITTED audit row."""

# The replacement of ``o`` waiting for confirmation (at most one: uq_orders_pending_replacement;
# once confirmed, ``o`` is REPLACED by it and it is an ordinary order).
_WAITING: Final = f"""
    LEFT JOIN LATERAL (
        SELECT r.id, EXISTS (
            SELECT 1 FROM execution_logs l
             WHERE l.order_id = o.id AND l.action = '{Action.FILLED}'
               AND l.seq > (SELECT min(s.seq) FROM execution_logs s WHERE s.order_id = r.id)
        ) AS filled_since
          FROM orders r WHERE r.replaces_id = o.id AND r.status = '{Status.PENDING}'
           AND o.replaced_by_id IS NULL
    ) waiting ON true
"""
ORDERS_WITH_STATE: Final = f"orders o {_WAITING}"
"""The ``FROM`` of a statement that selects ``LIFECYCLE_COLUMNS``."""

# Python's datetime holds the years 1 to 9999, PostgreSQL's timestamptz up to 294276 (and
# infinity): a write the engine makes returns the whole order (app.orders.ledger), which then
# fails to decode, on every pass. Named here, such an order is rejected instead (issue 18).
_DATETIME_COLUMNS: Final = tuple(f.column for f in ORDER.fields if f.type is datetime)
UNREADABLE: Final = "nullif(concat_ws(', ', {}), '')".format(
    ", ".join(
        f"CASE WHEN NOT o.{column} BETWEEN '0001-01-01 00:00:00+00'"
        f" AND '9999-12-31 23:59:59.999999+00' THEN '{column}' END"
        for column in _DATETIME_COLUMNS
    )
)
"""The columns of order ``o`` that Python's datetime cannot hold, comma-separated; NULL for
none."""

_COLUMNS: Final = f"""
    o.id, o.symbol, o.side, o.quantity, o.order_type::text AS order_type, o.price,
    o.stop_price, o.time_in_force::text AS time_in_force, o.replaces_id,
    o.filled_quantity, o.retry_attempt, o.approved_at, o.routed_at, o.updated_at,
    {LIFECYCLE_COLUMNS},
    o.updated_at + make_interval(
        secs => CAST(:retry_base AS double precision)
                * power(2.0, least(o.retry_attempt, :max_exponent))
    ) <= now() AS retry_due,
    {UNREADABLE} AS unreadable
"""

# New orders to admit. Not an unconfirmed replacement (the replace stage confirms it first),
# nor an order whose replacement waits (it would be replaced before it reached the venue).
CLAIM_NEW: Final = text(
    f"""
    SELECT {_COLUMNS} FROM {ORDERS_WITH_STATE}
     WHERE o.status = '{Status.PENDING}' AND o.approved_at IS NULL
       AND (o.replaces_id IS NULL OR EXISTS (
            SELECT 1 FROM orders p WHERE p.id = o.replaces_id AND p.replaced_by_id = o.id))
       AND waiting.id IS NULL
     ORDER BY o.created_at, o.id
     LIMIT :limit
     FOR UPDATE OF o SKIP LOCKED
    """
)

LOCK_ONE: Final = text(
    f"SELECT {_COLUMNS} FROM {ORDERS_WITH_STATE} WHERE o.id = :id FOR UPDATE OF o"
)

READ_MANY: Final = text(f"SELECT {_COLUMNS} FROM {ORDERS_WITH_STATE} WHERE o.id = ANY(:ids)")

# Replacements waiting for the engine's confirmation (migration 006's protocol), oldest first.
WAITING_REPLACEMENTS: Final = text(
    f"""
    SELECT o.id, o.replaces_id FROM orders o
     WHERE o.status = '{Status.PENDING}' AND o.replaces_id IS NOT NULL
       AND NOT EXISTS (
            SELECT 1 FROM orders p WHERE p.id = o.replaces_id AND p.replaced_by_id = o.id)
     ORDER BY o.created_at, o.id
     LIMIT :limit
    """
)

NOW: Final = text("SELECT now()")
"""The database's clock: the transaction's start, like every ``now()`` in these statements."""

# Orders stopped (cancelled by their trader, or expired) that may still work at the venue.
STOPPED_SINCE: Final = text(
    f"""
    SELECT o.id, o.updated_at, o.filled_quantity FROM orders o
     WHERE o.status IN {lifecycle.sql_list(lifecycle.STOPPED)} AND o.approved_at IS NOT NULL
       AND o.updated_at >= :since AND NOT (o.id = ANY(:seen))
     ORDER BY o.updated_at, o.id
     LIMIT :limit
    """
)
_FILL_IDS: Final = text("SELECT id FROM fills WHERE order_id = :id")


def row_params(retry_base: float, **params: Any) -> dict[str, Any]:
    """``params`` plus what the ``OrderRow`` columns bind: the backoff of ``retry_due`` is
    ``retry_base * 2**retry_attempt`` seconds (the exponent capped)."""
    return {"retry_base": retry_base, "max_exponent": _MAX_BACKOFF_EXPONENT, **params}


@dataclass(frozen=True, slots=True)
class OrderRow:
    id: UUID
    symbol: str
    side: str
    quantity: int
    order_type: str
    price: Decimal | None
    stop_price: Decimal | None
    time_in_force: str
    replaces_id: UUID | None
    status: Status
    filled_quantity: int
    retry_attempt: int
    approved_at: datetime | None
    routed_at: datetime | None
    updated_at: datetime
    expiry_reached: bool
    """``expires_at`` (a DAY order's: the session close) is reached, in the database's clock."""
    awaiting_confirmation: bool
    replacement_id: UUID | None
    """The replacement of this order waiting for the engine's confirmation, if any."""
    filled_since_replacement: bool
    retry_due: bool
    unreadable: str | None
    """The columns this engine cannot decode (``UNREADABLE``): such an order is rejected."""

    @classmethod
    def from_row(cls, row: Any) -> OrderRow:
        values = {field.name: getattr(row, field.name) for field in fields(cls)}
        return cls(**{**values, "status": Status(values["status"])})

    @property
    def state(self) -> State:
        return State(
            self.status,
            approved=self.approved_at is not None,
            routed=self.routed_at is not None,
            expiry_reached=self.expiry_reached,
            awaiting_confirmation=self.awaiting_confirmation,
            replacement_waiting=self.replacement_id is not None,
            filled_since_replacement=self.filled_since_replacement,
        )

    @property
    def final(self) -> bool:
        return self.status in lifecycle.FINAL

    @property
    def in_flight(self) -> bool:
        """Approved and not final: the venue may know it, so someone must see it through."""
        return self.approved_at is not None and not self.final

    def venue_order(self) -> VenueOrder:
        return VenueOrder(
            order_id=self.id,
            symbol=self.symbol,
            side=self.side,
            quantity=self.quantity,
            order_type=self.order_type,
            price=self.price,
            stop_price=self.stop_price,
            time_in_force=self.time_in_force,
        )


@contextlib.asynccontextmanager
async def transaction(database: Database, *, read_only: bool = False) -> AsyncIterator[Tx]:
    """One transaction as service_role, through the same mechanism as the API's requests."""
    async with database.transaction(SERVICE_CLAIMS, read_only=read_only) as tx:
        yield tx


async def lock(tx: Tx, order_id: UUID, retry_base: float) -> OrderRow | None:
    """The order, locked until the transaction ends; None when it does not exist."""
    row = (await tx.conn.execute(LOCK_ONE, row_params(retry_base, id=order_id))).first()
    return None if row is None else OrderRow.from_row(row)


async def close_order(
    tx: Tx,
    order: OrderRow,
    status: Status,
    reason: str,
    code: str | None,
    *,
    failed: int = 0,
) -> datetime:
    """Make a locked, open order final (``lifecycle.closing_status``); returns its
    ``updated_at``. ``failed``: failed venue attempts to count on the way.
    """
    closing = lifecycle.closing_status(order.status, status)
    if closing is not status and code:
        reason = f"{reason} ({code})"  # the venue's code, which only a rejection records
    if closing is Status.EXPIRED:
        row = await writes.expire(tx, order.id, reason=reason)
    else:
        row = await writes.close(tx, order.id, closing, reason=reason, code=code, failed=failed)
    assert row is not None  # locked by this transaction, so still there
    closed_at: datetime = row["updated_at"]
    return closed_at


async def record_fills(
    tx: Tx, order: OrderRow, executions: Sequence[Execution], retry_base: float
) -> tuple[OrderRow, int]:
    """Record the executions not recorded yet for a locked order, in the venue's order;
    returns the order as the fills left it (the triggers update its fill state and
    status) and how many were new."""
    known = set((await tx.conn.execute(_FILL_IDS, {"id": order.id})).scalars())
    inserted = 0
    for execution in executions:
        if execution.execution_id in known:
            continue
        if execution.order_id != order.id:
            log.error("order %s: venue reported a foreign execution %s", order.id, execution)
            continue
        row = await writes.insert_fill(
            tx,
            fill_id=execution.execution_id,
            order_id=order.id,
            quantity=execution.quantity,
            price=execution.price,
            venue=execution.venue,
            commission=execution.commission,
            timestamp=execution.timestamp,
        )
        inserted += row is not None
    if not inserted:
        return order, 0
    # Counted when written; a transaction that then rolls back is retried and counts
    # again, which the counter's rate tolerates.
    metrics.ENGINE_FILLS.inc(inserted)
    current = await lock(tx, order.id, retry_base)
    assert current is not None  # locked by this transaction, so still there
    return current, inserted
