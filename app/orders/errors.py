"""What can go wrong with an order request, in the terms the API reports.

    OrderError                      base; ``code`` is the contract's extensions.code
    ├── Unauthenticated             no token, and the operation needs one
    ├── Forbidden                   the caller's role may not do this
    ├── InvalidInput                a bad argument; ``field`` names the input field
    ├── OrderNotFound               missing, or hidden by row level security (the same to the caller)
    ├── RateLimited                 the trader's order rate is at its limit; ``retry_after_seconds``
    └── Conflict                    an illegal state change, or a reused clientOrderId
        └── IdempotencyConflict     the clientOrderId exists with different content

graphql/errors.py turns these into GraphQL errors; database errors are mapped
to them in orders/queries.py, the one place that talks SQL.
"""

from __future__ import annotations

from uuid import UUID


class OrderError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(OrderError):
    code = "UNAUTHENTICATED"

    def __init__(self, message: str = "this operation needs a valid token") -> None:
        super().__init__(message)


class Forbidden(OrderError):
    code = "FORBIDDEN"


class InvalidInput(OrderError):
    code = "BAD_USER_INPUT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class OrderNotFound(OrderError):
    code = "NOT_FOUND"

    def __init__(self, order_id: UUID) -> None:
        super().__init__(f"order {order_id} not found")
        self.order_id = order_id


class RateLimited(OrderError):
    """The database refused the order for ``order_limits.max_orders_per_minute`` (migration
    015, SQLSTATE OA429): nothing was written; a place frees in ``retry_after_seconds``."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Conflict(OrderError):
    code = "CONFLICT"


class IdempotencyConflict(Conflict):
    def __init__(self, client_order_id: str) -> None:
        super().__init__(
            f"clientOrderId {client_order_id!r} was already used for a different order"
        )
        self.client_order_id = client_order_id
