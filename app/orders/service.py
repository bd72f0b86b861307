"""Use cases of the order API. Services never commit: the request transaction does.

Role checks here only choose the clearest error (UNAUTHENTICATED, FORBIDDEN);
the database's grants and policies refuse the same writes on their own.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy.engine import RowMapping

from app.auth.claims import Claims
from app.db.session import Tx
from app.models.order import OrderStatusEnum, OrderTypeEnum, TimeInForceEnum
from app.orders import fields, ledger, lifecycle, limits, queries, validation, writers
from app.orders.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    OrderError,
    OrderNotFound,
    Unauthenticated,
)
from app.orders.lifecycle import Change, State
from app.orders.limits import OrderLimits
from app.orders.writers import OrderRow, Writer

CANCEL_REASON = "cancelled by trader"
"""The audit trail's reason for a trader's cancel that gives none."""


def _require_role(tx: Tx, *roles: str) -> None:
    require_role(tx.claims, *roles)


def require_role(claims: Claims, *roles: str) -> None:
    """The caller's role may do this."""
    if claims.role == "anon":
        raise Unauthenticated()
    if claims.role not in roles:
        raise Forbidden(f"role {claims.role} may not do this; it needs {' or '.join(roles)}")


async def submit_order(
    writer: Writer,
    *,
    symbol: str,
    side: str,
    quantity: int,
    order_type: OrderTypeEnum,
    price: Decimal | None,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
    expires_at: datetime | None,
    client_order_id: str | None,
    stop_price: Decimal | None = None,
    time_in_force: TimeInForceEnum | None = TimeInForceEnum.GTC,
) -> OrderRow:
    """The trader's new order, or the one placed before under the same clientOrderId with
    the same content. Validated with every limit left open (the database's triggers apply
    the limits in force): only an order something refuses costs a read of the real ones."""
    require_role(writer.claims, "authenticated")
    trader_id = writer.claims.sub
    assert trader_id is not None  # token verification requires a sub for authenticated
    now = datetime.now(UTC)

    def validated(in_force: OrderLimits, closing: datetime) -> validation.NewOrder:
        return validation.new_order(
            symbol=symbol,
            side=side,
            quantity=quantity,
            order_type=order_type,
            price=price,
            stop_loss=stop_loss,
            take_profit=take_profit,
            expires_at=expires_at,
            client_order_id=client_order_id,
            stop_price=stop_price,
            time_in_force=time_in_force,
            now=now,
            limits=in_force,
            session_close=closing,
        )

    try:
        order = validated(limits.OPEN, OPEN_CLOSE)
    except OrderError:
        raise await _refusal(writer, validated) from None
    try:
        with queries.database_errors():
            row = await writer.call(
                writers.PLACE_ORDER, writers.new_order_document(trader_id, order)
            )
    except writers.Refused as refused:
        raise await _refusal(writer, validated, refused) from None
    if row["inserted"]:
        return row
    # ON CONFLICT DO NOTHING: the clientOrderId is taken (only it can conflict).
    assert order.client_order_id is not None
    if row["id"] is None:  # pragma: no cover - the conflicting row is committed and visible
        raise Conflict("the order could not be written; retry")
    if not same_content(row, order):
        raise IdempotencyConflict(order.client_order_id)
    return row


OPEN_CLOSE = datetime.max.replace(tzinfo=UTC)
"""The session close a DAY order's expiresAt is first held to: left open like the limits
(the database's trigger checks the real one, migration 006)."""


async def _refusal(
    writer: Writer,
    validated: Callable[[OrderLimits, datetime], validation.NewOrder],
    refused: writers.Refused | None = None,
) -> OrderError:
    """The error for an order refused with the limits (and close) left open, or by the
    database: its validation against the limits in force, read where the writer reads, so
    the first rule it breaks is named as with those limits; else the database's words
    (a rule Python does not state, such as migration 010's open order cap)."""
    row = await writer.read(limits.IN_FORCE)
    in_force = OrderLimits.from_row(row)  # LimitsMissing without a row
    assert row is not None
    try:
        validated(in_force, row["session_close"])
    except OrderError as error:
        return error
    if refused is None:
        raise AssertionError("an order refused with open limits passed with the real ones")
    translated = queries.translate("OA422", None, refused)
    assert translated is not None
    return translated


async def _session_close(tx: Tx, time_in_force: TimeInForceEnum | None) -> datetime | None:
    """The close a DAY order ends at, from the database (asked only for DAY orders)."""
    if time_in_force is not TimeInForceEnum.DAY:
        return None
    return await queries.session_close(tx)


def same_content(
    row: Mapping[Any, Any], order: validation.NewOrder, *, stored_quantity: int | None = None
) -> bool:
    """Whether ``row`` is the order ``order`` describes. ``stored_quantity``: what the
    database made of ``order.quantity`` (a replacement's total, less the fills before it)."""

    def normalized(value: object) -> object:
        # The database's enums arrive as text; the order's are the Python enums.
        return value.value if isinstance(value, enum.Enum) else value

    expected = {name: getattr(order, name) for name in fields.IDEMPOTENCY_FIELDS}
    if stored_quantity is not None:
        expected["quantity"] = stored_quantity
    if order.time_in_force is TimeInForceEnum.DAY and order.expires_at is None:
        # The database set it to the session close of the day the order was accepted.
        del expected["expires_at"]
    return all(normalized(row[name]) == normalized(value) for name, value in expected.items())


REPLACEABLE = ("quantity", "price", "stop_price", "time_in_force", "expires_at", "client_order_id")
"""What a replacement may change (ReplaceOrderInput); the rest is the replaced order's."""


async def replace_order(tx: Tx, *, order_id: UUID, changes: Mapping[str, Any]) -> RowMapping:
    """The owner replaces a working order (migration 006's protocol, step 1): the new order,
    PENDING with replacesId set, which the engine confirms or rejects.

    ``changes`` holds the fields given (``REPLACEABLE``); one left out is copied from the
    old order, except clientOrderId (the new order's own idempotency key) and, when the
    time in force changes, expiresAt (the new time in force's default). ``quantity`` is the
    total wanted, fills of the replaced orders included; left out, the total that leaves
    exactly the old order's unfilled rest."""
    _require_role(tx, "authenticated")
    trader_id = tx.claims.sub
    assert trader_id is not None  # token verification requires a sub for authenticated
    unknown = set(changes) - set(REPLACEABLE)
    assert not unknown, f"not replaceable: {unknown}"
    for name, field in (("quantity", "quantity"), ("time_in_force", "timeInForce")):
        if name in changes and changes[name] is None:
            raise InvalidInput(field, f"{field} may be left out (to keep it), not null")
    # Locked first: a repeat of this request waits for the first to commit, then finds it.
    old = await queries.order_for_update(tx, order_id)
    if old is None:
        raise OrderNotFound(order_id)  # RLS: "not yours" and "missing" look the same
    client_order_id = changes.get("client_order_id")
    existing = (
        await queries.order_by_client_id(tx, trader_id, client_order_id)
        if client_order_id is not None
        else None
    )
    status = OrderStatusEnum(old["status"])
    if existing is None and status not in lifecycle.OPEN:
        raise Conflict(
            f"a {status.value} order cannot be replaced: only a PENDING or PARTIAL order can"
        )
    filled = await queries.chain_filled(tx, order_id)
    # Left out: the old order's quantity, counted over the chain (its own fills are in both).
    total = changes.get("quantity", old["quantity"] - old["filled_quantity"] + filled)
    old_time_in_force = TimeInForceEnum(old["time_in_force"])
    time_in_force = changes.get("time_in_force", old_time_in_force)
    kept_expiry = old["expires_at"] if time_in_force is old_time_in_force else None

    order = validation.new_order(
        symbol=old["symbol"],
        side=old["side"],
        quantity=total,
        order_type=OrderTypeEnum(old["order_type"]),
        price=changes.get("price", old["price"]),
        stop_loss=old["stop_loss"],
        take_profit=old["take_profit"],
        expires_at=changes.get("expires_at", kept_expiry),
        client_order_id=client_order_id,
        stop_price=changes.get("stop_price", old["stop_price"]),
        time_in_force=time_in_force,
        now=datetime.now(UTC),
        limits=OrderLimits.from_row(await tx.first(limits.READ)),
        session_close=await _session_close(tx, time_in_force),
    )
    if existing is not None:
        assert client_order_id is not None
        # A repeat: the same request again, compared with the total the replacement stood
        # for when it was written (the fills before it; later ones do not change the request).
        if existing["replaces_id"] != order_id or not same_content(
            existing,
            order,
            stored_quantity=order.quantity
            - await queries.chain_filled(tx, order_id, before=existing["created_at"]),
        ):
            raise IdempotencyConflict(client_order_id)
        return existing
    if order.quantity <= filled:
        raise InvalidInput(
            "quantity",
            f"quantity is the total wanted, fills so far included: it must be above the"
            f" {filled} already filled",
        )
    with queries.database_errors(order_id):
        row = await ledger.insert_replacement(tx, trader_id, order_id, order)
    if row is None:  # pragma: no cover - RETURNING always yields the inserted row
        raise Conflict("the replacement was not written; retry")
    return row


async def cancel_order(writer: Writer, *, order_id: UUID, reason: str | None) -> OrderRow:
    require_role(writer.claims, "authenticated")
    reason = validation.bounded_text("reason", reason, validation.MAX_REASON_LENGTH)
    with queries.database_errors(order_id):
        row = await writer.call(
            writers.CANCEL_OWN_ORDER, order_id, reason or CANCEL_REASON, lifecycle.CANCELLABLE
        )
    if row["outcome"] == "not_found":
        # RLS hides other traders' orders: "not yours" and "missing" must look the same.
        raise OrderNotFound(order_id)
    if row["outcome"] == "refused":
        raise cannot_cancel(state_of(row))
    return row


async def approve_order(tx: Tx, *, order_id: UUID) -> RowMapping:
    _require_role(tx, "service_role")
    order = await queries.order_for_update(tx, order_id)
    if order is None:
        raise OrderNotFound(order_id)
    state = state_of(order)
    if not lifecycle.allows(state, Change.APPROVE):
        raise Conflict(
            f"only an unapproved PENDING order can be approved (it is {state.status.value})"
        )
    with queries.database_errors(order_id):
        row = await ledger.approve(tx, order_id)
    if row is None:
        raise OrderNotFound(order_id)
    return row


async def reject_order(
    tx: Tx, *, order_id: UUID, reason: str, error_code: str | None
) -> RowMapping:
    _require_role(tx, "service_role")
    reason = validation.bounded_text("reason", reason.strip(), validation.MAX_REASON_LENGTH) or ""
    if not reason:
        raise InvalidInput("reason", "reason must not be empty")
    error_code = validation.bounded_text("errorCode", error_code, validation.MAX_ERROR_CODE_LENGTH)
    order = await queries.order_for_update(tx, order_id)
    if order is None:
        raise OrderNotFound(order_id)
    state = state_of(order)
    if not lifecycle.allows(state, Change.REJECT):
        # A PARTIAL order too: part of it executed (the engine cancels such an order instead).
        raise Conflict(f"a {state.status.value} order cannot be rejected")
    with queries.database_errors(order_id):
        row = await ledger.close(
            tx, order_id, OrderStatusEnum.REJECTED, reason=reason, code=error_code
        )
    if row is None:
        raise OrderNotFound(order_id)
    return row


async def record_fill(
    tx: Tx,
    *,
    order_id: UUID,
    quantity_filled: int,
    price_at_fill: Decimal,
    venue: str,
    commission: Decimal | None,
    timestamp: datetime | None,
) -> RowMapping:
    _require_role(tx, "service_role")
    fill = validation.new_fill(
        order_id=order_id,
        quantity_filled=quantity_filled,
        price_at_fill=price_at_fill,
        venue=venue,
        commission=commission,
        timestamp=timestamp,
        now=datetime.now(UTC),
    )
    order = await queries.order_for_update(tx, order_id)
    if order is None:
        raise OrderNotFound(order_id)
    state = state_of(order)
    if not lifecycle.allows(state, Change.FILL):
        raise Conflict(
            f"a {state.status.value} order that is not approved and open cannot be filled"
        )
    if order["filled_quantity"] + fill.quantity_filled > order["quantity"]:
        raise Conflict(
            f"the fill would take filled quantity past {order['quantity']}"
            f" (already filled {order['filled_quantity']})"
        )
    with queries.database_errors(order_id):
        row = await ledger.insert_fill(
            tx,
            order_id=fill.order_id,
            quantity=fill.quantity_filled,
            price=fill.price_at_fill,
            venue=fill.venue,
            commission=fill.commission,
            timestamp=fill.timestamp,
        )
    if row is None:  # pragma: no cover - RETURNING always yields the inserted row
        raise Conflict("the fill was not recorded")
    return row


def cannot_cancel(state: State) -> Conflict:
    return Conflict(f"a {state.status.value} order cannot be cancelled")


def state_of(order: Mapping[Any, Any]) -> State:
    return State(
        OrderStatusEnum(order["status"]),
        approved=order["approved_at"] is not None,
        routed=order["routed_at"] is not None,
    )
