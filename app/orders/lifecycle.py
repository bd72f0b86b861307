"""The order lifecycle as pure rules: which change an order in a given state takes.

The database is the authority: its trigger ``orders_enforce_lifecycle`` (migration
001, replaced in 002) refuses every illegal change, whoever writes it. This module
states the same rules so that the API and the engine can explain a refusal before
asking and decide what to write; tests/test_order_lifecycle.py runs one table of
(state, change) against both, so the two cannot drift apart::

    PENDING --approve--> PENDING(approved) --route--> PENDING(routed)
    approved, not final --retry | recover--> unchanged status
    PENDING(approved) | PARTIAL --fill--> PARTIAL | FILLED
    PENDING --reject--> REJECTED
    PENDING | PARTIAL --cancel--> CANCELLED
    CANCELLED(routed) --late fill--> CANCELLED | FILLED

A late fill is an execution the venue made before the cancel reached it: the
database records it (it happened); it is the only change a final order takes.
A PARTIAL order cannot be rejected (part of it executed): the engine, which
must end an order the venue refused, cancels it instead (``closing_status``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from app.models.order import OrderStatusEnum as Status

FINAL = frozenset({Status.FILLED, Status.REJECTED, Status.CANCELLED})
OPEN = frozenset({Status.PENDING, Status.PARTIAL})
"""Not final: the engine still works these orders, and a trader may cancel them."""


class Change(enum.StrEnum):
    """The transitions a writer asks for; fills drive the status on their own."""

    APPROVE = "approve"
    ROUTE = "route"
    RETRY = "retry"
    RECOVER = "recover"
    FILL = "fill"
    REJECT = "reject"
    CANCEL = "cancel"


# The status changes a writer may ask for directly (the trigger's list).
_STATUS_CHANGES: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.PENDING, Status.CANCELLED),
        (Status.PENDING, Status.REJECTED),
        (Status.PARTIAL, Status.CANCELLED),
    }
)
_TARGET = {Change.REJECT: Status.REJECTED, Change.CANCEL: Status.CANCELLED}


@dataclass(frozen=True, slots=True)
class State:
    """What the lifecycle looks at in an order: its status, whether it was approved
    (``approved_at``) and routed to a venue (``routed_at``)."""

    status: Status
    approved: bool = False
    routed: bool = False


def allows(state: State, change: Change) -> bool:
    """Whether an order in ``state`` takes ``change`` (the fill's quantity aside: the
    database refuses fills past the order's quantity too)."""
    if change is Change.FILL:
        return state.approved and (state.status in OPEN or takes_late_fill(state))
    if state.status in FINAL:
        return False
    if change is Change.APPROVE:
        return state.status is Status.PENDING and not state.approved
    if change is Change.ROUTE:
        return state.status is Status.PENDING and state.approved and not state.routed
    if change in (Change.RETRY, Change.RECOVER):
        return state.approved
    return (state.status, _TARGET[change]) in _STATUS_CHANGES


def takes_late_fill(state: State) -> bool:
    """A routed order cancelled before the venue's executions were recorded."""
    return state.status is Status.CANCELLED and state.routed


def status_after_fill(state: State, *, filled: int, quantity: int) -> Status:
    """The status a fill leaves the order in, ``filled`` being its filled quantity then."""
    if filled >= quantity:
        return Status.FILLED
    return Status.CANCELLED if takes_late_fill(state) else Status.PARTIAL


def closing_status(current: Status, wanted: Status) -> Status:
    """The final status the engine gives an open order it wants to end as ``wanted``:
    REJECTED is for an order nothing of which executed, so a PARTIAL one is cancelled."""
    if wanted is Status.REJECTED and not allows(State(current, approved=True), Change.REJECT):
        return Status.CANCELLED
    return wanted


def sql_list(statuses: Iterable[Status]) -> str:
    """``statuses`` as an SQL list of literals, for statements that filter on a status set."""
    return "(" + ", ".join(f"'{status.value}'" for status in sorted(statuses)) + ")"
