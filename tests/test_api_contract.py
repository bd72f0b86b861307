"""The served GraphQL schema keeps the public contract, and every contract operation works.

tests/contract/schema.graphql is a verbatim copy of the shared contract, so that the suite needs
nothing outside the repository. Contract = old schema, served = new schema: anything graphql-core
calls breaking or dangerous is a change the frontend would notice, except what the contract
itself allows (extra optional arguments and input fields).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from graphql import (
    DangerousChangeType,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    build_client_schema,
    build_schema,
    find_breaking_changes,
    find_dangerous_changes,
    get_introspection_query,
)

from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.schema import build_schema as build_served_schema
from app.main import create_app
from app.settings import Settings
from tests.api import SECRET, api_client, api_settings

CONTRACT = Path(__file__).parent / "contract" / "schema.graphql"

_SUBSCRIPTION_BLOCK = re.compile(r"^type Subscription \{.*?^\}\n", re.MULTILINE | re.DOTALL)
# A type only a subscription returns goes with the subscription block.
_SUBSCRIPTION_ONLY_TYPES = re.compile(
    r'^"[^"\n]*"\ntype OrderEvent \{.*?^\}\n', re.MULTILINE | re.DOTALL
)

# What the contract allows the served schema to add ("extra arguments with defaults").
ALLOWED_ADDITIONS = {
    DangerousChangeType.OPTIONAL_ARG_ADDED,
    DangerousChangeType.OPTIONAL_INPUT_FIELD_ADDED,
}


def contract_sdl() -> str:
    return CONTRACT.read_text()


def served_schema() -> GraphQLSchema:
    """The schema the app serves at /graphql, taken from create_app (which connects to nothing
    until its lifespan starts)."""
    settings = Settings(
        jwt_secret=SECRET, api_database_url="postgresql://authenticator@127.0.0.1:9/unused"
    )
    app = create_app(settings)
    [endpoint] = {
        route.endpoint
        for route in app.routes
        if isinstance(getattr(route, "endpoint", None), GraphQLEndpoint)
    }
    schema: GraphQLSchema = endpoint.schema._schema
    return schema


def changes(served: GraphQLSchema) -> list[str]:
    contract = build_schema(contract_sdl())
    breaking = [change.description for change in find_breaking_changes(contract, served)]
    dangerous = [
        change.description
        for change in find_dangerous_changes(contract, served)
        if change.type not in ALLOWED_ADDITIONS
    ]
    return breaking + dangerous


def test_served_schema_keeps_every_type_field_argument_and_default_of_the_contract() -> None:
    assert changes(served_schema()) == []


def described(schema: GraphQLSchema) -> dict[str, str | None]:
    """Every description of ``schema``'s named types, fields, arguments, input fields and
    enum values, by a dotted path."""
    found: dict[str, str | None] = {}
    for name, named in schema.type_map.items():
        if name.startswith("__"):
            continue
        found[name] = named.description
        if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in named.fields.items():
                found[f"{name}.{field_name}"] = field.description
                for arg_name, arg in field.args.items():
                    found[f"{name}.{field_name}({arg_name})"] = arg.description
        elif isinstance(named, GraphQLInputObjectType):
            for field_name, input_field in named.fields.items():
                found[f"{name}.{field_name}"] = input_field.description
        elif isinstance(named, GraphQLEnumType):
            for value_name, value in named.values.items():
                found[f"{name}.{value_name}"] = value.description
    return found


def description_changes(served: GraphQLSchema) -> list[str]:
    """Each description the contract gives that the served one does not begin with, word for
    word (the served schema may say more after it)."""
    contract = described(build_schema(contract_sdl()))
    serving = described(served)
    return [
        f"{path}: {serving.get(path)!r} instead of {text!r}"
        for path, text in contract.items()
        if text is not None and not (serving.get(path) or "").startswith(text)
    ]


def test_served_schema_repeats_every_description_of_the_contract() -> None:
    assert description_changes(served_schema()) == []
    # The comparison can fail: a changed description is reported.
    edited = build_schema(
        contract_sdl().replace('"The order this one replaced, if any."', '"Replaced."')
    )
    assert description_changes(edited) == [
        "Order.replacesId: 'Replaced.' instead of 'The order this one replaced, if any.'"
    ]


def test_contract_comparison_notices_a_removed_field_and_a_changed_default() -> None:
    # The comparison itself must be able to fail: a served schema missing Order.price and with
    # another page size default is reported.
    mutilated = build_schema(
        contract_sdl()
        .replace(
            '  "Limit price for LIMIT and STOP_LIMIT, trigger price for STOP, null for MARKET."\n'
            "  price: Decimal\n",
            "",
            1,
        )
        .replace("first: Int = 20", "first: Int = 10")
    )
    found = changes(mutilated)
    assert any("Order.price" in change for change in found), found
    assert any("Query.orders(first:)" in change for change in found), found


def test_schema_built_without_a_subscription_keeps_the_rest_of_the_contract() -> None:
    # build_schema(settings) alone (no subscription) still has every query and mutation.
    without = _SUBSCRIPTION_BLOCK.sub("", CONTRACT.read_text())
    assert "type OrderEvent {" in without
    contract = build_schema(_SUBSCRIPTION_ONLY_TYPES.sub("", without))
    built = build_served_schema(Settings(jwt_secret=SECRET))._schema
    assert [change.description for change in find_breaking_changes(contract, built)] == []


async def test_schema_introspected_over_http_keeps_the_contract(database) -> None:
    async with api_client(api_settings(database)) as client:
        body = await client.gql(get_introspection_query(descriptions=True))
    assert "errors" not in body, body
    served = build_client_schema(body["data"])
    assert changes(served) == []
    assert served.subscription_type is not None


FILL_FIELDS = """
fragment FillFields on Fill {
  id orderId timestamp quantityFilled priceAtFill venue commission
}
"""
LOG_FIELDS = """
fragment LogFields on ExecutionLog {
  id orderId traderId action status timestamp reason retryAttempt errorCode
}
"""
ORDER_FIELDS = (
    """
fragment OrderFields on Order {
  id traderId clientOrderId symbol side quantity orderType price stopLoss takeProfit status
  filledQuantity averageFillPrice createdAt updatedAt expiresAt
  fills { ...FillFields }
  executionLogs { ...LogFields }
}
"""
    + FILL_FIELDS
    + LOG_FIELDS
)

SUBMIT = (
    "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { ...OrderFields } }"
    + ORDER_FIELDS
)
APPROVE = "mutation($id: UUID!) { approveOrder(id: $id) { ...OrderFields } }" + ORDER_FIELDS
RECORD_FILL = (
    "mutation($input: RecordFillInput!) { recordFill(input: $input) { ...FillFields } }"
    + FILL_FIELDS
)
CANCEL = (
    "mutation($id: UUID!, $reason: String) { cancelOrder(id: $id, reason: $reason)"
    " { ...OrderFields } }" + ORDER_FIELDS
)
REJECT = (
    "mutation($id: UUID!, $reason: String!, $errorCode: String) {"
    " rejectOrder(id: $id, reason: $reason, errorCode: $errorCode) { ...OrderFields } }"
    + ORDER_FIELDS
)
ORDER = "query($id: UUID!) { order(id: $id) { ...OrderFields } }" + ORDER_FIELDS
ORDERS = (
    "query($first: Int, $after: String, $filter: OrderFilter) {"
    " orders(first: $first, after: $after, filter: $filter) {"
    " edges { cursor node { ...OrderFields } } pageInfo { hasNextPage endCursor } } }"
    + ORDER_FIELDS
)
LOGS = (
    "query($orderId: UUID, $action: ExecutionAction, $first: Int, $after: String) {"
    " executionLogs(orderId: $orderId, action: $action, first: $first, after: $after) {"
    " edges { cursor node { ...LogFields } } pageInfo { hasNextPage endCursor } } }" + LOG_FIELDS
)


def data(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]
    return result


def is_aware_timestamp(value: str) -> bool:
    return datetime.fromisoformat(value).utcoffset() is not None


async def test_every_contract_operation_works_for_the_role_it_belongs_to(database) -> None:
    trader = uuid.uuid4()
    expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    async with api_client(api_settings(database)) as client:
        mine = client.token(trader)
        engine = client.token(None, "service_role")

        viewer = data(await client.gql("{ viewer { traderId role } }", token=mine))["viewer"]
        assert viewer == {"traderId": str(trader), "role": "authenticated"}

        order = data(
            await client.gql(
                SUBMIT,
                {
                    "input": {
                        "symbol": "aapl",
                        "side": "BUY",
                        "quantity": 100,
                        "orderType": "LIMIT",
                        "price": "150.25",
                        "stopLoss": "140",
                        "takeProfit": "160.5",
                        "expiresAt": expires.isoformat(),
                        "clientOrderId": "contract-1",
                    }
                },
                token=mine,
            )
        )["submitOrder"]
        assert order["traderId"] == str(trader)
        assert order["clientOrderId"] == "contract-1"
        assert (order["symbol"], order["side"], order["orderType"]) == ("AAPL", "BUY", "LIMIT")
        # Decimals are strings, never floats.
        assert (order["price"], order["stopLoss"], order["takeProfit"]) == (
            "150.25",
            "140.00",
            "160.50",
        )
        assert (order["status"], order["filledQuantity"], order["averageFillPrice"]) == (
            "PENDING",
            0,
            None,
        )
        assert datetime.fromisoformat(order["expiresAt"]) == expires
        assert is_aware_timestamp(order["createdAt"])
        assert is_aware_timestamp(order["updatedAt"])
        assert order["fills"] == []
        assert [(log["action"], log["status"]) for log in order["executionLogs"]] == [
            ("SUBMITTED", "PENDING")
        ]
        order_id = order["id"]

        approved = data(await client.gql(APPROVE, {"id": order_id}, token=engine))["approveOrder"]
        assert approved["status"] == "PENDING"
        assert [log["action"] for log in approved["executionLogs"]] == ["SUBMITTED", "APPROVED"]

        fill = data(
            await client.gql(
                RECORD_FILL,
                {
                    "input": {
                        "orderId": order_id,
                        "quantityFilled": 40,
                        "priceAtFill": "150.10",
                        "venue": "PAPER",
                        "commission": "1.25",
                    }
                },
                token=engine,
            )
        )["recordFill"]
        assert fill["orderId"] == order_id
        assert (fill["quantityFilled"], fill["priceAtFill"], fill["venue"], fill["commission"]) == (
            40,
            "150.10",
            "PAPER",
            "1.25",
        )
        assert is_aware_timestamp(fill["timestamp"])

        fetched = data(await client.gql(ORDER, {"id": order_id}, token=mine))["order"]
        assert (fetched["status"], fetched["filledQuantity"]) == ("PARTIAL", 40)
        assert Decimal(fetched["averageFillPrice"]) == Decimal("150.10")
        assert [f["id"] for f in fetched["fills"]] == [fill["id"]]

        listed = data(
            await client.gql(
                ORDERS,
                {
                    "first": 10,
                    "filter": {"status": ["PARTIAL"], "symbol": "aapl", "side": "BUY"},
                },
                token=mine,
            )
        )["orders"]
        assert [edge["node"]["id"] for edge in listed["edges"]] == [order_id]
        assert listed["pageInfo"] == {
            "hasNextPage": False,
            "endCursor": listed["edges"][0]["cursor"],
        }

        logs = data(await client.gql(LOGS, {"orderId": order_id, "action": "FILLED"}, token=mine))[
            "executionLogs"
        ]
        assert [(e["node"]["action"], e["node"]["status"]) for e in logs["edges"]] == [
            ("FILLED", "PARTIAL")
        ]
        assert logs["edges"][0]["node"]["traderId"] == str(trader)

        cancelled = data(
            await client.gql(CANCEL, {"id": order_id, "reason": "changed my mind"}, token=mine)
        )["cancelOrder"]
        assert (cancelled["status"], cancelled["filledQuantity"]) == ("CANCELLED", 40)
        assert cancelled["executionLogs"][-1]["action"] == "CANCELLED"
        assert cancelled["executionLogs"][-1]["reason"] == "changed my mind"

        second = data(
            await client.gql(
                SUBMIT,
                {"input": {"symbol": "MSFT", "side": "SELL", "quantity": 5, "orderType": "MARKET"}},
                token=mine,
            )
        )["submitOrder"]
        assert second["price"] is None
        rejected = data(
            await client.gql(
                REJECT,
                {"id": second["id"], "reason": "risk limit", "errorCode": "RISK_LIMIT"},
                token=engine,
            )
        )["rejectOrder"]
        assert rejected["status"] == "REJECTED"
        last = rejected["executionLogs"][-1]
        assert (last["action"], last["reason"], last["errorCode"]) == (
            "REJECTED",
            "risk limit",
            "RISK_LIMIT",
        )
