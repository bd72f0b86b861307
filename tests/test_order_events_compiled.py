"""orderEvents with its selection built by PostgreSQL (graphql/compiled/events.py) sends
exactly what graphql-core's execution of the same selection sends, on the same events.

The documents come from the field registry (every field of an audit row, of an order and of
its nested fills and audit rows), as in tests/test_compiled_queries.py, so a field added to
the registry is compared here without this file changing. Both servers read one database;
each subscription starts from one eventsCursor taken before the orders were written.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.graphql.compiled import events as compiled_events
from app.orders import fields
from tests.api import Client
from tests.conftest import Db
from tests.jsondiff import diff
from tests.test_compiled_queries import arrange, selection
from tests.test_subscriptions import LEGACY_WS, TRANSPORT_WS, Harness, Stream, connection, harness

EVERY_FIELD = (
    "subscription($after: String) { orderEvents(after: $after) { __typename cursor"
    f" log {{ {selection(fields.LOG)} }} order {{ {selection(fields.ORDER)} }} }} }}"
)
ALIASED = (
    "subscription E($after: String) { e: orderEvents(after: $after) {"
    " o: order { s: status fills { q: quantityFilled price: priceAtFill } __typename }"
    " c: cursor l: log { a: action h: hash p: prevHash } t: __typename } }"
)


def answered() -> float:
    sample = REGISTRY.get_sample_value("order_api_compiled_queries_total", {"outcome": "answered"})
    return sample or 0.0


async def received(h: Harness, token: str, document: str, after: str, protocol: str) -> list[str]:
    """Every event payload up to a pause, each as one canonical JSON text."""
    async with connection(h, token, protocol=protocol) as ws:
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe" if protocol == TRANSPORT_WS else "start",
                "payload": {"query": document, "variables": {"after": after}},
            }
        )
        stream = Stream(ws, protocol)
        payloads = []
        while True:
            try:
                message = await ws.receive_json(timeout=1.0)
            except TimeoutError:
                return payloads
            if message["type"] in ("ping", "pong", "ka"):
                continue
            if message["type"] == "complete":
                return payloads
            assert message["type"] == ("next" if stream.protocol == TRANSPORT_WS else "data")
            payloads.append(json.dumps(message["payload"], separators=(",", ":")))


@pytest.mark.parametrize("document", [EVERY_FIELD, ALIASED], ids=["every field", "aliased"])
async def test_compiled_events_equal_graphql_core_execution_for_every_role(
    database: Db, document: str
) -> None:
    trader, other = uuid.uuid4(), uuid.uuid4()
    roles = ("trader", "service_role", "compliance_auditor")
    expected: dict[tuple[str, str], list[str]] = {}
    # One server at a time (the test transport's cancel scopes do not nest), on one database.
    async with harness(database, compiled_queries=False) as slow:
        tokens = {role: slow.token(None, role) for role in roles[1:]} | {
            "trader": slow.token(trader)
        }
        cursor = (await slow.gql("{ eventsCursor }", {}, tokens["service_role"]))["eventsCursor"]
        await arrange(Client(slow.http, slow.settings, slow.app), trader, other)
        for role in roles:
            for protocol in (TRANSPORT_WS, LEGACY_WS):
                events = await received(slow, tokens[role], document, cursor, protocol)
                assert len(events) >= 10, (role, events)  # arrange writes more than that
                expected[role, protocol] = events
    async with harness(database) as fast:
        for (role, protocol), events in expected.items():
            before = answered()
            got = await received(fast, tokens[role], document, cursor, protocol)
            assert answered() == before + 1, f"the compiled path did not answer ({role})"
            assert got == events, diff(
                [json.loads(g) for g in got], [json.loads(e) for e in events]
            )
            assert all('"errors"' not in event for event in got)


async def test_a_selection_the_compiler_does_not_translate_is_executed_by_graphql_core(
    database: Db,
) -> None:
    fragment = (
        "subscription($after: String) { orderEvents(after: $after) { ...E } }"
        " fragment E on OrderEvent { cursor log { action } }"
    )
    async with harness(database) as h:
        trader = uuid.uuid4()
        token = h.token(trader)
        cursor = (await h.gql("{ eventsCursor }", {}, token))["eventsCursor"]
        await h.submit(trader)
        before = answered()
        [event] = await received(h, token, fragment, cursor, TRANSPORT_WS)
        assert answered() == before
        assert json.loads(event)["data"]["orderEvents"]["log"] == {"action": "SUBMITTED"}


async def test_a_compiler_bug_fails_the_subscription_in_strict_mode(
    database: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(node: Any) -> compiled_events.EventShape:
        raise RuntimeError("a compiler bug")

    monkeypatch.setattr(compiled_events, "compile_events", broken)
    async with harness(database) as h:
        trader = uuid.uuid4()
        token = h.token(trader)
        cursor = (await h.gql("{ eventsCursor }", {}, token))["eventsCursor"]
        await h.submit(trader)
        [event] = await received(h, token, EVERY_FIELD, cursor, TRANSPORT_WS)
        assert json.loads(event)["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"


@pytest.mark.parametrize(
    "operation_id", ["1", '"payload":{"data":null', '{"payload":{"data":null}}', "\u2028"]
)
@pytest.mark.parametrize("kind", ["next", "data"])
def test_a_built_event_is_sent_as_the_message_strawberry_would_encode_whatever_the_id(
    operation_id: str, kind: str
) -> None:
    event = {"orderEvents": {"cursor": "c", "log": {"id": "x", "prevHash": None}}}
    built = compiled_events.Built(json.dumps(event))
    message: dict[str, Any] = {"id": operation_id, "type": kind, "payload": {"data": built}}
    message["payload"]["extensions"] = {"payload": {"data": None}}
    sent = compiled_events.encode(message)
    plain = {**message, "payload": {**message["payload"], "data": event}}
    assert json.loads(sent) == plain
    assert compiled_events.encode(plain) == json.dumps(plain, separators=(",", ":"))
