"""The engine's side of the order ledger: how it reads orders and writes their progress.

``OrderRow`` is the engine's view of one ``orders`` row, with what it needs
decided in the database's clock (expired, retry due) rather than the worker's.
The statements here write only ``orders`` columns and ``fills``; the
migration's triggers derive fill state and statuses and write every
``execution_logs`` row, exactly as for the API's writes.

Statements that read an ``OrderRow`` bind ``:retry_base`` and ``:max_exponent``:
pass their parameters through ``row_params``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.engine.venue import Execution, VenueOrder

__all__ = [
    "APPROVE",
    "CANCELLED_SINCE",
    "CLAIM_NEW",
    "LOCK_ONE",
    "NOW",
    "READ_MANY",
    "RECOVERED",
    "RETRY",
    "ROUTED",
    "OrderRow",
    "close_order",
    "insert_fills",
    "row_params",
]

log = logging.getLogger(__name__)

_FINAL: Final = frozenset({"FILLED", "REJECTED", "CANCELLED"})
_MAX_BACKOFF_EXPONENT: Final = 20

_COLUMNS: Final = """
    o.id, o.symbol, o.side, o.quantity, o.order_type::text AS order_type, o.price,
    o.status::text AS status, o.filled_quantity, o.retry_attempt, o.approved_at, o.routed_at,
    o.updated_at,
    coalesce(o.expires_at < now(), false) AS expired,
    o.updated_at + make_interval(
        secs => CAST(:retry_base AS double precision)
                * power(2.0, least(o.retry_attempt, :max_exponent))
    ) <= now() AS retry_due
"""

CLAIM_NEW: Final = text(
    f"""
    SELECT {_COLUMNS} FROM orders o
     WHERE o.status = 'PENDING' AND o.approved_at IS NULL
     ORDER BY o.created_at, o.id
     LIMIT :limit
     FOR UPDATE SKIP LOCKED
    """
)

LOCK_ONE: Final = text(f"SELECT {_COLUMNS} FROM orders o WHERE o.id = :id FOR UPDATE")

READ_MANY: Final = text(f"SELECT {_COLUMNS} FROM orders o WHERE o.id = ANY(:ids)")

NOW: Final = text("SELECT now()")
"""The database's clock: the transaction's start, like every ``now()`` in these statements."""

CANCELLED_SINCE: Final = text(
    """
    SELECT o.id, o.updated_at, o.filled_quantity FROM orders o
     WHERE o.status = 'CANCELLED' AND o.approved_at IS NOT NULL AND o.updated_at >= :since
       AND NOT (o.id = ANY(:seen))
     ORDER BY o.updated_at, o.id
     LIMIT :limit
    """
)

APPROVE: Final = text("UPDATE orders SET approved_at = now() WHERE id = :id")
ROUTED: Final = text("UPDATE orders SET routed_at = now(), status_reason = :reason WHERE id = :id")
RETRY: Final = text(
    "UPDATE orders SET retry_attempt = retry_attempt + 1, error_code = :code,"
    " status_reason = :reason WHERE id = :id"
)
RECOVERED: Final = text(
    "UPDATE orders SET recovered_at = now(), status_reason = :reason WHERE id = :id"
)
_CLOSE: Final = text(
    "UPDATE orders SET status = CAST(:status AS order_status_enum), status_reason = :reason,"
    " error_code = coalesce(:code, error_code), retry_attempt = retry_attempt + :failed"
    " WHERE id = :id RETURNING updated_at"
)
_FILL_IDS: Final = text("SELECT id FROM fills WHERE order_id = :id")
_INSERT_FILL: Final = text(
    """
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission, "timestamp")
    VALUES (:id, :order_id, :quantity, :price, :venue, :commission, :timestamp)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
)


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
    status: str
    filled_quantity: int
    retry_attempt: int
    approved_at: datetime | None
    routed_at: datetime | None
    updated_at: datetime
    expired: bool
    retry_due: bool

    @classmethod
    def from_row(cls, row: Any) -> OrderRow:
        return cls(**{field.name: getattr(row, field.name) for field in fields(cls)})

    @property
    def final(self) -> bool:
        return self.status in _FINAL

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
        )


async def close_order(
    conn: AsyncConnection,
    order: OrderRow,
    status: str,
    reason: str,
    code: str | None,
    *,
    failed: int = 0,
) -> datetime:
    """Make a locked, non-final order final; returns its ``updated_at``.

    ``failed``: failed venue attempts to count on the way.
    """
    if status == "REJECTED" and order.status == "PARTIAL":
        # Part of it executed, and the lifecycle only lets a PARTIAL order be cancelled.
        status, reason = "CANCELLED", f"{reason} ({code})" if code else reason
    result = await conn.execute(
        _CLOSE,
        {"id": order.id, "status": status, "reason": reason, "code": code, "failed": failed},
    )
    closed_at: datetime = result.scalar_one()
    return closed_at


async def insert_fills(
    conn: AsyncConnection, order_id: UUID, executions: Sequence[Execution]
) -> int:
    """Record the executions not recorded yet, in the venue's order; returns how many."""
    known = set((await conn.execute(_FILL_IDS, {"id": order_id})).scalars())
    inserted = 0
    for execution in executions:
        if execution.execution_id in known:
            continue
        if execution.order_id != order_id:
            log.error("order %s: venue reported a foreign execution %s", order_id, execution)
            continue
        row = (
            await conn.execute(
                _INSERT_FILL,
                {
                    "id": execution.execution_id,
                    "order_id": order_id,
                    "quantity": execution.quantity,
                    "price": execution.price,
                    "venue": execution.venue,
                    "commission": execution.commission,
                    "timestamp": execution.timestamp,
                },
            )
        ).first()
        inserted += row is not None
    return inserted
