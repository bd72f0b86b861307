"""Every write to an order, once: the API's mutations and the engine use these alike.

Each function is one statement inside the caller's transaction (``Tx``), which
decides the role: a trader replaces, ``service_role`` (the API's operator mutations
and the engine) does the rest. A trader's submit and cancel are migration 011's
functions, called through orders/writers.py. The statements write only
``orders`` columns and ``fills``; the migrations' triggers derive fill state and
statuses, enforce the lifecycle (``app.orders.lifecycle`` states it in Python) and
write every ``execution_logs`` row. Each returns the order (or fill) as written,
or None when the statement reached no row.

The database's refusals surface as ``sqlalchemy`` errors: the API translates
them (``queries.database_errors``), the engine lets them fail its step.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Final
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import RowMapping

from app.db.session import Tx
from app.models.order import OrderStatusEnum as Status
from app.orders.fields import SUBMIT_FIELDS
from app.orders.queries import FILL_COLUMNS, ORDER_COLUMNS
from app.orders.validation import NewOrder

# A replacement (migration 006's protocol, step 1): the submit fields, from the registry
# (orders/fields.py: a new one is an insert column without an edit here), and the order it
# replaces. Its quantity is the total wanted; the database stores what is left after the
# chain's fills. asyncpg types each parameter from its column (enums included).
_INSERT_REPLACEMENT: Final = text(
    f"INSERT INTO orders (trader_id, replaces_id, {', '.join(SUBMIT_FIELDS)})"
    f" VALUES (:trader_id, :replaces_id, {', '.join(':' + name for name in SUBMIT_FIELDS)})"
    f" RETURNING {ORDER_COLUMNS}"
)
_APPROVE: Final = text(
    f"UPDATE orders SET approved_at = now() WHERE id = :id RETURNING {ORDER_COLUMNS}"
)
_ROUTE: Final = text(
    "UPDATE orders SET routed_at = now(), status_reason = :reason"
    f" WHERE id = :id RETURNING {ORDER_COLUMNS}"
)
_RETRY: Final = text(
    "UPDATE orders SET retry_attempt = retry_attempt + 1, error_code = :code,"
    f" status_reason = :reason WHERE id = :id RETURNING {ORDER_COLUMNS}"
)
_RECOVER: Final = text(
    "UPDATE orders SET recovered_at = now(), status_reason = :reason"
    f" WHERE id = :id RETURNING {ORDER_COLUMNS}"
)
# Reject and cancel. A trader's grants cover status and status_reason only, so the columns
# a trader may not write are named only when there is something to write: ``code`` and
# ``failed``, the failed venue attempts counted on the way (the engine's last retry).
_SET_STATUS: Final = text(
    "UPDATE orders SET status = CAST(:status AS order_status_enum), status_reason = :reason"
    f" WHERE id = :id RETURNING {ORDER_COLUMNS}"
)
_CLOSE_ORDER: Final = (
    "UPDATE orders SET status = CAST(:status AS order_status_enum), status_reason = :reason,"
    " error_code = coalesce(:code, error_code), retry_attempt = retry_attempt + :failed"
    " WHERE id = :id"
)
_CLOSE: Final = text(f"{_CLOSE_ORDER} RETURNING {ORDER_COLUMNS}")
# The same, for an order whose row Python cannot hold (a timestamp past the year 9999):
# reading it back would fail as every earlier read of it did.
_CLOSE_UNREADABLE: Final = text(f"{_CLOSE_ORDER} RETURNING id")
# The engine's confirmation that a replacement took over (migration 006's protocol, step 3).
_CONFIRM_REPLACE: Final = text(
    "UPDATE orders SET status = 'REPLACED', replaced_by_id = :replacement"
    f" WHERE id = :id RETURNING {ORDER_COLUMNS}"
)
FILLED_FIRST: Final = "FILLED_FIRST"
"""The error code of a replacement rejected because the order it would replace filled after
it was requested (migration 006's protocol, step 4): that order's fills stand."""
# The engine names a fill by the venue's execution id, which makes recording it again
# (a poll reports every execution again) a no-op; the API's fills get a new id.
_INSERT_FILL: Final = text(
    "INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission,"
    ' "timestamp")'
    " VALUES (coalesce(CAST(:id AS uuid), gen_random_uuid()), :order_id, :quantity,"
    " :price, :venue, :commission, coalesce(:timestamp, now()))"
    " ON CONFLICT (id) DO NOTHING"
    f" RETURNING {FILL_COLUMNS}"
)


async def insert_replacement(
    tx: Tx, trader_id: UUID, replaces_id: UUID, order: NewOrder
) -> RowMapping | None:
    """The replacement of ``replaces_id``, PENDING until the engine confirms it
    (``order.quantity`` is the total wanted, fills of the orders it replaces included)."""
    return await tx.first(
        _INSERT_REPLACEMENT,
        {
            "trader_id": trader_id,
            "replaces_id": replaces_id,
            **{name: _value(getattr(order, name)) for name in SUBMIT_FIELDS},
        },
    )


def _value(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


async def approve(tx: Tx, order_id: UUID) -> RowMapping | None:
    return await tx.first(_APPROVE, {"id": order_id})


async def route(tx: Tx, order_id: UUID, *, reason: str) -> RowMapping | None:
    """The venue accepted the order: it is routed (once; the trigger refuses a second)."""
    return await tx.first(_ROUTE, {"id": order_id, "reason": reason})


async def retry(tx: Tx, order_id: UUID, *, code: str, reason: str) -> RowMapping | None:
    """A routing attempt failed transiently and will be retried."""
    return await tx.first(_RETRY, {"id": order_id, "code": code, "reason": reason})


async def recover(tx: Tx, order_id: UUID, *, reason: str) -> RowMapping | None:
    """A worker took over an order in flight (the RECOVERED audit row)."""
    return await tx.first(_RECOVER, {"id": order_id, "reason": reason})


async def close(
    tx: Tx,
    order_id: UUID,
    status: Status,
    *,
    reason: str | None,
    code: str | None = None,
    failed: int = 0,
) -> RowMapping | None:
    """Reject or cancel the order (``status``); ``error_code`` keeps its value unless
    ``code`` is given."""
    params = {"id": order_id, "status": status.value, "reason": reason}
    if code is None and not failed:
        return await tx.first(_SET_STATUS, params)
    return await tx.first(_CLOSE, {**params, "code": code, "failed": failed})


async def reject_unreadable(tx: Tx, order_id: UUID, *, reason: str, code: str) -> bool:
    """Reject an order whose row the caller cannot decode; nothing of it is read back.
    False when the statement reached no row."""
    params = {"id": order_id, "status": Status.REJECTED.value, "reason": reason}
    row = await tx.first(_CLOSE_UNREADABLE, {**params, "code": code, "failed": 0})
    return row is not None


async def expire(tx: Tx, order_id: UUID, *, reason: str) -> RowMapping | None:
    """The order reached its ``expires_at`` (the database refuses it earlier): EXPIRED, with
    its own audit action."""
    return await tx.first(
        _SET_STATUS, {"id": order_id, "status": Status.EXPIRED.value, "reason": reason}
    )


async def confirm_replace(tx: Tx, order_id: UUID, *, replacement: UUID) -> RowMapping | None:
    """The order is REPLACED by ``replacement``, which from now on is an ordinary order; the
    database refuses it if the order filled since the replacement was requested."""
    return await tx.first(_CONFIRM_REPLACE, {"id": order_id, "replacement": replacement})


async def reject_replacement(
    tx: Tx, replacement: UUID, *, code: str, reason: str
) -> RowMapping | None:
    """The replacement cannot take over (``code``: ``FILLED_FIRST`` when the order it would
    replace filled first): REJECTED, the other order's fills stand."""
    return await close(tx, replacement, Status.REJECTED, reason=reason, code=code)


async def insert_fill(
    tx: Tx,
    *,
    order_id: UUID,
    quantity: int,
    price: Decimal,
    venue: str,
    commission: Decimal,
    timestamp: datetime | None,
    fill_id: UUID | None = None,
) -> RowMapping | None:
    """Record one execution; None when ``fill_id`` is recorded already. ``timestamp``
    defaults to now."""
    return await tx.first(
        _INSERT_FILL,
        {
            "id": fill_id,
            "order_id": order_id,
            "quantity": quantity,
            "price": price,
            "venue": venue,
            "commission": commission,
            "timestamp": timestamp,
        },
    )
