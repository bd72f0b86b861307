"""Query.positions and Subscription.positionUpdates through the API, as each role.

The arithmetic is proven against a reference in tests/test_positions.py; here: the contract's
shape, who sees what over HTTP, and the live updates over WebSocket.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from graphql import GraphQLArgument, Undefined, ast_from_value, build_schema, print_ast, print_type

from app.orders import fields
from tests.api import api_client, api_settings, graphql_endpoint
from tests.conftest import Db
from tests.test_subscriptions import LEGACY_WS, TRANSPORT_WS, Harness, harness, until

CONTRACT = Path("/work/shared/contract/schema.graphql")
CONTRACT_TEXT = CONTRACT.read_text() if CONTRACT.exists() else None
POSITIONS = """
query($traderId: UUID, $method: CostBasisMethod) {
  positions(traderId: $traderId, method: $method) {
    traderId symbol quantity averageEntryPrice costBasis realizedPnl commissions
    marketPrice marketValue unrealizedPnl updatedAt
  }
}
"""
POSITION_UPDATES = """
subscription($symbol: String, $method: CostBasisMethod) {
  positionUpdates(symbol: $symbol, method: $method) {
    traderId symbol quantity averageEntryPrice realizedPnl
  }
}
"""
FILL = """
mutation($id: UUID!, $q: Int!, $p: Decimal!) {
  recordFill(input: {orderId: $id, quantityFilled: $q, priceAtFill: $p, venue: "Test",
                     commission: "0.25"}) { id }
}
"""


def default(argument: GraphQLArgument) -> str | None:
    """An argument's default as SDL, whether the schema was built from SDL or from code."""
    if argument.ast_node is not None and argument.ast_node.default_value is not None:
        return print_ast(argument.ast_node.default_value)
    if argument.default_value is Undefined or argument.default_value is None:
        return None  # "= null" says what no default says
    value = ast_from_value(argument.default_value, argument.type)
    return None if value is None else print_ast(value)


async def filled(h: Harness, trader: uuid.UUID, quantity: int, price: str, symbol: str) -> str:
    order_id = await h.submit(trader, symbol)
    await h.approve(order_id)
    await h.gql(FILL, {"id": order_id, "q": quantity, "p": price}, h.token(role="service_role"))
    return order_id


@pytest.mark.skipif(CONTRACT_TEXT is None, reason="the shared contract is not on this machine")
async def test_the_served_position_types_are_the_contracts(database: Db) -> None:
    assert CONTRACT_TEXT is not None
    contract = build_schema(CONTRACT_TEXT)
    async with api_client(api_settings(database)) as client:
        served = graphql_endpoint(client.app).graphql_schema
    for name in ("Position", "CostBasisMethod"):
        assert print_type(served.get_type(name)) == print_type(contract.get_type(name)), name
    for root, field in (("Query", "positions"), ("Subscription", "positionUpdates")):
        ours = served.get_type(root).fields[field]  # type: ignore[union-attr]
        theirs = contract.get_type(root).fields[field]  # type: ignore[union-attr]
        assert str(ours.type) == str(theirs.type)
        assert ours.description == theirs.description
        assert {n: (str(a.type), default(a)) for n, a in ours.args.items()} == {
            n: (str(a.type), default(a)) for n, a in theirs.args.items()
        }


async def test_the_registry_names_every_column_of_the_position_view(
    owner_conn: asyncpg.Connection,
) -> None:
    columns = await owner_conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'public.position_view'::regclass"
        " AND attnum > 0 ORDER BY attnum"
    )
    registered = {f.name for f in fields.POSITION.fields} | set(fields.POSITION.hidden)
    assert {row[0] for row in columns} == registered


async def test_each_role_reads_positions_as_the_database_allows(database: Db) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with harness(database) as h:
        await filled(h, alice, 10, "10.00", "AAPL")
        await filled(h, alice, 5, "20.00", "MSFT")
        await filled(h, bob, 7, "30.00", "AAPL")

        async def read(token: str | None, **variables: Any) -> dict[str, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = await h.http.post(
                "/graphql", json={"query": POSITIONS, "variables": variables}, headers=headers
            )
            body: dict[str, Any] = response.json()
            return body

        own = (await read(h.token(alice)))["data"]["positions"]
        assert [(p["symbol"], p["quantity"]) for p in own] == [("AAPL", 10), ("MSFT", 5)]
        assert own[0] == {
            "traderId": str(alice),
            "symbol": "AAPL",
            "quantity": 10,
            "averageEntryPrice": "10.00",
            "costBasis": "100.00",
            "realizedPnl": "0.00",
            "commissions": "0.25",
            "marketPrice": None,
            "marketValue": None,
            "unrealizedPnl": None,
            "updatedAt": own[0]["updatedAt"],
        }
        # Naming another trader shows a trader nothing more.
        assert (await read(h.token(alice), traderId=str(bob)))["data"]["positions"] == []
        assert (await read(None))["data"]["positions"] == []
        for role in ("service_role", "compliance_auditor"):
            named = (await read(h.token(role=role), traderId=str(bob)))["data"]["positions"]
            assert [(p["traderId"], p["quantity"]) for p in named] == [(str(bob), 7)]
            refused = await read(h.token(role=role), method="AVERAGE_COST")
            [error] = refused["errors"]
            assert error["extensions"]["code"] == "BAD_USER_INPUT"
            assert error["extensions"]["field"] == "traderId"


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_position_updates_deliver_the_position_after_each_fill(
    database: Db, protocol: str
) -> None:
    from tests.test_subscriptions import subscribed

    alice, mallory = uuid.uuid4(), uuid.uuid4()
    async with harness(database) as h:
        await filled(h, alice, 10, "10.00", "AAPL")
        async with subscribed(
            h, h.token(alice), protocol=protocol, query=POSITION_UPDATES
        ) as stream:
            await h.subscribers(1)
            # Neither another trader's fill nor an order that moves no position sends anything.
            await filled(h, mallory, 3, "99.00", "AAPL")
            unfilled = await h.submit(alice, "AAPL")
            await h.approve(unfilled)
            sell = await h.submit(alice, "AAPL")
            await h.approve(sell)
            await h.gql(
                FILL.replace("quantityFilled: $q", "quantityFilled: $q"),
                {"id": unfilled, "q": 4, "p": "12.50"},
                h.token(role="service_role"),
            )
            payload = await stream.next()
            assert payload["data"]["positionUpdates"] == {
                "traderId": str(alice),
                "symbol": "AAPL",
                "quantity": 14,
                "averageEntryPrice": "10.714286",
                "realizedPnl": "0.00",
            }


async def test_position_updates_filter_by_symbol_and_need_a_token(database: Db) -> None:
    from tests.test_subscriptions import subscribed

    alice = uuid.uuid4()
    async with harness(database) as h:
        query = POSITION_UPDATES.replace("$symbol: String", '$symbol: String = "MSFT"')
        async with subscribed(h, h.token(alice), query=query) as stream:
            await h.subscribers(1)
            await filled(h, alice, 2, "10.00", "AAPL")
            await filled(h, alice, 3, "20.00", "MSFT")
            payload = await stream.next()
            assert payload["data"]["positionUpdates"]["symbol"] == "MSFT"
        async with subscribed(h, None, query=POSITION_UPDATES) as stream:
            message = await stream.message()
            errors = (
                message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            )
            assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"

        async def none_left() -> bool:
            return h.changes.subscriber_count == 0

        await until(none_left)
