from __future__ import annotations

import uuid

from tests.api import api_client, api_settings

SUBMIT = """
mutation($input: SubmitOrderInput!) {
  submitOrder(input: $input) { id status symbol price executionLogs { action status } }
}
"""


async def test_trader_submits_and_lists_an_order(database) -> None:
    trader = uuid.uuid4()
    async with api_client(api_settings(database)) as client:
        token = client.token(trader)
        body = await client.gql(
            SUBMIT,
            {
                "input": {
                    "symbol": "aapl",
                    "side": "BUY",
                    "quantity": 10,
                    "orderType": "LIMIT",
                    "price": "150.25",
                }
            },
            token=token,
        )
        assert "errors" not in body, body
        order = body["data"]["submitOrder"]
        assert order["symbol"] == "AAPL"
        assert order["price"] == "150.25"
        assert order["executionLogs"] == [{"action": "SUBMITTED", "status": "PENDING"}]
        listed = await client.gql(
            "{ viewer { traderId role } orders { edges { node { id fills { id } } } pageInfo { hasNextPage } } }",
            token=token,
        )
        assert listed["data"]["viewer"] == {"traderId": str(trader), "role": "authenticated"}
        assert [e["node"]["id"] for e in listed["data"]["orders"]["edges"]] == [order["id"]]
        other = await client.gql(
            "{ orders { edges { node { id } } } }", token=client.token(uuid.uuid4())
        )
        assert other["data"]["orders"]["edges"] == []


async def test_graphiql_hands_its_headers_to_subscriptions(database) -> None:
    async with api_client(api_settings(database)) as client:
        page = await client.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "GraphiQL" in page.text
    # Browsers cannot set WebSocket headers: the token must travel in connection_init.
    assert "wsConnectionParams" in page.text


async def test_graphiql_is_not_served_when_switched_off(database) -> None:
    async with api_client(api_settings(database, graphiql=False)) as client:
        page = await client.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 404


async def test_a_repeated_document_is_parsed_and_validated_once(database) -> None:
    from strawberry.extensions.validation_cache import _get_validate_cache

    from app.graphql.extensions import CACHE_SIZE

    # A fresh document text, so earlier tests cannot have cached it.
    query = f"{{ viewer {{ role }} orders(first: 3) {{ pageInfo {{ hasNextPage }} }} }} # {uuid.uuid4()}"
    cache = _get_validate_cache(CACHE_SIZE)
    async with api_client(api_settings(database, compiled_queries=False)) as client:
        before = cache.cache_info()
        for _ in range(5):
            assert "errors" not in await client.gql(query)
        after = cache.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 4
