"""Optional OpenTelemetry tracing: runs only where the OpenTelemetry SDK is installed
(``pip install -e ".[otel]"``), and then checks real spans from a real request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip(
    "opentelemetry.sdk.trace", reason="OpenTelemetry SDK not installed (extra otel)"
)

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from app import tracing
from app.settings import Settings, SettingsError
from tests.api import api_client, api_settings
from tests.conftest import Db

EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # A process has one global tracer provider; the app uses it when one is set, as under
    # opentelemetry-instrument.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    try:
        yield EXPORTER
    finally:
        tracing.configure(Settings())  # off again for the tests that follow
        EXPORTER.clear()


async def test_a_request_and_its_statements_are_traced(database: Db, spans) -> None:
    settings = api_settings(database, otel_traces_exporter="console")
    async with api_client(settings) as client:
        token = client.token(uuid.uuid4())
        body = await client.gql("query Mine { viewer { role } }", token=token)
        assert body["data"]["viewer"]["role"] == "authenticated"
    finished = spans.get_finished_spans()
    [request] = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    assert request.name == "query viewer"
    assert request.attributes["http.response.status_code"] == 200
    statements = [s for s in finished if s.kind == trace.SpanKind.CLIENT]
    assert statements, [s.name for s in finished]
    assert all(s.attributes["db.system"] == "postgresql" for s in statements)
    # The request's statements are its children (the startup's own check is not).
    children = [s for s in statements if s.parent and s.parent.span_id == request.context.span_id]
    assert any("order_api_private.become(" in s.attributes["db.statement"] for s in children)
    # Never the token, nor the claims (bound parameters are not recorded).
    for span in finished:
        assert token not in str(span.attributes)


def test_an_exporter_is_found_by_its_standard_name_or_refused() -> None:
    assert type(tracing._exporter("console")).__name__ == "ConsoleSpanExporter"
    with pytest.raises(SettingsError, match="no OpenTelemetry span exporter named 'nope'"):
        tracing._exporter("nope")
