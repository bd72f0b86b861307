"""One record per HTTP request: its log line, its metrics and (optionally) its trace span.

``RequestTelemetry`` wraps the application. For each HTTP request it opens a
``RequestRecord`` (a context variable, so the GraphQL endpoint and the schema extension
below fill it in without any plumbing through their signatures), times the request, and
when the response is sent writes:

- one log line on the ``app.requests`` logger: request id, operation, role, status,
  outcome, duration (and the client's operationName when it is a valid GraphQL name; for a
  trusted document, its stored id and operation name);
  JSON with ``LOG_FORMAT=json`` (app/logs.py). Never a header, a token, a claim other than
  the role, a variable or the document;
- the request counter and latency histogram (app/metrics.py) for ``/graphql``, and the
  latency per trusted document (graphql/trusted.py);
- a span, when OpenTelemetry is configured (app/tracing.py).

The *operation* is the operation type and its root fields as the schema names them
(``query orders``, ``mutation submitOrder``): bounded by the schema, so usable as a metric
label, unlike the client's free-text operationName.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

from graphql import DocumentNode, FieldNode, OperationDefinitionNode, get_operation_ast
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from app import metrics, tracing

log = logging.getLogger("app.requests")

_RECORD: ContextVar[RequestRecord | None] = ContextVar("request_record", default=None)

SERVER_ERROR: Final = "server_error"
OK: Final = "ok"
_CLIENT_CODES: Final = frozenset(
    {
        "BAD_USER_INPUT",
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "NOT_FOUND",
        "CONFLICT",
        "PERSISTED_DOCUMENT_NOT_FOUND",
        "PERSISTED_DOCUMENT_REQUIRED",
    }
)
_GRAPHQL_NAME: Final = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")


@dataclass
class RequestRecord:
    request_id: str
    path: str
    operation: str = "-"
    operation_name: str | None = None
    role: str = "-"
    codes: list[str] = field(default_factory=list)
    document: tuple[str, str] | None = None
    """The trusted document that answered (its stored id and operation name), if any."""

    def outcome(self, status: int) -> str:
        """ok, the first client error code, or server_error (a fault of ours or the database)."""
        if status >= 500 or any(code not in _CLIENT_CODES for code in self.codes):
            return SERVER_ERROR
        if self.codes:
            return self.codes[0]
        return OK if status < 400 else "BAD_USER_INPUT"


def note(
    *,
    request_id: str | None = None,
    role: str | None = None,
    operation: OperationDefinitionNode | None = None,
    label: str | None = None,
    operation_name: str | None = None,
    codes: list[str] | None = None,
    document: tuple[str, str] | None = None,
) -> None:
    """Add what the caller knows to the current request's record (if any). ``label`` is
    ``operation_label(operation)`` computed once, by a caller that reuses the operation
    (a compiled plan)."""
    record = _RECORD.get()
    if record is None:
        return
    if request_id is not None:
        record.request_id = request_id
    if role is not None:
        record.role = role
    if operation is not None:
        record.operation = operation_label(operation)
    if label is not None:
        record.operation = label
    if operation_name is not None and _GRAPHQL_NAME.fullmatch(operation_name):
        record.operation_name = operation_name
    if codes is not None:
        record.codes = codes
    if document is not None:
        record.document = document


def operation_label(operation: OperationDefinitionNode) -> str:
    roots = sorted(
        {
            selection.name.value
            for selection in operation.selection_set.selections
            if isinstance(selection, FieldNode)
        }
    )
    return " ".join([operation.operation.value, ",".join(roots)]).strip()


class OperationRecorder(SchemaExtension):
    """Names the operation in the request's record once the document is parsed and valid."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document: DocumentNode | None = context.graphql_document
        if document is not None and not context.pre_execution_errors:
            operation = get_operation_ast(document, context.operation_name)
            if operation is not None:
                note(operation=operation, operation_name=context.operation_name)
        yield


class RequestTelemetry:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                given = value  # the last one, as a dict of the headers had it
        # Without an id given, one is made when the response starts (_request_id), unless the
        # endpoint named one meanwhile (it always does): one uuid per request, not two.
        record = RequestRecord(request_id=given.decode("latin-1"), path=scope.get("path", ""))
        token = _RECORD.set(record)
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers") or [])
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    # Every answer names the id its log line carries (refusals too).
                    headers.append((b"x-request-id", _request_id(record).encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            with tracing.request_span(scope) as span:
                await self.app(scope, receive, send_status)
                tracing.finish_request_span(span, record.operation, status)
        finally:
            _RECORD.reset(token)
            self._record(record, status, time.perf_counter() - started)

    def _record(self, record: RequestRecord, status: int, seconds: float) -> None:
        outcome = record.outcome(status)
        graphql = record.path == "/graphql"
        if graphql:
            requests, latency = _request_metrics(record.operation, outcome)
            requests.inc()
            latency.observe(seconds)
            if record.document is not None:
                # Labels from the stored list, never the client's text: bounded by it.
                metrics.TRUSTED_DOCUMENT_SECONDS.labels(*record.document).observe(seconds)
        # Probes and scrapes come every few seconds: their lines would drown the requests'.
        level = logging.INFO if graphql else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "request_id": _request_id(record),
            "path": record.path,
            "operation": record.operation,
            "role": record.role,
            "status": status,
            "outcome": outcome,
            "duration_ms": round(seconds * 1000, 1),
        }
        if record.operation_name is not None:
            fields["operation_name"] = record.operation_name
        if record.document is not None:
            fields["document_id"] = record.document[0]
            fields.setdefault("operation_name", record.document[1])
        # key=value, so that the text line greps and parses like the JSON one.
        message = "request " + " ".join(
            f"{key}={json.dumps(value) if ' ' in str(value) else value}"
            for key, value in fields.items()
        )
        # As log.log would, without looking up the calling frame for every request (no
        # format of ours prints it; the line is the same, its pathname this module's).
        log.handle(
            log.makeRecord(
                log.name, level, __file__, 0, message, (), None, extra={"fields": fields}
            )
        )


def _request_id(record: RequestRecord) -> str:
    """The request's id: the endpoint's, the caller's header's, or a new one."""
    if not record.request_id:
        record.request_id = uuid.uuid4().hex
    return record.request_id


@functools.lru_cache(maxsize=1024)  # operations are the schema's root fields: a bounded set
def _request_metrics(operation: str, outcome: str) -> tuple[Any, Any]:
    """The request counter's and the latency histogram's series of one (operation, outcome):
    looked up once, not on every request (prometheus_client's ``labels`` is no dict lookup)."""
    return (
        metrics.REQUESTS.labels(operation, outcome),
        metrics.REQUEST_SECONDS.labels(operation),
    )
