"""One place that turns exceptions into the contract's GraphQL errors, bodies and statuses.

HTTP (graphql/endpoint.py and graphql/operation.py for the resolvers,
graphql/compiled/http.py for the compiled path) and both WebSocket protocols
(graphql/websocket.py) shape every error here, so a client meets the same
message and ``extensions.code`` whichever way it asked. Each error's body is
``format_error``'s; an HTTP response's body is ``http_body``'s, its status
``http_status``'s (503 when the database was unavailable: retry; 500 for our
own fault outside any resolver; 429 for a trader's order rate at its limit,
with ``http_headers``' Retry-After; 200 otherwise, GraphQL errors travel in the
body):

- an error of the operation (a GraphQLError): domain errors (orders/errors.py)
  keep their message and code; GraphQL's own parse and validation errors, and
  Strawberry's refusals of a missing query or a wrong operation type, are the
  caller's input (BAD_USER_INPUT); anything else is masked: the client gets a
  request id, the log gets the whole story (format_error, contract_error);
- a refusal before anything executes (an HTTPException: a bad token 401, an
  oversized or malformed request, a subscription over HTTP): a GraphQL-shaped
  body with the contract's code for its status, or its own (``CodedRefusal``:
  a trusted document unknown or required, graphql/trusted.py) (refusal_response); over
  WebSocket, a refused token is the legacy protocol's connection_error
  (token_refused);
- the database unavailable around the operation (opening or committing its
  transaction): SERVICE_UNAVAILABLE, logged as a warning (database_unavailable);
- our own fault outside any resolver: masked as INTERNAL_SERVER_ERROR
  (internal_fault), logged whole with the other errors of the result.

Logging follows whose fault it is: a client's mistake is one INFO line with the
request id; only our own faults are logged at ERROR, with the traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError, Node
from starlette.responses import JSONResponse, Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from app import telemetry
from app.db.failures import (
    CONNECTION_LOST,
    DATABASE_UNREACHABLE,
    POOL_EXHAUSTED,
    STATEMENT_TIMEOUT,
    DatabaseUnavailable,
)
from app.events.stream import EventsInterrupted
from app.graphql.inputs import printable
from app.graphql.subscriptions import UpdatesMissed
from app.orders.errors import InvalidInput, OrderError, RateLimited

log = logging.getLogger("app.graphql")

INTERNAL = "INTERNAL_SERVER_ERROR"
UNAVAILABLE = "SERVICE_UNAVAILABLE"
BAD_USER_INPUT = "BAD_USER_INPUT"
UNAUTHENTICATED = "UNAUTHENTICATED"
PERSISTED_DOCUMENT_NOT_FOUND = "PERSISTED_DOCUMENT_NOT_FOUND"
"""A documentId (or APQ sha256Hash) that names no trusted document (graphql/trusted.py)."""
PERSISTED_DOCUMENT_REQUIRED = "PERSISTED_DOCUMENT_REQUIRED"
"""A document's text sent while TRUSTED_DOCUMENTS=require (graphql/trusted.py)."""

# The code of a refusal before execution, by its HTTP status; any other status is the
# caller's input.
_REFUSAL_CODES = {401: UNAUTHENTICATED, 404: "NOT_FOUND", 503: UNAVAILABLE}

MAX_MESSAGE_CHARS = 300
"""The longest error message a client is sent or the log gets: messages may quote the
client's own value (an unknown enum value, a malformed scalar), whatever its size."""

# Strawberry's refusals of a request it cannot run: the caller's mistake, not ours.
_REFUSED_BY_STRAWBERRY = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)

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


class CodedRefusal(HTTPException):
    """A refusal before execution whose contract code is its own, not its status's (over
    WebSocket, the error message of the operation it refused)."""

    def __init__(self, status_code: int, reason: str, code: str) -> None:
        super().__init__(status_code, reason)
        self.code = code


def code_of(error: GraphQLError) -> str:
    original = _original(error)
    if isinstance(original, CodedRefusal):
        return original.code
    if isinstance(original, OrderError):
        return original.code
    if isinstance(original, DatabaseUnavailable):
        return UNAVAILABLE
    if original is None or isinstance(original, (GraphQLError, *_REFUSED_BY_STRAWBERRY)):
        return BAD_USER_INPUT
    return INTERNAL


def is_expected(error: GraphQLError) -> bool:
    return code_of(error) != INTERNAL


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """At most ``limit`` characters of ``text``, saying how much was cut, and printable."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return printable(text)


def _message(error: GraphQLError, code: str, request_id: str) -> str:
    original = _original(error)
    if code == INTERNAL:
        return f"Internal server error (request id {request_id})"
    if isinstance(original, DatabaseUnavailable):
        return _UNAVAILABLE_MESSAGES.get(
            original.reason, _UNAVAILABLE_MESSAGES[DATABASE_UNREACHABLE]
        )
    if isinstance(original, OrderError):
        return shorten(original.message)
    if isinstance(original, InvalidOperationTypeError):
        # Only the WebSocket path gets here: over HTTP, Strawberry answers it with 405.
        return "only subscriptions are served over WebSocket; send queries and mutations over HTTP"
    if isinstance(original, MissingQueryError | CannotGetOperationTypeError):
        return (
            original.as_http_error_reason()
            if isinstance(original, CannotGetOperationTypeError)
            else str(original)
        )
    return shorten(error.message)


def format_error(error: GraphQLError, request_id: str) -> dict[str, Any]:
    """The error as the client receives it (the contract's message and extensions)."""
    original = _original(error)
    code = code_of(error)
    extensions: dict[str, Any] = {"code": code}
    if code == INTERNAL:
        extensions["requestId"] = request_id
    elif isinstance(original, DatabaseUnavailable):
        extensions["reason"] = original.reason
    elif isinstance(original, InvalidInput):
        extensions["field"] = original.field
    elif isinstance(original, RateLimited):
        extensions["retryAfterSeconds"] = original.retry_after_seconds
    elif isinstance(original, UpdatesMissed):
        extensions["reason"] = original.reason
    elif isinstance(original, EventsInterrupted):
        extensions["reason"] = original.reason
        extensions["cursor"] = original.cursor
    elif code == BAD_USER_INPUT:
        field = _invalid_variable_field(error)
        if field is None and isinstance(error.extensions, dict):
            field = error.extensions.get("field")  # set by graphql/inputs.py
        if field is not None:
            extensions["field"] = field
    formatted: dict[str, Any] = {
        "message": _message(error, code, request_id),
        "extensions": extensions,
    }
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path:
        formatted["path"] = error.path
    return formatted


def contract_error(error: GraphQLError, request_id: str) -> GraphQLError:
    """``error`` as a GraphQLError whose ``formatted`` is format_error's: for the WebSocket
    handlers, which send ``error.formatted`` themselves."""
    formatted = format_error(error, request_id)
    original = _original(error)
    return GraphQLError(
        formatted["message"],
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=original if isinstance(original, Exception) else None,
        extensions=formatted["extensions"],
    )


def log_errors(errors: list[GraphQLError], request_id: str) -> None:
    """One INFO line for the client's mistakes; ERROR with the traceback for each of ours.

    The subscriptions' gap signal is neither: every subscriber gets one after a database
    restart, and the listener logs the restart once.
    """
    expected = [
        error
        for error in errors
        if is_expected(error) and not isinstance(_original(error), UpdatesMissed)
    ]
    if expected:
        first = expected[0]
        log.info(
            "request %s: %s: %s%s",
            request_id,
            code_of(first),
            shorten(first.message, 200),
            f" (and {len(expected) - 1} more errors)" if len(expected) > 1 else "",
        )
    for error in errors:
        if not is_expected(error):
            original = _original(error)
            log.error(
                "request %s: unexpected error in %s",
                request_id,
                ".".join(str(p) for p in error.path or []) or "the operation",
                exc_info=(type(original), original, original.__traceback__) if original else None,
            )


# --- refusals and faults around the operation --------------------------------------------------


def refusal_code(status_code: int) -> str:
    """The contract's code for a refusal answered with ``status_code``."""
    return _REFUSAL_CODES.get(status_code, BAD_USER_INPUT)


def refusal_response(refusal: HTTPException) -> Response:
    """A request refused before execution: still a GraphQL-shaped body with the contract's
    code, so clients need one error path."""
    headers = {}
    if refusal.status_code == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if refusal.status_code == 405:
        headers["Allow"] = "POST"  # only a GET is refused 405 (a mutation by GET)
    code = refusal.code if isinstance(refusal, CodedRefusal) else refusal_code(refusal.status_code)
    telemetry.note(codes=[code])
    return JSONResponse(
        {
            "data": None,
            "errors": [
                {
                    "message": refusal.reason,
                    "extensions": {"code": code},
                }
            ],
        },
        status_code=refusal.status_code,
        headers=headers,
    )


EXPIRED_HINT = (
    "get a new token from the identity provider that issued it"
    " (locally: python -m app token --sub UUID)"
)


def invalid_token_message(reason: str) -> str:
    """The message for a refused token, over HTTP (401) and WebSocket alike; an expired one
    says how to get another."""
    if reason == "expired":
        return f"invalid token: expired: {EXPIRED_HINT}"
    return f"invalid token: {reason}"


def token_refused(reason: str) -> dict[str, Any]:
    """The legacy WebSocket protocol's connection_error payload for a refused token."""
    return {"message": invalid_token_message(reason), "extensions": {"code": UNAUTHENTICATED}}


def database_unavailable(error: DatabaseUnavailable, request_id: str) -> GraphQLError:
    """The database was unavailable around the operation (opening or committing its
    transaction): retryable, so a warning rather than an error."""
    log.warning("request %s: database unavailable: %s", request_id, error)
    return GraphQLError("database unavailable", original_error=error)


class _Fault(GraphQLError):
    """Ours, outside any resolver: the whole request failed (HTTP 500)."""


def internal_fault(fault: Exception) -> GraphQLError:
    """Ours, outside any resolver: masked by format_error and logged whole by log_errors."""
    return _Fault("internal error", original_error=fault)


def failed_field(failure: Exception, node: Node, key: str, request_id: str) -> GraphQLError:
    """``failure`` of a root field answered without the resolvers (graphql/compiled/), shaped
    and logged as the resolvers' failure there would be; an unavailable database is retryable,
    so a warning rather than an error."""
    error = GraphQLError(str(failure), nodes=[node], path=[key], original_error=failure)
    if isinstance(_original(error), DatabaseUnavailable):
        log.warning("request %s: database unavailable: %s", request_id, failure)
    else:
        log_errors([error], request_id)
    return error


# --- HTTP answers: the body and the status --------------------------------------------------------


def http_status(errors: Sequence[GraphQLError]) -> int:
    """The HTTP status a result with ``errors`` calls for: 503 when the database was
    unavailable (retry), 500 for our own fault outside any resolver, 429 when the trader's
    order rate is at its limit (retry after ``http_headers``' Retry-After), 200 otherwise."""
    if any(code_of(error) == UNAVAILABLE for error in errors):
        return 503
    if any(isinstance(error, _Fault) for error in errors):
        return 500
    if _retry_after(errors) is not None:
        return 429
    return 200


def http_headers(errors: Sequence[GraphQLError]) -> dict[str, str]:
    """The headers a result with ``errors`` calls for: Retry-After (RFC 9110, seconds) with a
    429, the same number as the error's extensions.retryAfterSeconds."""
    retry_after = _retry_after(errors)
    if retry_after is None or http_status(errors) != 429:
        return {}
    return {"Retry-After": str(retry_after)}


def _retry_after(errors: Sequence[GraphQLError]) -> int | None:
    waits = [
        original.retry_after_seconds
        for original in map(_original, errors)
        if isinstance(original, RateLimited)
    ]
    return max(waits) if waits else None


def http_body(
    data: object,
    errors: Sequence[GraphQLError] | None,
    request_id: str,
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The response body of an operation's result, its errors shaped by format_error (and
    their codes noted for the request's log line and metrics)."""
    body: dict[str, Any] = {"data": data}
    if errors:
        telemetry.note(codes=[code_of(error) for error in errors])
        body["errors"] = [format_error(error, request_id) for error in errors]
    if extensions:
        body["extensions"] = extensions
    return body


def http_response(
    data: object,
    errors: Sequence[GraphQLError],
    request_id: str,
    *,
    extensions: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A whole answer with errors, for a path that builds its own response (the compiled one)."""
    return JSONResponse(
        http_body(data, errors, request_id, extensions),
        http_status(errors),
        headers={"x-request-id": request_id, **http_headers(errors), **(headers or {})},
    )


def refused_before_execution(error: Exception, request_id: str) -> GraphQLError:
    """A WebSocket operation refused before it ran (a syntax error, too many tokens; any other
    exception there too, masked as over HTTP), logged and shaped for the handlers."""
    refused = (
        error if isinstance(error, GraphQLError) else GraphQLError(str(error), original_error=error)
    )
    log_errors([refused], request_id)
    return contract_error(refused, request_id)
