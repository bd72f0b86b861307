"""Traders are isolated from each other through the API, by row level security.

Most tests read one shared world (module scope) of two traders' orders, fills and audit rows;
the tests that try to change it assert that nothing changed. The reading tests run twice: with
the planner hints of app.orders.queries and without them, where only the policies isolate.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event

from app.orders.queries import OWN_ROWS_HINT
from tests import pg
from tests.api import Client, api_client, api_settings, statements_sent
from tests.conftest import Db

SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"
APPROVE = "mutation($id: UUID!) { approveOrder(id: $id) { id } }"
FILL = (
    "mutation($id: UUID!, $q: Int!) { recordFill(input: {orderId: $id, quantityFilled: $q,"
    ' priceAtFill: "10.00", venue: "PAPER"}) { id } }'
)
CANCEL = "mutation($id: UUID!) { cancelOrder(id: $id) { id status } }"
ORDERS = """
query($filter: OrderFilter) {
  orders(first: 100, filter: $filter) {
    edges { node {
      id traderId
      fills { id orderId }
      executionLogs { id orderId traderId action }
    } }
  }
}
"""
ORDER = """
query($id: UUID!) {
  order(id: $id) { id traderId fills { id } executionLogs { id traderId } }
}
"""
LOGS = """
query($orderId: UUID) {
  executionLogs(first: 100, orderId: $orderId) { edges { node { id orderId traderId action } } }
}
"""
HINT = OWN_ROWS_HINT


def ok(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def submit(client: Client, token: str, **changes: Any) -> str:
    order = {"symbol": "AAPL", "side": "BUY", "quantity": 100, "orderType": "LIMIT"}
    order["price"] = "10.00"
    order.update(changes)
    order_id: str = ok(await client.gql(SUBMIT, {"input": order}, token=token))["submitOrder"]["id"]
    return order_id


@dataclass
class World:
    client: Client
    db: Db
    a: uuid.UUID
    b: uuid.UUID
    a_orders: set[str]
    b_orders: set[str]
    b_open: str
    """One of B's orders that is PENDING, so that a successful cancel would show."""

    def token(self, who: uuid.UUID | None, role: str = "authenticated") -> str:
        return self.client.token(who, role)

    def orders_of(self, who: uuid.UUID) -> set[str]:
        return self.a_orders if who == self.a else self.b_orders


@asynccontextmanager
async def arranged_world(db: Any) -> AsyncIterator[World]:
    """Two traders' orders, one of each filled, served by the API on ``db`` (any database with
    ``owner_url`` and ``api_url``: also the Supabase-like one, tests/test_supabase.py)."""
    async with api_client(api_settings(db)) as client:
        a, b = uuid.uuid4(), uuid.uuid4()
        ta, tb = client.token(a), client.token(b)
        engine = client.token(None, "service_role")
        a1 = await submit(client, ta)
        a2 = await submit(client, ta, symbol="MSFT", orderType="MARKET", price=None)
        a3 = await submit(client, ta, quantity=10)
        b1 = await submit(client, tb, quantity=50)
        b2 = await submit(client, tb, symbol="TSLA", orderType="MARKET", price=None)
        for order_id, quantity in ((a1, 40), (b1, 50)):
            ok(await client.gql(APPROVE, {"id": order_id}, token=engine))
            ok(await client.gql(FILL, {"id": order_id, "q": quantity}, token=engine))
        yield World(client, db, a, b, {a1, a2, a3}, {b1, b2}, b_open=b2)


@pytest.fixture(scope="module")
async def world(cluster: pg.Cluster) -> AsyncIterator[World]:
    db = Db(cluster, await pg.create_test_database(cluster))
    try:
        async with arranged_world(db) as arranged:
            yield arranged
    finally:
        await pg.drop_test_database(cluster, db.name)


@pytest.fixture(params=[True, False], ids=["with planner hints", "rls alone"])
def hints(request: pytest.FixtureRequest, world: World) -> Any:
    with statements_sent(world.client) as sent:
        if request.param:
            yield
        else:
            with without_planner_hints(world.client):
                yield
    # The hint really is in the page queries (a fetch by id never had one), and "rls alone"
    # really sent none.
    pages = [statement for statement in sent if " DESC, id DESC LIMIT" in statement]
    if request.param:
        assert all(HINT in statement for statement in pages), pages
    else:
        assert not any(HINT in statement for statement in sent), sent


@contextmanager
def without_planner_hints(client: Client) -> Iterator[None]:
    """Every statement the app sends goes out with the planner hint replaced by ``true``:
    the same statement, with row level security alone deciding which rows it sees."""

    def strip(statement: str) -> str:
        return statement.replace(HINT, "true")

    def rewrite(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> Any:
        return strip(statement), params

    database = client.app.state.database
    engine = database.engine.sync_engine
    read_json = database.read_json

    async def stripped_read_json(claims: Any, sql: str, args: Any) -> str:
        result: str = await read_json(claims, strip(sql), args)
        return result

    # First in line, so that statements_sent records what is actually sent.
    event.listen(engine, "before_cursor_execute", rewrite, retval=True, insert=True)
    database.read_json = stripped_read_json
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", rewrite)
        database.read_json = read_json


@pytest.mark.usefixtures("hints")
@pytest.mark.parametrize("who", ["a", "b"])
async def test_a_trader_lists_only_their_own_orders_fills_and_audit_rows(
    world: World, who: str
) -> None:
    trader = getattr(world, who)
    edges = ok(await world.client.gql(ORDERS, token=world.token(trader)))["orders"]["edges"]
    nodes = [edge["node"] for edge in edges]
    assert {node["id"] for node in nodes} == world.orders_of(trader)
    assert {node["traderId"] for node in nodes} == {str(trader)}
    fills = [fill for node in nodes for fill in node["fills"]]
    assert len(fills) == 1
    assert fills[0]["orderId"] in world.orders_of(trader)
    logs = [log for node in nodes for log in node["executionLogs"]]
    assert {log["traderId"] for log in logs} == {str(trader)}
    assert {log["orderId"] for log in logs} == world.orders_of(trader)


@pytest.mark.usefixtures("hints")
async def test_a_trader_fetching_another_traders_order_gets_null(world: World) -> None:
    token = world.token(world.a)
    for order_id in world.b_orders:
        assert ok(await world.client.gql(ORDER, {"id": order_id}, token=token)) == {"order": None}
    own = next(iter(world.a_orders))
    fetched = ok(await world.client.gql(ORDER, {"id": own}, token=token))["order"]
    assert fetched["id"] == own
    assert {log["traderId"] for log in fetched["executionLogs"]} == {str(world.a)}


@pytest.mark.usefixtures("hints")
async def test_a_trader_sees_only_their_own_execution_logs(world: World) -> None:
    token = world.token(world.a)
    edges = ok(await world.client.gql(LOGS, token=token))["executionLogs"]["edges"]
    assert {edge["node"]["orderId"] for edge in edges} == world.a_orders
    assert {edge["node"]["traderId"] for edge in edges} == {str(world.a)}
    for order_id in world.b_orders:
        body = await world.client.gql(LOGS, {"orderId": order_id}, token=token)
        assert ok(body)["executionLogs"]["edges"] == []


@pytest.mark.usefixtures("hints")
async def test_filtering_on_another_trader_returns_nothing(world: World) -> None:
    body = await world.client.gql(
        ORDERS, {"filter": {"traderId": str(world.b)}}, token=world.token(world.a)
    )
    assert ok(body)["orders"]["edges"] == []


async def order_state(world: World, order_id: str) -> tuple[str, int, int]:
    conn = await asyncpg.connect(world.db.dsn())
    try:
        row = await conn.fetchrow(
            "SELECT o.status::text AS status, o.filled_quantity,"
            " (SELECT count(*) FROM execution_logs l WHERE l.order_id = o.id) AS logs"
            " FROM orders o WHERE o.id = $1",
            uuid.UUID(order_id),
        )
        assert row is not None
        return row["status"], row["filled_quantity"], row["logs"]
    finally:
        await conn.close()


async def test_cancelling_another_traders_order_is_not_found_and_changes_nothing(
    world: World,
) -> None:
    before = await order_state(world, world.b_open)
    body = await world.client.gql(CANCEL, {"id": world.b_open}, token=world.token(world.a))
    assert body["data"] is None
    assert codes(body) == ["NOT_FOUND"]
    nowhere = str(uuid.uuid4())
    missing = await world.client.gql(CANCEL, {"id": nowhere}, token=world.token(world.a))
    # "Not yours" reads exactly like "does not exist".
    assert codes(missing) == ["NOT_FOUND"]
    assert body["errors"][0]["message"].replace(world.b_open, "ID") == missing["errors"][0][
        "message"
    ].replace(nowhere, "ID")
    assert await order_state(world, world.b_open) == before
    assert before[0] == "PENDING"


@pytest.mark.parametrize("role", ["service_role", "compliance_auditor"])
async def test_service_role_and_compliance_auditor_see_every_trader(
    world: World, role: str
) -> None:
    token = world.token(None, role)
    client = world.client
    nodes = [e["node"] for e in ok(await client.gql(ORDERS, token=token))["orders"]["edges"]]
    assert {node["id"] for node in nodes} == world.a_orders | world.b_orders
    assert sum(len(node["fills"]) for node in nodes) == 2
    logs = ok(await client.gql(LOGS, token=token))["executionLogs"]["edges"]
    assert {edge["node"]["traderId"] for edge in logs} == {str(world.a), str(world.b)}
    only_b = await client.gql(ORDERS, {"filter": {"traderId": str(world.b)}}, token=token)
    assert {edge["node"]["id"] for edge in ok(only_b)["orders"]["edges"]} == world.b_orders
    fetched = ok(await client.gql(ORDER, {"id": world.b_open}, token=token))["order"]
    assert fetched["traderId"] == str(world.b)
    viewer = ok(await client.gql("{ viewer { traderId role } }", token=token))["viewer"]
    assert viewer == {"traderId": None, "role": role}


async def test_compliance_auditor_cannot_change_anything(world: World) -> None:
    token = world.token(None, "compliance_auditor")
    before = await order_state(world, world.b_open)
    attempts: list[tuple[str, dict[str, Any]]] = [
        (
            SUBMIT,
            {"input": {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}},
        ),
        (CANCEL, {"id": world.b_open}),
        (APPROVE, {"id": world.b_open}),
        (FILL, {"id": world.b_open, "q": 1}),
        (
            'mutation($id: UUID!) { rejectOrder(id: $id, reason: "audit") { id } }',
            {"id": world.b_open},
        ),
    ]
    for query, variables in attempts:
        body = await world.client.gql(query, variables, token=token)
        assert body["data"] is None, body
        assert codes(body) == ["FORBIDDEN"], body
    assert await order_state(world, world.b_open) == before


async def test_anon_sees_no_orders_fills_or_logs(world: World) -> None:
    client = world.client
    assert ok(await client.gql(ORDERS))["orders"]["edges"] == []
    assert ok(await client.gql(LOGS))["executionLogs"]["edges"] == []
    for order_id in world.a_orders | world.b_orders:
        assert ok(await client.gql(ORDER, {"id": order_id})) == {"order": None}


async def test_pooled_connections_never_leak_one_callers_identity_to_another(
    database: Db,
) -> None:
    async with api_client(api_settings(database, db_pool_size=2)) as client:
        engine = client.app.state.database.engine
        assert engine.pool.size() == 2
        connections: list[Any] = []
        event.listen(engine.sync_engine, "checkout", lambda dbapi, *_: connections.append(dbapi))
        traders = [uuid.uuid4() for _ in range(4)]
        tokens = {trader: client.token(trader) for trader in traders}
        owned: dict[uuid.UUID, set[str]] = {trader: set() for trader in traders}
        for index, trader in enumerate(traders):
            for _ in range(index + 1):
                owned[trader].add(await submit(client, tokens[trader]))

        query = "{ viewer { traderId role } orders { edges { node { id traderId } } } }"

        async def ask(trader: uuid.UUID) -> tuple[uuid.UUID, dict[str, Any]]:
            return trader, await client.gql(query, token=tokens[trader])

        answers = await asyncio.gather(*(ask(traders[i % 4]) for i in range(48)))
    assert len(answers) == 48
    # 48 queries and 10 submits, all served by the same two pooled connections.
    assert len(connections) >= 58
    assert len({id(connection) for connection in connections}) <= 2
    for trader, body in answers:
        data = ok(body)
        assert data["viewer"] == {"traderId": str(trader), "role": "authenticated"}
        nodes = [edge["node"] for edge in data["orders"]["edges"]]
        assert {node["id"] for node in nodes} == owned[trader]
        assert {node["traderId"] for node in nodes} == {str(trader)}


@pytest.mark.parametrize("compiled", [False, True], ids=["resolvers", "compiled"])
async def test_nested_fills_and_logs_cost_the_same_statements_for_5_or_50_orders(
    database: Db, owner_conn: asyncpg.Connection, compiled: bool
) -> None:
    trader = uuid.uuid4()
    await owner_conn.execute(
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
        " SELECT $1, 'AAPL', 'BUY', 10, 'LIMIT', 10 FROM generate_series(1, 50)",
        trader,
    )
    await owner_conn.execute("UPDATE orders SET approved_at = now()")
    await owner_conn.execute(
        "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
        " SELECT id, 4, 10, 'PAPER' FROM orders"
    )
    query = """
    query($first: Int!) {
      orders(first: $first) {
        edges { node { id fills { id quantityFilled } executionLogs { id action } } }
      }
    }
    """
    counts: dict[int, int] = {}
    async with api_client(api_settings(database, compiled_queries=compiled)) as client:
        token = client.token(trader)
        # Once first: a document is compiled only after the resolvers answered it once.
        ok(await client.gql(query, {"first": 1}, token=token))
        for first in (5, 50):
            with statements_sent(client) as sent:
                body = await client.gql(query, {"first": first}, token=token)
            nodes = [edge["node"] for edge in ok(body)["orders"]["edges"]]
            assert len(nodes) == first
            assert all(len(node["fills"]) == 1 for node in nodes)
            assert all(
                [log["action"] for log in node["executionLogs"]]
                == ["SUBMITTED", "APPROVED", "FILLED"]
                for node in nodes
            )
            counts[first] = len(sent)
    assert counts[5] == counts[50], counts
    # set_config, then the page and one statement per nested list; or one statement compiled.
    assert counts[50] == (2 if compiled else 4), counts
