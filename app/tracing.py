"""Optional OpenTelemetry tracing of requests and database statements.

Off unless the OpenTelemetry packages are installed (``pip install -e ".[otel]"``) and
``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``, or any registered under
the ``opentelemetry_traces_exporter`` entry point); every other ``OTEL_*`` variable
(``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_RESOURCE_ATTRIBUTES``, ...)
is read by OpenTelemetry itself. When the process already runs under a configured tracer
provider (``opentelemetry-instrument``), that one is used. Asking for an exporter that is
not installed is a configuration error, not a silent no-op.

Spans: one ``SERVER`` span per HTTP request (``POST /graphql``, named after the operation
once known, with its status), and one ``CLIENT`` span per SQL statement sent through
SQLAlchemy (its text, never its parameters, which hold claims and order values).

The packages are imported here only, and only when tracing is on: they are no dependency.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Scope

from app.settings import Settings, SettingsError

_tracer: Any = None


def configure(settings: Settings) -> bool:
    """Turn tracing on when ``settings`` ask for it; True when it is on."""
    global _tracer
    exporter_name = settings.otel_traces_exporter
    if exporter_name is None or exporter_name == "none":
        _tracer = None
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise SettingsError(
            "OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed"
            ' (pip install -e ".[otel]")'
        ) from None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # nobody configured one: do it from OTEL_*
        provider = TracerProvider(resource=Resource.create())
        for name in exporter_name.split(","):
            provider.add_span_processor(BatchSpanProcessor(_exporter(name.strip())))
        trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("order-api")
    return True


def _exporter(name: str) -> Any:
    found = metadata.entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER: no OpenTelemetry span exporter named {name!r} is installed"
        )
    return next(iter(found)).load()()


_NO_SPAN: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
"""What ``request_span`` returns with tracing off: reusable, and no generator per request."""


def request_span(scope: Scope) -> contextlib.AbstractContextManager[Any]:
    """A SERVER span for the request, or None (``finish_request_span`` takes either)."""
    if _tracer is None:
        return _NO_SPAN
    return _request_span(scope)


@contextlib.contextmanager
def _request_span(scope: Scope) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind

    name = f"{scope.get('method', 'GET')} {scope.get('path', '')}"
    with _tracer.start_as_current_span(name, kind=SpanKind.SERVER) as span:
        span.set_attribute("http.request.method", scope.get("method", ""))
        span.set_attribute("url.path", scope.get("path", ""))
        yield span


def finish_request_span(span: Any, operation: str, status: int) -> None:
    if span is None:
        return
    if operation != "-":
        span.update_name(operation)
        span.set_attribute("graphql.operation", operation)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR))


def instrument_engine(engine: AsyncEngine) -> None:
    """A span per statement on ``engine``, when tracing is on."""
    if _tracer is None:
        return
    from opentelemetry.trace import SpanKind

    tracer = _tracer

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer.start_span(f"db {verb}", kind=SpanKind.CLIENT)
        span.set_attribute("db.system", "postgresql")
        span.set_attribute("db.statement", statement)
        context._otel_span = span

    def after(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        span = getattr(context, "_otel_span", None)
        if span is not None:
            span.end()

    def failed(exception_context: Any) -> None:
        span = getattr(exception_context.execution_context, "_otel_span", None)
        if span is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
            span.end()

    sync_engine = engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    event.listen(sync_engine, "handle_error", failed)
