"""The order lifecycle as pure rules: which change an order in a given state takes.

The database is the authority: its trigger ``orders_enforce_lifecycle`` (migration
001, replaced in 002 and 006) refuses every illegal change, whoever writes it. This module
states the same rules so that the API and the engine can explain a refusal before
asking and decide what to write; tests/test_order_lifecycle.py runs one table of
(state, change) against both, so the two cannot drift apart::

    PENDING --approve--> PENDING(approved) --route--> PENDING(routed)
    approved, not final --retry | recover--> unchanged status
    PENDING(approved) | PARTIAL --fill--> PARTIAL | FILLED
    PENDING --reject--> REJECTED
    PENDING | PARTIAL --cancel--> CANCELLED
    PENDING | PARTIAL, expires_at reached --expire--> EXPIRED
    PENDING | PARTIAL, a replacement waiting, no fill since it was requested
        --replace (the confirmation)--> REPLACED
    CANCELLED(routed) | EXPIRED(routed) --late fill--> unchanged | FILLED

A late fill is an execution the venue made before the cancel reached it: the
database records it (it happened); it is the only change a final order takes.
A REPLACED order takes none: once the venue confirmed the replacement, what
executes belongs to the order that replaced it.
A PARTIAL order cannot be rejected (part of it executed): the engine, which
must end an order the venue refused, cancels it instead (``closing_status``).
An unconfirmed replacement (it ``replaces`` an order not REPLACED by it yet) is a
request: it is not approved until the engine confirms it (or rejects it).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from app.models.order import OrderStatusEnum as Status

FINAL = frozenset(
    {Status.FILLED, Status.REJECTED, Status.CANCELLED, Status.EXPIRED, Status.REPLACED}
)
OPEN = frozenset({Status.PENDING, Status.PARTIAL})
"""Not final: the engine still works these orders, and a trader may cancel them."""
STOPPED = frozenset({Status.CANCELLED, Status.EXPIRED})
"""Ended while possibly still working at the venue: stopped there after the fact, and
late fills taken if routed."""


class Change(enum.StrEnum):
    """The transitions a writer asks for; fills drive the status on their own."""

    APPROVE = "approve"
    ROUTE = "route"
    RETRY = "retry"
    RECOVER = "recover"
    FILL = "fill"
    REJECT = "reject"
    CANCEL = "cancel"
    EXPIRE = "expire"
    REPLACE = "replace"
    """The engine's confirmation that the venue let the waiting replacement take over."""


# The status changes a writer may ask for directly (the trigger's list).
_STATUS_CHANGES: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.PENDING, Status.CANCELLED),
        (Status.PENDING, Status.REJECTED),
        (Status.PARTIAL, Status.CANCELLED),
        (Status.PENDING, Status.EXPIRED),
        (Status.PARTIAL, Status.EXPIRED),
        (Status.PENDING, Status.REPLACED),
        (Status.PARTIAL, Status.REPLACED),
    }
)
TARGET = {
    Change.REJECT: Status.REJECTED,
    Change.CANCEL: Status.CANCELLED,
    Change.EXPIRE: Status.EXPIRED,
    Change.REPLACE: Status.REPLACED,
}
"""The status each status-setting change leaves the order in."""


@dataclass(frozen=True, slots=True)
class State:
    """What the lifecycle looks at in an order: its status, whether it was approved
    (``approved_at``) and routed to a venue (``routed_at``), whether its ``expires_at`` is
    reached (in the database's clock), whether it is an unconfirmed replacement itself
    (``awaiting_confirmation``), and whether a replacement of it waits for confirmation
    (``replacement_waiting``) and it filled since that was requested."""

    status: Status
    approved: bool = False
    routed: bool = False
    expiry_reached: bool = False
    awaiting_confirmation: bool = False
    replacement_waiting: bool = False
    filled_since_replacement: bool = False


def allows(state: State, change: Change) -> bool:
    """Whether an order in ``state`` takes ``change`` (the fill's quantity aside: the
    database refuses fills past the order's quantity too)."""
    if change is Change.FILL:
        return state.approved and (state.status in OPEN or takes_late_fill(state))
    if state.status in FINAL:
        return False
    if change is Change.APPROVE:
        return (
            state.status is Status.PENDING
            and not state.approved
            and not state.awaiting_confirmation
        )
    if change is Change.ROUTE:
        return state.status is Status.PENDING and state.approved and not state.routed
    if change in (Change.RETRY, Change.RECOVER):
        return state.approved
    if change is Change.EXPIRE and not state.expiry_reached:
        return False
    if change is Change.REPLACE and (
        not state.replacement_waiting or state.filled_since_replacement
    ):
        return False
    return (state.status, TARGET[change]) in _STATUS_CHANGES


def takes_late_fill(state: State) -> bool:
    """A routed order cancelled or expired before the venue's executions were recorded."""
    return state.status in STOPPED and state.routed


def status_after_fill(state: State, *, filled: int, quantity: int) -> Status:
    """The status a fill leaves the order in, ``filled`` being its filled quantity then."""
    if filled >= quantity:
        return Status.FILLED
    return state.status if takes_late_fill(state) else Status.PARTIAL


def closing_status(current: Status, wanted: Status) -> Status:
    """The final status the engine gives an open order it wants to end as ``wanted``:
    REJECTED is for an order nothing of which executed, so a PARTIAL one is cancelled."""
    if wanted is Status.REJECTED and not allows(State(current, approved=True), Change.REJECT):
        return Status.CANCELLED
    return wanted


def sql_list(statuses: Iterable[Status]) -> str:
    """``statuses`` as an SQL list of literals, for statements that filter on a status set."""
    return "(" + ", ".join(f"'{status.value}'" for status in sorted(statuses)) + ")"


CANCELLABLE: Final = sorted(
    f"{status.value}:{str(approved).lower()}:{str(routed).lower()}"
    for status, approved, routed in itertools.product(Status, (False, True), (False, True))
    if allows(State(status, approved=approved, routed=routed), Change.CANCEL)
)
"""The states a trader's cancel takes, as migration 011's ``cancel_own_order`` compares them
(STATUS:approved:routed): this table, passed in rather than restated in SQL."""
