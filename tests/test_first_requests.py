"""What a newcomer's first requests meet: GET /, an abbreviated input field."""

from __future__ import annotations

import uuid

import pytest

from tests.api import api_client, api_settings
from tests.conftest import Db

SUBMIT_QTY = (
    'mutation { submitOrder(input: {symbol: "AAPL", side: BUY, qty: 1, orderType: MARKET}) { id } }'
)
SUBMIT_VARIABLES = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"


@pytest.mark.parametrize(
    ("graphiql", "message"),
    [
        (True, "Not Found: the API is at /graphql (GraphiQL there in a browser)"),
        (False, "Not Found: the API is at /graphql"),
    ],
)
async def test_a_path_that_is_not_the_api_says_where_the_api_is(
    database: Db, graphiql: bool, message: str
) -> None:
    async with api_client(api_settings(database, graphiql=graphiql)) as client:
        for path in ("/", "/api"):
            response = await client.http.get(path)
            assert (response.status_code, response.text) == (404, message)


def unknown_field_messages(body: dict) -> list[str]:
    return [e["message"] for e in body["errors"] if "unknown field 'qty'" in e["message"]]


async def test_an_abbreviated_input_field_is_answered_with_the_field_it_abbreviates(
    database: Db,
) -> None:
    async with api_client(api_settings(database)) as client:
        token = client.token(uuid.uuid4())
        literal = await client.gql(SUBMIT_QTY, token=token)
        variables = await client.gql(
            SUBMIT_VARIABLES,
            {"input": {"symbol": "AAPL", "side": "BUY", "qty": 1, "orderType": "MARKET"}},
            token=token,
        )
    for body in (literal, variables):
        [message] = unknown_field_messages(body)
        assert "unknown field 'qty' (did you mean 'quantity'?)" in message


async def test_no_field_is_suggested_when_introspection_is_off(database: Db) -> None:
    async with api_client(api_settings(database, introspection=False)) as client:
        body = await client.gql(SUBMIT_QTY, token=client.token(uuid.uuid4()))
    [message] = unknown_field_messages(body)
    assert "quantity'?" not in message
    assert "did you mean" not in message.lower()
