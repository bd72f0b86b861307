"""Hot queries compiled to one SQL statement answer exactly what the resolvers answer."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app.db.timestamps import isoformat
from app.graphql.compiled import compiler
from app.graphql.compiled import compile_query
from tests.api import api_client, api_settings, graphql_endpoint, statements_sent
from tests.jsondiff import diff
from tests.sql import as_role

TRADER_A = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
TRADER_B = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002")

ORDER_FIELDS = """id traderId clientOrderId symbol side quantity orderType price stopLoss
  takeProfit status filledQuantity averageFillPrice createdAt updatedAt expiresAt __typename"""
FILL_FIELDS = "id orderId timestamp quantityFilled priceAtFill venue commission"
LOG_FIELDS = "id orderId traderId action status timestamp reason retryAttempt errorCode"

DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    (
        f"{{ orders {{ edges {{ cursor node {{ {ORDER_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
        {},
    ),
    (
        f"query P($first: Int!, $after: String) {{ orders(first: $first, after: $after) {{"
        f" edges {{ cursor node {{ id fills {{ {FILL_FIELDS} }} executionLogs {{ {LOG_FIELDS} }} }} }}"
        f" pageInfo {{ hasNextPage endCursor }} __typename }} }}",
        {"first": 2},
    ),
    (
        "query F($f: OrderFilter) { mine: orders(first: 50, filter: $f) { edges { node { id status symbol side } } } }",
        {"f": {"status": ["PENDING", "PARTIAL"], "symbol": "msft", "side": "BUY"}},
    ),
    ("{ orders(filter: {side: SELL}) { edges { node { id } } } }", {}),
    (
        f"{{ executionLogs(first: 3) {{ edges {{ cursor node {{ {LOG_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
        {},
    ),
    (
        "query L($a: ExecutionAction) { executionLogs(action: $a) { edges { node { id action } } } }",
        {"a": "FILLED"},
    ),
    ("{ viewer { traderId role __typename } }", {}),
]


async def arrange(authenticator_conn) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for trader, symbol, side, price in (
        (TRADER_A, "MSFT", "BUY", "101.50"),
        (TRADER_A, "MSFT", "BUY", "99.99"),
        (TRADER_A, "AAPL", "SELL", "150.00"),
        (TRADER_B, "MSFT", "BUY", "100.00"),
    ):
        async with as_role(authenticator_conn, "authenticated", trader, commit=True) as conn:
            ids.append(
                await conn.fetchval(
                    "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
                    " VALUES ($1, $2, $3, 100, 'LIMIT', $4::numeric) RETURNING id",
                    trader,
                    symbol,
                    side,
                    price,
                )
            )
    async with as_role(authenticator_conn, "service_role", commit=True) as conn:
        await conn.execute("UPDATE orders SET approved_at = now() WHERE id = $1", ids[0])
        await conn.execute(
            "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue, commission)"
            " VALUES ($1, 30, 101.25, 'NYSE', 1.5), ($1, 10, 101.5, 'Mock', 0)",
            ids[0],
        )
    return ids


@pytest.mark.parametrize(("document", "variables"), DOCUMENTS)
async def test_compiled_answer_equals_the_resolvers_answer(
    database, authenticator_conn, document: str, variables: dict[str, Any]
) -> None:
    assert compile_query(document, None) is not None, "the document should be compilable"
    ids = await arrange(authenticator_conn)
    answers = {}
    for compiled in (False, True):
        settings = dataclasses.replace(api_settings(database), compiled_queries=compiled)
        async with api_client(settings) as client:
            for role, sub in (
                ("authenticated", TRADER_A),
                ("compliance_auditor", None),
                ("anon", None),
            ):
                token = client.token(sub, role) if role != "anon" else None
                # Twice: the first run validates on the normal path, the second may be compiled.
                first = await client.gql(document, variables, token=token)
                second = await client.gql(document, variables, token=token)
                assert first == second, diff(first, second)
                assert "errors" not in second, second
                answers[(compiled, role)] = second
            # With compiled queries on, the second answers came from the compiled statement.
            assert (document, None) in graphql_endpoint(client.app).compiled.plans or not compiled
    for role in ("authenticated", "compliance_auditor", "anon"):
        assert answers[(True, role)] == answers[(False, role)], role
    # The trader's answer holds none of trader B's order, whichever path answered.
    assert str(ids[3]) not in str(answers[(True, "authenticated")])


async def test_a_compiled_page_is_one_statement(database, authenticator_conn) -> None:
    await arrange(authenticator_conn)
    document = DOCUMENTS[1][0]
    async with api_client(api_settings(database)) as client:
        token = client.token(TRADER_A)
        await client.gql(document, {"first": 2}, token=token)
        with statements_sent(client) as statements:
            body = await client.gql(document, {"first": 2}, token=token)
        assert "errors" not in body
        data_statements = [s for s in statements if "set_config" not in s]
        assert len(data_statements) == 1, statements


async def test_pagination_cursors_of_both_paths_are_interchangeable(
    database, authenticator_conn
) -> None:
    await arrange(authenticator_conn)
    query = "query P($after: String) { orders(first: 1, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }"
    seen: dict[bool, list[str]] = {}
    for compiled in (False, True):
        settings = dataclasses.replace(api_settings(database), compiled_queries=compiled)
        async with api_client(settings) as client:
            token = client.token(TRADER_A)
            await client.gql(query, {"after": None}, token=token)
            after, ids = None, []
            for _ in range(5):
                page = (await client.gql(query, {"after": after}, token=token))["data"]["orders"]
                ids += [e["node"]["id"] for e in page["edges"]]
                after = page["pageInfo"]["endCursor"]
                if not page["pageInfo"]["hasNextPage"]:
                    break
            seen[compiled] = ids
    assert len(seen[True]) == 3
    assert seen[True] == seen[False]


@pytest.mark.parametrize(
    "document",
    [
        "{ orders { edges { node { ...F } } } } fragment F on Order { id }",
        "{ orders { edges { node { id @include(if: true) } } } }",
        'mutation { cancelOrder(id: "00000000-0000-4000-8000-000000000000") { id } }',
        "{ __schema { queryType { name } } }",
        "{ a: viewer { role } a: viewer { role } }",
    ],
)
def test_documents_outside_the_compiled_subset_are_left_to_the_resolvers(document: str) -> None:
    assert compile_query(document, None) is None


async def test_bad_arguments_on_a_compiled_document_get_the_normal_errors(database) -> None:
    query = "query P($first: Int!) { orders(first: $first) { edges { node { id } } } }"
    async with api_client(api_settings(database)) as client:
        token = client.token(TRADER_A)
        assert "errors" not in await client.gql(query, {"first": 5}, token=token)
        for bad in (0, 101):
            body = await client.gql(query, {"first": bad}, token=token)
            assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}
        body = await client.gql(query, {"first": "many"}, token=token)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("micros", [0, 1, 10, 120, 804250, 999999], ids=lambda m: f"{m:06d}us")
async def test_python_writes_timestamps_exactly_as_postgresql_to_json_does(
    owner_conn, micros: int
) -> None:
    value = datetime(2026, 11, 24, 21, 2, 45, micros, tzinfo=UTC)
    await owner_conn.execute("SET TIME ZONE 'UTC'")
    written_by_postgres = await owner_conn.fetchval(
        "SELECT to_json($1::timestamptz) #>> '{}'", value
    )
    assert isoformat(value) == written_by_postgres
    # An offset other than UTC is converted, never kept.
    assert isoformat(value.astimezone(timezone(timedelta(hours=-5)))) == written_by_postgres


async def test_a_mutation_document_is_parsed_for_the_compiler_once_not_per_request(
    database, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real_parse = compiler.parse

    def counting_parse(text: str, *args: Any, **kwargs: Any) -> Any:
        parsed.append(text)
        return real_parse(text, *args, **kwargs)

    monkeypatch.setattr(compiler, "parse", counting_parse)
    # A text of its own, so that no earlier test has cached a verdict on it.
    mutation = (
        f"# {uuid.uuid4()}\n"
        "mutation S($input: SubmitOrderInput!) { submitOrder(input: $input) { id status } }"
    )
    async with api_client(api_settings(database)) as client:
        token = client.token(TRADER_A)
        for quantity in (1, 2, 3):
            order = {"symbol": "MSFT", "side": "BUY", "quantity": quantity, "orderType": "MARKET"}
            body = await client.gql(mutation, {"input": order}, token=token)
            assert body["data"]["submitOrder"]["status"] == "PENDING", body
    # The compiler's verdict on the document ("not compilable") was reached once.
    assert parsed == [mutation]
