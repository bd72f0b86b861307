"""Hostile or careless input: what no column can store, undecodable or endless bodies, huge
values, and errors over WebSocket. Each is refused with a clear GraphQL-shaped error, never an
internal error, and nothing is written."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from graphql import GraphQLInputObjectType, GraphQLList, GraphQLNonNull, GraphQLString

from tests.api import Client, api_client, api_settings, graphql_endpoint
from tests.conftest import Db
from tests.test_subscriptions import LEGACY_WS, TRANSPORT_WS, connection, harness

ORDER = str(uuid.UUID("00000000-0000-4000-8000-000000000001"))
TRADER, ENGINE = "authenticated", "service_role"
SUBMIT_INPUT = {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}
FILL_INPUT = {"orderId": ORDER, "quantityFilled": 1, "priceAtFill": "1.00", "venue": "PAPER"}


# Every String argument and String input field of the contract: (role, document, variables,
# where the text goes in the variables, the field the error must name).
STRING_INPUTS: list[tuple[str, str, dict[str, Any], tuple[str, ...], str]] = [
    (
        TRADER,
        "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }",
        {"input": SUBMIT_INPUT},
        ("input", "symbol"),
        "symbol",
    ),
    (
        TRADER,
        "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }",
        {"input": SUBMIT_INPUT},
        ("input", "clientOrderId"),
        "clientOrderId",
    ),
    (
        TRADER,
        "mutation($id: UUID!, $input: ReplaceOrderInput!) { replaceOrder(id: $id, input: $input)"
        " { id } }",
        {"id": ORDER, "input": {}},
        ("input", "clientOrderId"),
        "clientOrderId",
    ),
    (
        TRADER,
        "mutation($id: UUID!, $r: String) { cancelOrder(id: $id, reason: $r) { id } }",
        {"id": ORDER},
        ("r",),
        "reason",
    ),
    (
        ENGINE,
        "mutation($id: UUID!, $r: String!) { rejectOrder(id: $id, reason: $r) { id } }",
        {"id": ORDER},
        ("r",),
        "reason",
    ),
    (
        ENGINE,
        'mutation($id: UUID!, $c: String) { rejectOrder(id: $id, reason: "x", errorCode: $c)'
        " { id } }",
        {"id": ORDER},
        ("c",),
        "errorCode",
    ),
    (
        ENGINE,
        "mutation($input: RecordFillInput!) { recordFill(input: $input) { id } }",
        {"input": FILL_INPUT},
        ("input", "venue"),
        "venue",
    ),
    (
        TRADER,
        "query($f: OrderFilter) { orders(filter: $f) { edges { cursor } } }",
        {"f": {}},
        ("f", "symbol"),
        "symbol",
    ),
    (TRADER, "query($a: String) { orders(after: $a) { edges { cursor } } }", {}, ("a",), "after"),
    (
        TRADER,
        "query($a: String) { executionLogs(after: $a) { edges { cursor } } }",
        {},
        ("a",),
        "after",
    ),
]
CASE_IDS = [f"{case[1].split('(')[1].split()[0].strip('{')}.{case[4]}" for case in STRING_INPUTS]
BAD_TEXT = {"nul": "AB\x00CD", "lone-surrogate": "AB\ud800CD"}


def with_value(variables: dict[str, Any], path: tuple[str, ...], value: str) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(variables))
    target = copy
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    return copy


async def post_raw(client: Client, payload: object, token: str | None = None) -> Any:
    """Posts ``payload`` as JSON the way a client may write it: lone surrogates as \\u escapes."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return await client.http.post("/graphql", content=json.dumps(payload).encode(), headers=headers)


def string_inputs_of_the_schema(client: Client) -> set[str]:
    """Every argument and input field of the served schema whose type is String."""
    schema = graphql_endpoint(client.app).graphql_schema
    found: set[str] = set()

    def is_string(type_: Any) -> bool:
        while isinstance(type_, GraphQLNonNull | GraphQLList):
            type_ = type_.of_type
        return type_ is GraphQLString

    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        assert root is not None
        for field_name, field in root.fields.items():
            for arg_name, arg in field.args.items():
                if is_string(arg.type):
                    found.add(f"{field_name}.{arg_name}")
    for type_ in schema.type_map.values():
        if isinstance(type_, GraphQLInputObjectType):
            for name, input_field in type_.fields.items():
                if is_string(input_field.type):
                    found.add(f"{type_.name}.{name}")
    return found


async def test_the_table_below_covers_every_string_input_of_the_schema(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        assert string_inputs_of_the_schema(client) == {
            "SubmitOrderInput.symbol",
            "SubmitOrderInput.clientOrderId",
            "ReplaceOrderInput.clientOrderId",
            "cancelOrder.reason",
            "rejectOrder.reason",
            "rejectOrder.errorCode",
            "RecordFillInput.venue",
            "OrderFilter.symbol",
            "orders.after",
            "executionLogs.after",
            "positionUpdates.symbol",
            "orderEvents.after",
        }  # a new one: add it to STRING_INPUTS (SUBSCRIPTION_STRING_INPUTS for a subscription)


@pytest.mark.parametrize("kind", list(BAD_TEXT))
async def test_text_no_column_can_store_is_bad_user_input_naming_the_field(
    database: Db, owner_conn: asyncpg.Connection, kind: str
) -> None:
    async with api_client(api_settings(database)) as client:
        for (role, document, variables, path, field), case in zip(
            STRING_INPUTS, CASE_IDS, strict=True
        ):
            token = client.token(uuid.uuid4() if role == TRADER else None, role)
            payload = {"query": document, "variables": with_value(variables, path, BAD_TEXT[kind])}
            response = await post_raw(client, payload, token)
            assert response.status_code == 200, (case, response.text)
            body = response.json()
            assert body["data"] is None, case
            [error] = body["errors"]
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, (case, error)
            assert field in error["message"], case
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 0


# The subscriptions' string arguments, sent over WebSocket: (document, variable, field).
SUBSCRIPTION_STRING_INPUTS = [
    ("subscription($s: String) { positionUpdates(symbol: $s) { symbol } }", "s", "symbol"),
    ("subscription($a: String) { orderEvents(after: $a) { cursor } }", "a", "after"),
]


@pytest.mark.parametrize("kind", list(BAD_TEXT))
async def test_text_in_a_subscription_argument_is_bad_user_input_naming_the_field(
    database: Db, kind: str
) -> None:
    async with harness(database) as h:
        for document, variable, field in SUBSCRIPTION_STRING_INPUTS:
            async with connection(h, h.token(uuid.uuid4())) as ws:
                payload = {"query": document, "variables": {variable: BAD_TEXT[kind]}}
                await ws.send_json({"id": "1", "type": "subscribe", "payload": payload})
                message = json.loads(await asyncio.wait_for(ws.receive_text(), 10))
                errors = (
                    message["payload"]
                    if message["type"] == "error"
                    else message["payload"]["errors"]
                )
                assert errors[0]["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, (
                    document,
                    message,
                )


async def test_a_nul_in_a_string_literal_is_bad_user_input_naming_the_field(
    database: Db,
) -> None:
    literals = {
        "reason": f'mutation {{ cancelOrder(id: "{ORDER}", reason: "a\\u0000b") {{ id }} }}',
        "venue": f'mutation {{ recordFill(input: {{orderId: "{ORDER}", quantityFilled: 1,'
        ' priceAtFill: "1", venue: "P\\u0000"}) { id } }',
        "symbol": '{ orders(filter: {symbol: "A\\u0000"}) { edges { cursor } } }',
    }
    async with api_client(api_settings(database)) as client:
        token = client.token(None, ENGINE)
        for field, document in literals.items():
            body = await client.gql(document, token=token)
            [error] = body["errors"]
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, error


async def test_a_variable_no_operation_declares_is_ignored_whatever_it_holds(
    database: Db,
) -> None:
    async with api_client(api_settings(database)) as client:
        payload = {"query": "{ viewer { role } }", "variables": {"unused": "\x00\ud800"}}
        response = await post_raw(client, payload)
        assert response.json() == {"data": {"viewer": {"role": "anon"}}}


async def test_undecodable_bodies_and_a_lone_surrogate_in_the_document_are_http_400(
    database: Db,
) -> None:
    bodies = {
        "invalid UTF-8": b'{"query": "{ viewer { role } }\xff"}',
        "surrogate in the document": b'{"query": "{ viewer { role } } # \\ud800"}',
        "NaN": b'{"query": "{ viewer { role } }", "variables": {"a": NaN}}',
        "digits": b'{"query": "{ viewer { role } }", "variables": {"a": ' + b"9" * 5000 + b"}}",
        "1,000 levels": b"[" * 1000 + b"]" * 1000,
        "1,000 levels in the variables": b'{"query": "{ viewer { role } }", "variables": '
        + b'{"a":' * 1000
        + b"1"
        + b"}" * 1001,
    }
    async with api_client(api_settings(database)) as client:
        for name, raw in bodies.items():
            response = await client.http.post(
                "/graphql", content=raw, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, (name, response.text)
            [error] = response.json()["errors"]
            assert error["extensions"]["code"] == "BAD_USER_INPUT", name
            assert "Traceback" not in response.text


async def test_a_chunked_body_is_bounded_and_no_more_of_it_is_read(database: Db) -> None:
    settings = api_settings(database, max_document_bytes=1000)  # bodies up to 2,000 bytes
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(10_000):  # 10 MB if it were all read
            sent += 1000
            yield b" " * 1000

    async with api_client(settings) as client:
        response = await client.http.post(
            "/graphql", content=endless(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert sent <= 3000
        # a body within the limit, chunked, is served
        document = json.dumps({"query": "{ viewer { role } }"}).encode()

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(document), 5):
                yield document[start : start + 5]

        response = await client.http.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.json() == {"data": {"viewer": {"role": "anon"}}}


async def test_a_body_that_trickles_in_is_refused_with_408(database: Db) -> None:
    settings = api_settings(database, request_read_timeout_seconds=0.3)

    async def slow() -> AsyncIterator[bytes]:
        yield b'{"query": '
        await asyncio.sleep(2)
        yield b'"{ viewer { role } }"}'

    async with api_client(settings) as client:
        response = await client.http.post(
            "/graphql", content=slow(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 408, response.text


@pytest.mark.parametrize(
    ("role", "document", "variables", "path"),
    [
        (
            TRADER,
            "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }",
            {"input": SUBMIT_INPUT},
            ("input", "price"),
        ),
        (
            TRADER,
            "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }",
            {"input": SUBMIT_INPUT},
            ("input", "expiresAt"),
        ),
        (TRADER, "query($id: UUID!) { order(id: $id) { id } }", {}, ("id",)),
        (
            TRADER,
            "query($f: OrderFilter) { orders(filter: $f) { edges { cursor } } }",
            {"f": {}},
            ("f", "side"),
        ),
    ],
    ids=["Decimal", "DateTime", "UUID", "enum"],
)
async def test_a_huge_value_is_neither_echoed_nor_logged_whole(
    database: Db,
    caplog: pytest.LogCaptureFixture,
    role: str,
    document: str,
    variables: dict[str, Any],
    path: tuple[str, ...],
) -> None:
    caplog.set_level(logging.DEBUG)
    huge = "9" * 30_000  # within the default body limit (2 x MAX_DOCUMENT_BYTES)
    async with api_client(api_settings(database)) as client:
        payload = {"query": document, "variables": with_value(variables, path, huge)}
        response = await post_raw(client, payload, client.token(uuid.uuid4(), role))
    assert response.status_code == 200
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert len(response.content) < 1000, response.text
    logged = [record.getMessage() for record in caplog.records]
    assert all("9" * 500 not in line for line in logged), max(logged, key=len)[:300]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# --- WebSocket: each protocol's error message, with the codes of HTTP --------------------------

WS_MISTAKES = {
    "syntax error": "subscription { orderUpdates { id ",
    "empty document": "",
    "unknown field": "subscription { nope }",
    "empty selection set": "subscription { orderUpdates { id fills { } } }",
    "malformed UUID": 'subscription { orderUpdates(orderId: "not-a-uuid") { id } }',
    "a query": "{ viewer { role } }",
}


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_subscription_mistake_gets_the_protocols_error_message_with_the_http_code(
    database: Db, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with harness(database) as h:
        token = h.token(uuid.uuid4())
        for name, document in WS_MISTAKES.items():
            async with connection(h, token, protocol=protocol) as ws:
                start = "subscribe" if protocol == TRANSPORT_WS else "start"
                await ws.send_json({"id": "1", "type": start, "payload": {"query": document}})
                message = await ws.receive_json(timeout=5)
                assert message["type"] == "error", (name, message)
                assert message["id"] == "1"
                # graphql-transport-ws: a list of GraphQL errors; graphql-ws: one error.
                if protocol == TRANSPORT_WS:
                    [error] = message["payload"]
                else:
                    error = message["payload"]
                assert error["extensions"]["code"] == "BAD_USER_INPUT", (name, error)
                assert error["message"], name
                if name != "a query":  # the same mistake over HTTP gets the same code
                    http = await h.http.post(
                        "/graphql",
                        json={"query": document},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    codes = {e["extensions"]["code"] for e in http.json()["errors"]}
                    assert codes == {"BAD_USER_INPUT"}, (name, http.text)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# --- logging: a client's mistake is not our error ----------------------------------------------


async def test_client_mistakes_are_one_info_line_each_and_never_an_error_or_a_traceback(
    database: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    submit = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"
    cancel = "mutation($id: UUID!) { cancelOrder(id: $id) { id } }"
    async with api_client(api_settings(database)) as client:
        trader, engine = client.token(uuid.uuid4()), client.token(None, ENGINE)
        order = await client.gql(submit, {"input": SUBMIT_INPUT}, token=trader)
        order_id = order["data"]["submitOrder"]["id"]
        await client.gql(cancel, {"id": order_id}, token=trader)
        battery: list[tuple[str, dict[str, Any], str | None]] = [
            ("{ viewer { role ", {}, trader),  # syntax error
            ("{ nope }", {}, trader),  # validation
            ("{ viewer { } }", {}, trader),  # an empty selection set (the fuzz test's find)
            ("{ orders(first: 1000) { edges { cursor } } }", {}, trader),  # argument rule
            ('{ orders(after: "garbage") { edges { cursor } } }', {}, trader),
            ("query($id: UUID!) { order(id: $id) { id } }", {"id": "nope"}, trader),
            (submit, {"input": {**SUBMIT_INPUT, "quantity": -1}}, trader),
            (submit, {"input": {**SUBMIT_INPUT, "side": "SIDEWAYS"}}, trader),
            (submit, {"input": SUBMIT_INPUT}, None),  # unauthenticated
            ("mutation($id: UUID!) { approveOrder(id: $id) { id } }", {"id": order_id}, trader),
            (cancel, {"id": str(uuid.uuid4())}, trader),  # not found
            (cancel, {"id": order_id}, trader),  # conflict: already cancelled
            ("mutation($id: UUID!) { approveOrder(id: $id) { id } }", {"id": order_id}, engine),
            (
                "mutation($id: UUID!, $r: String) { cancelOrder(id: $id, reason: $r) { id } }",
                {"id": order_id, "r": "\x00"},
                trader,
            ),
        ]
        caplog.clear()
        request_ids = []
        for document, variables, token in battery:
            response = await client.post(document, variables, token=token)
            assert response.status_code == 200, response.text
            assert response.json()["errors"], document
            request_ids.append(response.headers["x-request-id"])
        refusals = [
            await client.http.post("/graphql", json={"query": "{ viewer { role } }"}, headers=h)
            for h in ({"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"})
        ]
        refusals.append(await client.http.post("/graphql", content=b"{", headers={}))
        refusals.append(await client.http.post("/graphql", content=b"[" * 1000))
        assert all(400 <= response.status_code < 500 for response in refusals)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]
    assert not [record for record in caplog.records if record.exc_info or record.exc_text]
    for request_id in request_ids:
        # Besides the one line every request gets (app/telemetry.py, logger app.requests).
        lines = [
            record
            for record in caplog.records
            if request_id in record.getMessage() and record.name != "app.requests"
        ]
        assert len(lines) == 1, (request_id, [line.getMessage() for line in lines])
        assert lines[0].levelno in (logging.INFO, logging.WARNING)


async def test_a_clients_request_id_is_kept_only_if_it_looks_like_one(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        for sent, kept in [("req-42.a:b_C", True), ("x" * 10_000, False), ("a b\tc", False)]:
            response = await client.http.post(
                "/graphql", json={"query": "{ nope }"}, headers={"X-Request-Id": sent}
            )
            assert (response.headers["x-request-id"] == sent) is kept
            assert len(response.headers["x-request-id"]) <= 64
