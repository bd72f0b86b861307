"""One place that turns exceptions into the contract's GraphQL errors.

Domain errors (orders/errors.py) keep their message and code; GraphQL's own
parse and validation errors are the caller's input (BAD_USER_INPUT); anything
else is masked: the client gets a request id, the log gets the whole story.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from graphql import GraphQLError

from app.db.session import (
    CONNECTION_LOST,
    DATABASE_UNREACHABLE,
    POOL_EXHAUSTED,
    STATEMENT_TIMEOUT,
    DatabaseUnavailable,
)
from app.orders.errors import InvalidInput, OrderError

log = logging.getLogger("app.graphql")

INTERNAL = "INTERNAL_SERVER_ERROR"
UNAVAILABLE = "SERVICE_UNAVAILABLE"

# SERVICE_UNAVAILABLE (HTTP 503): retryable; extensions.reason says why.
_UNAVAILABLE_MESSAGES = {
    DATABASE_UNREACHABLE: "The database is unavailable; retry shortly",
    POOL_EXHAUSTED: "The server is busy (no database connection was free); retry shortly",
    CONNECTION_LOST: (
        "The database connection was lost during the request; retry (a write is never applied"
        " twice when retried with the same clientOrderId)"
    ),
    STATEMENT_TIMEOUT: (
        "The request took longer than the database allows and was cancelled; nothing was"
        " written. Retry, or ask for less"
    ),
}

# graphql-core reports a variable its scalar cannot parse (a price of "abc", a malformed
# UUID or DateTime) as "Variable '$input' has invalid value at .price: ..."; the path is
# only in the message, so the contract's extensions.field is taken from there.
_INVALID_VARIABLE = re.compile(
    r"Variable '\$(?P<variable>\w+)' has invalid value(?: at (?P<path>(?:\.\w+|\[\d+\])+))?:"
)


def _invalid_variable_field(error: GraphQLError) -> str | None:
    match = _INVALID_VARIABLE.match(error.message)
    if match is None:
        return None
    names = re.findall(r"\.(\w+)", match.group("path") or "")
    return names[-1] if names else match.group("variable")


def _original(error: GraphQLError) -> BaseException | None:
    original: BaseException | None = error.original_error
    # Strawberry may wrap; unwrap to the first exception that is not a GraphQLError.
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    return original


def code_of(error: GraphQLError) -> str:
    original = _original(error)
    if isinstance(original, OrderError):
        return original.code
    if isinstance(original, DatabaseUnavailable):
        return UNAVAILABLE
    if original is None or isinstance(original, GraphQLError):
        return "BAD_USER_INPUT"
    return INTERNAL


def is_expected(error: GraphQLError) -> bool:
    return code_of(error) != INTERNAL


def format_error(error: GraphQLError, request_id: str) -> dict[str, Any]:
    original = _original(error)
    code = code_of(error)
    extensions: dict[str, Any] = {"code": code}
    if code == INTERNAL:
        message = f"Internal server error (request id {request_id})"
        extensions["requestId"] = request_id
    elif isinstance(original, DatabaseUnavailable):
        message = _UNAVAILABLE_MESSAGES.get(
            original.reason, _UNAVAILABLE_MESSAGES[DATABASE_UNREACHABLE]
        )
        extensions["reason"] = original.reason
    elif isinstance(original, OrderError):
        message = original.message
        if isinstance(original, InvalidInput):
            extensions["field"] = original.field
    else:
        message = error.message
        field = _invalid_variable_field(error)
        if field is not None:
            extensions["field"] = field
    formatted: dict[str, Any] = {"message": message, "extensions": extensions}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path:
        formatted["path"] = error.path
    return formatted


def log_unexpected(errors: list[GraphQLError], request_id: str) -> None:
    for error in errors:
        if not is_expected(error):
            original = _original(error)
            log.error(
                "request %s: unexpected error in %s",
                request_id,
                ".".join(str(p) for p in error.path or []),
                exc_info=(type(original), original, original.__traceback__) if original else None,
            )
