"""orderEvents without graphql-core per event: the selection compiled into the batch's SQL.

graphql-core executes a subscription's selection once for every event, field by field,
through Strawberry's resolvers: about 0.4 ms of CPU per event, which made a replay of 10,000
events take seconds (bench/order_events.py). The ``log`` and ``order`` of an event are
exactly what the compiled queries already build in SQL (compiler.py's ``_row_object``, from
orders/fields.py and orders/pages.py), so the stream's read asks PostgreSQL for each row's
JSON of the selection, in the same statement and snapshot that reads the rows, and each
event is sent as data built from that JSON and its cursor.

Nothing else is skipped: the document went through Strawberry (parsing, validation, the
limits, the subscription resolver's checks) before the stream reads a row; only the
per-event execution is replaced (``EventsExecutionContext``, ``Answered``). Selections the compiler does
not translate (fragments, directives, nested arguments) keep graphql-core, as for queries;
a compiler bug fails the subscription under ``COMPILED_QUERIES_STRICT`` (the tests) and is
otherwise logged, counted and answered by the resolvers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from graphql import ExecutionResult, FieldNode

from app import metrics
from app.graphql.compiled.compiler import NotCompilable, _fields, _key, _row_object
from app.graphql.inputs import InputCheckingExecutionContext
from app.orders import fields
from app.settings import Settings

log = logging.getLogger(__name__)

TYPENAME = "OrderEvent"

LOG_ALIAS = "execution_logs"
"""How events/stream.py's read names the audit row the JSON is built from."""


@dataclass(frozen=True, slots=True)
class EventShape:
    """One subscription's selection of ``OrderEvent``, as SQL and a recipe for each event."""

    root: str
    """The response key of the root field (its alias, or orderEvents)."""
    parts: tuple[tuple[str, str], ...]
    """(response key, what: cursor | log | order | __typename), in selection order."""
    log_json: str | None
    """The selected log as SQL JSON over the audit row ``execution_logs``."""
    order_json: str | None
    """The selected order as SQL JSON, read by the audit row's order_id."""

    def data(self, cursor: str, log_text: str | None, order_text: str | None) -> Built:
        """The event's ``data`` as graphql-core would have answered it, as JSON text: the
        texts PostgreSQL built go into it as they are, as compiled queries answer over HTTP."""
        values = {"cursor": json.dumps(cursor), "__typename": _TYPENAME_JSON}
        event = ",".join(
            f"{json.dumps(key)}:"
            + (
                _present(log_text)
                if what == "log"
                else _present(order_text)
                if what == "order"
                else values[what]
            )
            for key, what in self.parts
        )
        return Built(f"{{{json.dumps(self.root)}:{{{event}}}}}")


_TYPENAME_JSON = json.dumps(TYPENAME)


@dataclass(frozen=True, slots=True)
class Built:
    """An event's response ``data``, already JSON text. It crosses Strawberry inside the
    protocol's message and is spliced into it when the message is encoded (``encode``):
    decoding PostgreSQL's texts only for Strawberry to encode them again cost about a fifth
    of a replayed event's CPU on the server (bench/figures/order-events.md)."""

    text: str


_DATA_NULL = '"payload":{"data":null'


def encode(message: object) -> str:
    """A WebSocket message (or an HTTP response's body) as JSON, compact, as Strawberry
    encodes it, with a ``Built`` payload's text spliced in whole."""
    if isinstance(message, dict):
        payload = message.get("payload")
        if isinstance(payload, dict) and isinstance(data := payload.get("data"), Built):
            plain = {**message, "payload": {**payload, "data": None}}
            text = json.dumps(plain, separators=(",", ":"))
            # Both protocols' messages hold only strings before their payload (id, type), and
            # data is the payload's first key, so the first such text is this data: inside a
            # string its quotes would be escaped.
            return text.replace(_DATA_NULL, '"payload":{"data":' + data.text, 1)
    return json.dumps(message, separators=(",", ":"))


def _present(text: str | None) -> str:
    # log and order are non-null, and the same policies guard an order and its audit rows:
    # a visible row without its order is a broken invariant, not an event to skip.
    if text is None:
        raise RuntimeError("an audit row was read without its order")
    return text


def compile_events(node: FieldNode) -> EventShape:
    """The shape of ``node``, an ``orderEvents`` field; NotCompilable for what only
    graphql-core answers."""
    parts: list[tuple[str, str]] = []
    log_json = order_json = None
    for field in _fields(node):
        name = field.name.value
        if field.arguments:
            raise NotCompilable("arguments on a nested field")
        if name == "cursor" or name == "__typename":
            parts.append((_key(field), name))
        elif name == "log" and log_json is None:
            log_json = _row_object(field, fields.LOG, LOG_ALIAS)
            parts.append((_key(field), "log"))
        elif name == "order" and order_json is None:
            obj = _row_object(field, fields.ORDER, "o")
            order_json = (
                f"(SELECT {obj} FROM {fields.ORDER.table} o WHERE o.id = {LOG_ALIAS}.order_id)"
            )
            parts.append((_key(field), "order"))
        else:
            raise NotCompilable(f"OrderEvent.{name}")
    return EventShape(_key(node), tuple(parts), log_json, order_json)


def shape_of(field_nodes: list[FieldNode], settings: Settings) -> EventShape | None:
    """The compiled shape of a subscription's root field, or None for graphql-core."""
    if not settings.compiled_queries or len(field_nodes) != 1:
        return None
    try:
        shape = compile_events(field_nodes[0])
        # One count per subscription, not per event: the metric counts answered documents.
        metrics.COMPILED_QUERIES.labels("answered").inc()
        return shape
    except NotCompilable:
        return None
    except Exception:
        if settings.compiled_queries_strict:
            raise
        metrics.COMPILED_QUERIES.labels("fallback").inc()
        log.exception("compiling an orderEvents selection failed; it will take the resolvers")
        return None


@dataclass(frozen=True, slots=True)
class Answered:
    """A batch of subscription events whose response data is already built.

    It crosses graphql-core and Strawberry as one result (their work per result, about as
    much again as building the event, is paid once per batch) whose ``data`` is this object;
    graphql/websocket.py sends each event as its own result, in order, before the stream is
    asked for anything after the batch."""

    events: list[Built]


class EventsExecutionContext(InputCheckingExecutionContext):
    """The schema's execution context: an ``Answered`` batch is its own result."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        root = self.root_value
        if isinstance(root, Answered):
            return ExecutionResult(root, None)  # type: ignore[arg-type]  # unpacked by websocket.py
        return super().execute_operation(serially)
