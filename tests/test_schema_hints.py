"""With introspection off, no error names a schema element the document did not contain (issue 18).

graphql-core's messages suggest names ("Did you mean 'order' or 'orders'?"), name the type a
field is on or returns, the arguments and input fields a type requires: guessing documents
and reading the errors rebuilds the schema (Clairvoyance). Each case below is a guess of that
kind, sent over HTTP (POST and GET), both WebSocket protocols, and to a document the compiled
path has learned.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from graphql import Source
from httpx_ws import aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from app.graphql.hints import HIDDEN, document_names, schema_names, variable_names
from app.graphql.schema import build_schema
from app.graphql.subscriptions import Subscription
from app.main import create_app
from app.settings import Settings
from tests.api import api_settings, make_token
from tests.conftest import Db

TIMEOUT = 5.0
NAMES = schema_names(build_schema(Settings(), subscription=Subscription)._schema)
ENGLISH = {"type", "if", "include", "value", "input"}
"""Words of graphql-core's messages that happen to be names of the schema too."""

SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"
ORDER = {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}

# (document, variables, a name the answer must not give away)
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "misspelled field": ("{ orderz }", {}, "orders"),
    "field on an unnamed type": ("{ order(id: null) { idz } }", {}, "Order"),
    "misspelled mutation": ("mutation { submitOrdr }", {}, "submitOrder"),
    "misspelled argument": ("{ orders(frist: 1) { __typename } }", {}, "first"),
    "enum value literal": (
        "{ orders(filter: {side: BUYY}) { __typename } }",
        {},
        "BUY",
    ),
    "enum value variable": (SUBMIT, {"input": {**ORDER, "orderType": "MARKT"}}, "MARKET"),
    "input field literal": (
        'mutation { submitOrder(input: {symbl: "AAPL"}) { id } }',
        {},
        "symbol",
    ),
    "input field variable": (
        SUBMIT,
        {"input": {"symbol": "AAPL", "side": "BUY", "quantiy": 1, "orderType": "MARKET"}},
        "quantity",
    ),
    "required input field": (SUBMIT, {"input": {"symbol": "AAPL"}}, "side"),
    "required argument": ("{ order { id } }", {}, "UUID"),
    "type in a fragment": ("{ ...F } fragment F on Ordr { id }", {}, "Order"),
    "type of a variable": (
        "query($f: OrderFiltr) { orders(filter: $f) { __typename } }",
        {},
        "OrderFilter",
    ),
    "selection missing": ("{ orders }", {}, "OrderConnection"),
    "selection on a leaf": ("{ viewer { role { x } } }", {}, "String"),
    "literal of another type": ('{ orders(first: "ten") { __typename } }', {}, "Int"),
    "variable in another position": (
        "query($n: String) { orders(first: $n) { __typename } }",
        {},
        "Int",
    ),
}
SUBSCRIPTION_CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "misspelled subscription": ("subscription { orderUpdatez { id } }", {}, "orderUpdates"),
    "misspelled argument": ("subscription { orderUpdates(ordrId: null) { id } }", {}, "orderId"),
    "field of the order": ("subscription { orderUpdates { symbl } }", {}, "symbol"),
}


def leaked(message: str, document: str, variables: dict[str, Any]) -> set[str]:
    """The schema's names in ``message`` that the client did not send as names."""
    words = set(re.findall(r"[_A-Za-z][_0-9A-Za-z]*", message))
    sent = variable_names(variables, document_names(Source(document)))
    return (words & NAMES) - sent - ENGLISH


@asynccontextmanager
async def served(database: Db, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(database, **overrides))
    async with (
        app.router.lifespan_context(app),
        ASGIWebSocketTransport(app=app) as transport,
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        yield http


async def post(http: httpx.AsyncClient, document: str, variables: dict[str, Any]) -> list[Any]:
    response = await http.post("/graphql", json={"query": document, "variables": variables})
    errors: list[Any] = response.json()["errors"]
    return errors


async def ws_errors(
    http: httpx.AsyncClient, protocol: str, document: str, variables: dict[str, Any]
) -> list[Any]:
    async with aconnect_ws("http://test/graphql", http, subprotocols=[protocol]) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "connection_ack"
        start = "subscribe" if protocol == "graphql-transport-ws" else "start"
        payload = {"query": document, "variables": variables}
        await ws.send_json({"id": "1", "type": start, "payload": payload})
        while (message := await ws.receive_json(timeout=TIMEOUT))["type"] in ("ka", "ping"):
            pass
    payload = message["payload"]
    errors: list[Any] = payload if isinstance(payload, list) else payload.get("errors", [payload])
    return errors


def assert_conceals(
    errors: list[Any], document: str, secret: str, variables: dict[str, Any] | None = None
) -> None:
    assert errors, "the guess was answered without an error"
    for error in errors:
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert "Did you mean" not in error["message"], error
        assert not leaked(error["message"], document, variables or {}), error["message"]
    assert not any(re.search(rf"\b{secret}\b", e["message"]) for e in errors), errors


@pytest.mark.parametrize("case", CASES)
async def test_errors_name_nothing_the_document_did_not_over_http(database: Db, case: str) -> None:
    document, variables, secret = CASES[case]
    async with served(database, introspection=False) as http:
        assert_conceals(await post(http, document, variables), document, secret, variables)
        if not document.startswith("mutation"):
            response = await http.get("/graphql", params={"query": document})
            assert_conceals(response.json()["errors"], document, secret)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize("case", SUBSCRIPTION_CASES)
async def test_errors_name_nothing_the_document_did_not_over_websocket(
    database: Db, case: str, protocol: str
) -> None:
    document, variables, secret = SUBSCRIPTION_CASES[case]
    async with served(database, introspection=False) as http:
        errors = await ws_errors(http, protocol, document, variables)
        assert_conceals(errors, document, secret, variables)


async def test_a_learned_document_answers_bad_variables_without_hints(database: Db) -> None:
    """The compiled path declines variables graphql-core refuses; the answer is concealed."""
    async with served(database, introspection=False) as http:
        settings = api_settings(database, introspection=False)
        headers = {"Authorization": f"Bearer {make_token(settings, uuid.uuid4())}"}
        first = await http.post(
            "/graphql", json={"query": SUBMIT, "variables": {"input": ORDER}}, headers=headers
        )
        assert "errors" not in first.json(), first.text  # learned: compiled from now on
        bad = {"input": {**ORDER, "orderType": "MARKT"}}
        response = await http.post(
            "/graphql", json={"query": SUBMIT, "variables": bad}, headers=headers
        )
        assert_conceals(response.json()["errors"], SUBMIT, "MARKET", bad)


async def test_with_introspection_on_errors_still_suggest(database: Db) -> None:
    async with served(database) as http:
        [error] = await post(http, "{ orderz }", {})
    assert "Did you mean 'order' or 'orders'?" in error["message"]


async def test_a_hidden_name_is_said_to_be_hidden_and_the_rest_of_the_message_kept(
    database: Db,
) -> None:
    async with served(database, introspection=False) as http:
        [error] = await post(http, "{ orderz }", {})
    assert error["message"] == f"Cannot query field 'orderz' on type {HIDDEN}."
