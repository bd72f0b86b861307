"""Hot queries compiled to one SQL statement answer exactly what the resolvers answer.

The documents are generated from the field registry (app/orders/fields.py): every root field
the compiled path serves, every field of each entity, every filter, the ``after`` cursor
across pages, asked as every role. A field added to the registry is covered here without a
line of this file changing. Each compiled answer is proven to come from the compiled
statement (the ``answered`` counter moves; strict mode makes a compiler bug fail the
request), and equals the resolvers' answer once both are written by one JSON encoder
(PostgreSQL writes ``{"a" : 1}``, Python ``{"a":1}``): same keys in the same order, same
values, same types.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from app.db.decimals import DECIMAL_SQL, decimal_text
from app.db.timestamps import isoformat
from app.graphql.compiled import compile_query, compiler
from app.orders import fields, pages
from tests import pg
from tests.api import Client, api_client, api_settings, graphql_endpoint, statements_sent
from tests.conftest import Db
from tests.jsondiff import diff

ROLES = ("anon", "trader", "other trader", "service_role", "compliance_auditor")

SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"
APPROVE = "mutation($id: UUID!) { approveOrder(id: $id) { id } }"
FILL = (
    "mutation($id: UUID!, $q: Int!) { recordFill(input: {orderId: $id, quantityFilled: $q,"
    ' priceAtFill: "10.25", venue: "NYSE", commission: "1.50"}) { id } }'
)
FILL_AT = (
    "mutation($id: UUID!, $q: Int!, $price: Decimal!) { recordFill(input: {orderId: $id,"
    ' quantityFilled: $q, priceAtFill: $price, venue: "NYSE"}) { id } }'
)
REJECT = 'mutation($id: UUID!) { rejectOrder(id: $id, reason: "no", errorCode: "RISK") { id } }'
CANCEL = 'mutation($id: UUID!) { cancelOrder(id: $id, reason: "changed my mind") { id } }'


# --- documents, from the registry ----------------------------------------------------------


def selection(entity: fields.Entity) -> str:
    """Every field of the entity, and for an order its nested lists with every field."""
    names = [f.graphql for f in entity.fields] + ["__typename"]
    if entity is fields.ORDER:
        names += [f"fills {{ {selection(fields.FILL)} }}"]
        names += [f"executionLogs {{ {selection(fields.LOG)} }}"]
    return " ".join(names)


def connection(root: str, listing: pages.Listing, arguments: dict[str, str]) -> str:
    declared = ", ".join(f"${name}: {kind}" for name, kind in arguments.items())
    passed = ", ".join(f"{name}: ${name}" for name in arguments)
    return (
        f"query Q({declared}) {{ {root}({passed}) {{ __typename"
        f" edges {{ __typename cursor node {{ {selection(listing.entity)} }} }}"
        " pageInfo { __typename hasNextPage endCursor } } }"
    )


PAGE_ARGUMENTS = {"first": "Int", "after": "String"}
ORDERS = connection("orders", pages.ORDERS, {**PAGE_ARGUMENTS, "filter": "OrderFilter"})
LOGS = connection(
    "executionLogs",
    pages.LOGS,
    {**PAGE_ARGUMENTS, "orderId": "UUID", "action": "ExecutionAction"},
)
ORDER = f"query Q($id: UUID!) {{ order(id: $id) {{ {selection(fields.ORDER)} }} }}"
VIEWER = f"{{ viewer {{ {selection(fields.VIEWER)} }} }}"
ROOTS = {"orders": ORDERS, "executionLogs": LOGS, "order": ORDER, "viewer": VIEWER}

# Shapes the generated documents do not take: aliases, literals, several roots, defaults.
SHAPES: list[tuple[str, dict[str, Any]]] = [
    (
        "query F($f: OrderFilter) { mine: orders(first: 50, filter: $f) { edges { node"
        " { id status symbol side } } } }",
        {"f": {"status": ["PENDING", "PARTIAL"], "symbol": "aapl", "side": "BUY"}},
    ),
    ("{ orders(filter: {side: SELL}) { edges { node { id } } } }", {}),
    ("{ orders(first: null) { edges { n: node { i: id } } p: pageInfo { hasNextPage } } }", {}),
    (
        "{ v: viewer { role } o: orders(first: 1) { edges { node { id } } }"
        " l: executionLogs(first: 1) { edges { cursor } } }",
        {},
    ),
]


@dataclasses.dataclass
class World:
    resolvers: Client
    compiled: Client
    trader: uuid.UUID
    other: uuid.UUID
    orders: dict[uuid.UUID, list[str]]

    def token(self, role: str) -> str | None:
        if role == "anon":
            return None
        if role in ("trader", "other trader"):
            return self.resolvers.token(self.trader if role == "trader" else self.other)
        return self.resolvers.token(None, role)

    def filter_values(self) -> dict[str, dict[str, Any]]:
        """A value for every filter, per root, chosen so that it selects some rows."""
        first_order = self.orders[self.trader][0]
        return {
            "orders": {
                "status": ["PENDING", "PARTIAL"],
                "symbol": " aapl ",
                "traderId": str(self.trader),
                "side": "SELL",
            },
            "executionLogs": {"orderId": first_order, "action": "FILLED"},
        }


def ok(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def arrange(
    client: Client, trader: uuid.UUID, other: uuid.UUID
) -> dict[uuid.UUID, list[str]]:
    """Orders in every status, with fills and audit rows, for two traders."""
    engine = client.token(None, "service_role")
    orders: dict[uuid.UUID, list[str]] = {trader: [], other: []}

    async def submit(who: uuid.UUID, **changes: Any) -> str:
        order = {"symbol": "AAPL", "side": "BUY", "quantity": 100, "orderType": "LIMIT"}
        order |= {"price": "10.00", **changes}
        data = ok(await client.gql(SUBMIT, {"input": order}, token=client.token(who)))
        orders[who].append(data["submitOrder"]["id"])
        return orders[who][-1]

    async def fill(order_id: str, quantity: int) -> None:
        ok(await client.gql(APPROVE, {"id": order_id}, token=engine))
        ok(await client.gql(FILL, {"id": order_id, "q": quantity}, token=engine))

    await fill(await submit(trader), 40)  # PARTIAL
    await submit(trader, symbol="MSFT", orderType="MARKET", price=None, clientOrderId="c-1")
    sell = await submit(
        trader,
        side="SELL",
        price="20.00",
        stopLoss="25.00",
        takeProfit="15.00",
        expiresAt="2030-01-01T00:00:00Z",
        clientOrderId="c-2",
    )
    ok(await client.gql(CANCEL, {"id": sell}, token=client.token(trader)))
    await fill(await submit(trader, symbol="TSLA", quantity=10), 10)  # FILLED
    rejected = await submit(trader, side="SELL", quantity=5)
    ok(await client.gql(REJECT, {"id": rejected}, token=engine))
    # Two prices: an average fill price of more than cents, (10.25 + 2 x 10.00) / 3.
    uneven = await submit(trader, symbol="NVDA", quantity=3)
    ok(await client.gql(APPROVE, {"id": uneven}, token=engine))
    for quantity, price in ((1, "10.25"), (2, "10.00")):
        variables = {"id": uneven, "q": quantity, "price": price}
        ok(await client.gql(FILL_AT, variables, token=engine))
    await fill(await submit(other, quantity=50), 50)
    await submit(other, symbol="TSLA", orderType="MARKET", price=None)
    return orders


@pytest.fixture(scope="module")
async def world(cluster: pg.Cluster) -> AsyncIterator[World]:
    db = Db(cluster, await pg.create_test_database(cluster))
    try:
        resolvers_only = api_settings(db, compiled_queries=False)
        async with api_client(resolvers_only) as resolvers, api_client(api_settings(db)) as fast:
            trader, other = uuid.uuid4(), uuid.uuid4()
            orders = await arrange(resolvers, trader, other)
            yield World(resolvers, fast, trader, other, orders)
    finally:
        await pg.drop_test_database(cluster, db.name)


def answered() -> float:
    sample = REGISTRY.get_sample_value("order_api_compiled_queries_total", {"outcome": "answered"})
    return sample or 0.0


def canonical(response: httpx.Response) -> str:
    return json.dumps(response.json(), separators=(",", ":"), ensure_ascii=False)


async def both(world: World, document: str, variables: dict[str, Any], role: str) -> Any:
    """The document asked of both paths; their answers must be equal. Returns the data."""
    token = world.token(role)
    expected = await world.resolvers.post(document, variables, token=token)
    if (document, None) not in graphql_endpoint(world.compiled.app).compiled.plans:
        # A document is compiled only after the resolvers answered it once.
        await world.compiled.post(document, variables, token=token)
    before = answered()
    got = await world.compiled.post(document, variables, token=token)
    assert answered() == before + 1, f"the compiled path did not answer {document}"
    assert got.status_code == expected.status_code == 200, got.text
    assert canonical(got) == canonical(expected), diff(got.json(), expected.json())
    return ok(got.json())


async def every_page(world: World, document: str, root: str, role: str, **args: Any) -> list[str]:
    """Walk the list with ``after`` through both paths; the ids seen, in order."""
    ids: list[str] = []
    after = None
    for _ in range(50):
        page = (await both(world, document, {**args, "after": after}, role))[root]
        ids += [edge["node"]["id"] for edge in page["edges"]]
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            return ids
    raise AssertionError("more pages than rows")


# --- the differential tests ----------------------------------------------------------------


def test_every_root_field_and_filter_of_the_schema_is_covered(world: World) -> None:
    schema = graphql_endpoint(world.compiled.app).graphql_schema
    assert schema.query_type is not None
    # eventsCursor is the resolvers' alone: it reads the snapshot of its document's transaction;
    # positions too: one call of trader_positions(), which its resolver already is.
    assert set(schema.query_type.fields) == set(ROOTS) | {"eventsCursor", "positions"}
    filters = world.filter_values()
    order_filter = schema.get_type("OrderFilter")
    assert set(order_filter.fields) == set(filters["orders"])  # type: ignore[union-attr]
    log_arguments = set(schema.query_type.fields["executionLogs"].args) - set(PAGE_ARGUMENTS)
    assert log_arguments == set(filters["executionLogs"])


@pytest.mark.parametrize("role", ROLES)
async def test_orders_compiled_equals_resolvers(world: World, role: str) -> None:
    everything = (await both(world, ORDERS, {}, role))["orders"]["edges"]
    seen = {edge["node"]["id"] for edge in everything}
    # Not vacuous: each role sees what row level security lets it see, never another's.
    visible = {
        "anon": set(),
        "trader": set(world.orders[world.trader]),
        "other trader": set(world.orders[world.other]),
    }
    every = set(world.orders[world.trader]) | set(world.orders[world.other])
    assert seen == visible.get(role, every)
    for name, value in world.filter_values()["orders"].items():
        await both(world, ORDERS, {"filter": {name: value}}, role)
    assert await every_page(world, ORDERS, "orders", role, first=2) == [
        edge["node"]["id"] for edge in everything
    ]


@pytest.mark.parametrize("role", ROLES)
async def test_execution_logs_compiled_equals_resolvers(world: World, role: str) -> None:
    everything = (await both(world, LOGS, {"first": pages.MAX_PAGE}, role))["executionLogs"]
    assert bool(everything["edges"]) == (role != "anon")
    for name, value in world.filter_values()["executionLogs"].items():
        await both(world, LOGS, {name: value}, role)
    assert await every_page(world, LOGS, "executionLogs", role, first=3) == [
        edge["node"]["id"] for edge in everything["edges"]
    ]


@pytest.mark.parametrize("role", ROLES)
async def test_order_by_id_compiled_equals_resolvers(world: World, role: str) -> None:
    ids = [*world.orders[world.trader], *world.orders[world.other], str(uuid.uuid4())]
    found = [(await both(world, ORDER, {"id": order_id}, role))["order"] for order_id in ids]
    assert any(order is not None for order in found) == (role != "anon")
    assert found[-1] is None


@pytest.mark.parametrize("role", ROLES)
async def test_viewer_compiled_equals_resolvers(world: World, role: str) -> None:
    viewer = (await both(world, VIEWER, {}, role))["viewer"]
    assert viewer["role"] == ("authenticated" if "trader" in role else role)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("document", "variables"), SHAPES)
async def test_other_shapes_compiled_equal_resolvers(
    world: World, document: str, variables: dict[str, Any], role: str
) -> None:
    await both(world, document, variables, role)


async def test_a_compiled_page_is_one_statement(world: World) -> None:
    token = world.token("trader")
    # Its first call goes through the resolvers (that is how a document is learned); not the
    # test's to count, and other tests may or may not have made it already.
    assert "errors" not in await world.compiled.gql(ORDERS, {"first": 2}, token=token)
    with statements_sent(world.compiled) as statements:
        body = await world.compiled.gql(ORDERS, {"first": 2}, token=token)
    assert "errors" not in body
    data_statements = [s for s in statements if "set_config" not in s]
    assert len(data_statements) == 1, statements


# --- what is left to the resolvers ---------------------------------------------------------


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


async def test_bad_arguments_on_a_compiled_document_get_the_normal_errors(world: World) -> None:
    query = "query P($first: Int!) { orders(first: $first) { edges { node { id } } } }"
    client, token = world.compiled, world.token("trader")
    assert "errors" not in await client.gql(query, {"first": 5}, token=token)
    for bad in (0, pages.MAX_PAGE + 1):
        body = await client.gql(query, {"first": bad}, token=token)
        assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}
    body = await client.gql(query, {"first": "many"}, token=token)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_both_paths_write_money_in_cents_and_an_average_without_trailing_zeros(
    world: World,
) -> None:
    document = (
        "query Q($id: UUID!) { order(id: $id) { price averageFillPrice"
        " fills { priceAtFill commission } } }"
    )
    whole_cents, uneven = world.orders[world.trader][0], world.orders[world.trader][-1]
    order = (await both(world, document, {"id": whole_cents}, "trader"))["order"]
    assert order == {
        "price": "10.00",
        "averageFillPrice": "10.25",  # stored as 10.250000
        "fills": [{"priceAtFill": "10.25", "commission": "1.50"}],
    }
    order = (await both(world, document, {"id": uneven}, "trader"))["order"]
    assert order["averageFillPrice"] == "10.083333"
    assert [fill["commission"] for fill in order["fills"]] == ["0.00", "0.00"]


@pytest.mark.parametrize(
    "stored",
    ["0", "0.000000", "10", "10.5", "10.250000", "10.083333", "0.000001", "99999999.99"],
)
async def test_python_writes_decimals_exactly_as_the_compiled_sql_does(
    owner_conn, stored: str
) -> None:
    written_by_postgres = await owner_conn.fetchval(
        f"SELECT {DECIMAL_SQL.format(v='$1::numeric')}", Decimal(stored)
    )
    assert decimal_text(Decimal(stored)) == written_by_postgres


async def test_a_malformed_id_is_refused_naming_the_argument_at_its_location(
    world: World,
) -> None:
    literal = 'query { order(id: "123") { id } }'
    token = world.token("trader")
    assert "errors" not in await world.compiled.gql(ORDER, {"id": str(uuid.uuid4())}, token=token)
    for client in (world.resolvers, world.compiled):
        [error] = (await client.gql(literal, token=token))["errors"]
        assert error == {
            "message": "Value cannot represent a UUID: '123'",
            "extensions": {"code": "BAD_USER_INPUT", "field": "id"},
            "locations": [{"line": 1, "column": literal.index('"123"') + 1}],
        }
        [error] = (await client.gql(ORDER, {"id": "123"}, token=token))["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "id"}
        assert error["locations"] == [{"line": 1, "column": ORDER.index("$id") + 1}]
    # A literal in a nested input names its input field; a number is asked to be a string.
    document = "query { orders(filter: {traderId: 7}) { edges { cursor } } }"
    [error] = (await world.compiled.gql(document, token=token))["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "traderId"}
    assert error["message"].startswith("UUID must be a string such as")


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
    database: Db, monkeypatch: pytest.MonkeyPatch
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
        token = client.token(uuid.uuid4())
        for quantity in (1, 2, 3):
            order = {"symbol": "MSFT", "side": "BUY", "quantity": quantity, "orderType": "MARKET"}
            body = await client.gql(mutation, {"input": order}, token=token)
            assert body["data"]["submitOrder"]["status"] == "PENDING", body
    # The compiler's verdict on the document ("not compilable") was reached once.
    assert parsed == [mutation]
