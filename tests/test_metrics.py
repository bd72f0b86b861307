"""GET /metrics and the per-request log line, through the API as an operator and a client see them."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.logs import JsonFormatter
from tests.api import api_client, api_settings
from tests.conftest import Db

TRADER = uuid.UUID("3e7a0000-0000-4000-8000-000000000001")
SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id status } }"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_requests_by_operation_and_outcome_and_never_show_trader_data(
    database: Db,
) -> None:
    async with api_client(api_settings(database)) as client:
        token = client.token(TRADER)
        before = (await client.http.get("/metrics")).text
        order = {"symbol": "AAPL", "side": "BUY", "quantity": 5, "orderType": "MARKET"}
        submitted = await client.gql(SUBMIT, {"input": order}, token=token)
        order_id = submitted["data"]["submitOrder"]["id"]
        await client.gql("{ orders { edges { node { id } } } }", token=token)
        await client.gql("{ orders { edges { node { id } } } }", token=token)  # compiled
        await client.gql("{ order(id: 1) { id } }", token=token)  # invalid
        await client.post("{ viewer { role } }", token="not-a-token")  # 401
        response = await client.http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    requests = "order_api_requests_total"

    def delta(**labels: str) -> float:
        return value(after, requests, **labels) - value(before, requests, **labels)

    assert delta(operation="mutation submitOrder", outcome="ok") == 1
    assert delta(operation="query orders", outcome="ok") == 2
    assert delta(operation="-", outcome="BAD_USER_INPUT") == 1
    assert delta(operation="-", outcome="UNAUTHENTICATED") == 1
    count = "order_api_request_duration_seconds_count"
    assert (
        value(after, count, operation="query orders")
        - value(before, count, operation="query orders")
        == 2
    )
    # The app's own series.
    assert value(after, "order_api_db_pool_connections_in_use") == 0
    assert value(after, "order_api_db_pool_waiting") == 0
    assert value(after, "order_api_change_feed_connected") == 1
    assert value(after, "order_api_subscriptions_active") == 0
    assert value(after, "order_api_engine_queue_orders", stage="new") == 1
    # Aggregates only: no trader, order or token in it.
    for secret in (str(TRADER), order_id, token, "AAPL"):
        assert secret not in after


async def test_metrics_show_callers_waiting_for_an_exhausted_pool(database: Db) -> None:
    settings = api_settings(database, db_pool_size=1, db_pool_timeout=10.0)
    async with api_client(settings) as client:
        engine = client.app.state.database.engine
        async with engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")
            waiting = asyncio.create_task(client.gql("{ viewer { role } }"))
            await asyncio.sleep(0.3)
            text = (await client.http.get("/metrics")).text
            assert value(text, "order_api_db_pool_connections_in_use") == 1
            assert value(text, "order_api_db_pool_waiting") == 1
            # The scrape did not queue behind the request for the one connection.
            assert ("order_api_engine_queue_orders", (("stage", "new"),)) not in samples(text)
        assert "errors" not in await waiting


async def test_metrics_can_be_turned_off(database: Db) -> None:
    async with api_client(api_settings(database, metrics=False)) as client:
        assert (await client.http.get("/metrics")).status_code == 404


async def test_one_log_line_per_request_with_its_id_operation_role_and_no_token(
    database: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.requests")
    async with api_client(api_settings(database)) as client:
        token = client.token(TRADER, email="trader@example.com")
        response = await client.http.post(
            "/graphql",
            json={"query": "query Mine { orders { edges { node { id } } } }"},
            headers={"Authorization": f"Bearer {token}", "x-request-id": "req-42"},
        )
        assert response.status_code == 200
    lines = [r for r in caplog.records if r.name == "app.requests" and "req-42" in r.getMessage()]
    assert len(lines) == 1
    record = lines[0]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == "req-42"
    assert fields["operation"] == "query orders"
    assert fields["operation_name"] == "Mine"
    assert fields["role"] == "authenticated"
    assert fields["status"] == 200
    assert fields["outcome"] == "ok"
    assert fields["duration_ms"] >= 0
    formatted = JsonFormatter().format(record)
    parsed = json.loads(formatted)
    assert parsed["request_id"] == "req-42"
    assert parsed["level"] == "INFO"
    for secret in (token, token.split(".")[1], "trader@example.com", str(TRADER), "Bearer"):
        assert secret not in formatted
        assert secret not in record.getMessage()


async def test_a_client_operation_name_that_is_not_a_graphql_name_is_not_logged(
    database: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.requests")
    async with api_client(api_settings(database)) as client:
        await client.http.post(
            "/graphql",
            json={"query": "{ viewer { role } }", "operationName": "x\nFAKE LOG LINE"},
        )
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "FAKE LOG LINE" not in text


async def test_a_refused_request_is_logged_with_the_id_its_answer_carries(
    database: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.requests")
    async with api_client(api_settings(database)) as client:
        response = await client.post("{ viewer { role } }", token="not-a-token")
    assert response.status_code == 401
    request_id = response.headers["x-request-id"]
    [line] = [r for r in caplog.records if r.name == "app.requests"]
    assert line.fields["request_id"] == request_id  # type: ignore[attr-defined]
    assert line.fields["outcome"] == "UNAUTHENTICATED"  # type: ignore[attr-defined]
    assert "not-a-token" not in line.getMessage()
