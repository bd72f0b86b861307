"""The order lifecycle as pure rules.

The database enforces the same rules (migration 001, ``orders_enforce_lifecycle``)
for every writer; this module lets the API and the engine explain a refusal
before asking, and documents the state machine in one readable place::

    PENDING --approve--> PENDING(approved) --route--> PENDING(routed)
    PENDING --fill--> PARTIAL --fill--> FILLED
    PENDING --fill--> FILLED
    PENDING --reject--> REJECTED
    PENDING | PARTIAL --cancel--> CANCELLED
    CANCELLED (routed) --late fill--> CANCELLED | FILLED

A late fill is an execution the venue made before the cancel reached it: the
database records it (it happened); it is the only change a terminal order takes.
"""

from __future__ import annotations

from app.models.order import OrderStatusEnum as Status

TERMINAL = frozenset({Status.FILLED, Status.REJECTED, Status.CANCELLED})
CANCELLABLE = frozenset({Status.PENDING, Status.PARTIAL})
REJECTABLE = frozenset({Status.PENDING})

# Status changes a writer may ask for directly; fills drive PENDING/PARTIAL -> PARTIAL/FILLED.
ALLOWED: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.PENDING, Status.CANCELLED),
        (Status.PENDING, Status.REJECTED),
        (Status.PARTIAL, Status.CANCELLED),
    }
)
FILL_DRIVEN: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.PENDING, Status.PARTIAL),
        (Status.PENDING, Status.FILLED),
        (Status.PARTIAL, Status.PARTIAL),
        (Status.PARTIAL, Status.FILLED),
    }
)


def can_transition(current: Status, new: Status, *, by_fill: bool = False) -> bool:
    return (current, new) in (FILL_DRIVEN if by_fill else ALLOWED)


def can_fill(current: Status, *, approved: bool) -> bool:
    return approved and current in (Status.PENDING, Status.PARTIAL)
