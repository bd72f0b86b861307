"""Compiled submitOrder and cancelOrder (graphql/compiled/mutations.py) against the resolvers.

Two apps share one database: one with compiled mutations off (the resolvers), one that has
learned the documents. The same story is told through each, by a trader of its own, for every
outcome a caller can meet: each answer must be the same body (ids and timestamps normalized),
and the traders' orders and audit rows the same. The compiled counter proves the fast path
answered; strict mode (tests/api.py) makes any failure of its statement fail the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from app.graphql.compiled.mutations import compile_mutation
from app.orders import fields
from app.orders.lifecycle import CANCELLABLE
from tests import pg
from tests.api import Client, api_client, api_settings, graphql_endpoint
from tests.conftest import Db
from tests.pooler import pgbouncer

ORDER_FIELDS = " ".join(f.graphql for f in fields.ORDER.fields)
SUBMIT = (
    "mutation Submit($input: SubmitOrderInput!) {"
    f" submitOrder(input: $input) {{ {ORDER_FIELDS} __typename }} }}"
)
CANCEL = (
    "mutation($id: UUID!, $reason: String) {"
    " c: cancelOrder(id: $id, reason: $reason) { id state: status updatedAt } }"
)
LIMIT = {"symbol": "AAPL", "side": "BUY", "quantity": 10, "orderType": "LIMIT", "price": "10.00"}

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def normalized(value: object) -> str:
    """Ids become their order of appearance, timestamps a placeholder, request ids go."""
    text = _TIMESTAMP.sub("<ts>", json.dumps(value, sort_keys=True, default=str))
    seen: dict[str, str] = {}
    return _UUID.sub(lambda m: seen.setdefault(m.group(), f"<id{len(seen)}>"), text)


def compiled(name: str, outcome: str) -> float:
    sample = REGISTRY.get_sample_value(
        "order_api_compiled_mutations_total", {"mutation": name, "outcome": outcome}
    )
    return sample or 0.0


@dataclasses.dataclass
class Side:
    """One path: its client, its trader, and what it answered."""

    client: Client
    trader: uuid.UUID
    answers: list[tuple[int, dict[str, Any]]] = dataclasses.field(default_factory=list)

    def token(self, role: str = "trader") -> str | None:
        if role == "anon":
            return None
        if role == "trader":
            return self.client.token(self.trader)
        return self.client.token(None, role)

    async def ask(self, document: str, variables: dict[str, Any], role: str = "trader") -> Any:
        response = await self.client.post(document, variables, token=self.token(role))
        body = response.json()
        self.answers.append((response.status_code, body))
        return body


Story = Callable[[Side, uuid.UUID], Awaitable[None]]
"""Told once per side; the second argument is an order of a third trader."""


@dataclasses.dataclass
class Pair:
    resolvers: Side
    fast: Side
    stranger_order: uuid.UUID
    owner: asyncpg.Connection

    async def rows(self, trader: uuid.UUID) -> str:
        orders = await self.owner.fetch(
            "SELECT symbol, side, quantity, order_type, price, stop_loss, take_profit, status,"
            " status_reason, filled_quantity, client_order_id, expires_at, error_code"
            " FROM orders WHERE trader_id = $1 ORDER BY created_at, id",
            trader,
        )
        logs = await self.owner.fetch(
            "SELECT l.action, l.status, l.reason, l.error_code, l.retry_attempt,"
            " o.client_order_id, l.hash IS NOT NULL AS hashed,"
            " l.prev_hash IS NOT DISTINCT FROM (SELECT p.hash FROM execution_logs p"
            "   WHERE p.order_id = l.order_id AND p.seq < l.seq ORDER BY p.seq DESC LIMIT 1)"
            "   AS chained"
            " FROM execution_logs l JOIN orders o ON o.id = l.order_id"
            " WHERE l.trader_id = $1 ORDER BY l.seq",
            trader,
        )
        return normalized([[dict(r) for r in orders], [dict(r) for r in logs]])

    async def tell(self, story: Story, *, compiled_answers: int) -> None:
        """The story through both paths: the same answers, the same rows."""
        before = sum(compiled(name, "answered") for name in ("submitOrder", "cancelOrder"))
        await story(self.resolvers, self.stranger_order)
        await story(self.fast, self.stranger_order)
        after = sum(compiled(name, "answered") for name in ("submitOrder", "cancelOrder"))
        assert after - before == compiled_answers, "the compiled path did not answer each"
        assert len(self.fast.answers) == len(self.resolvers.answers)
        for got, expected in zip(self.fast.answers, self.resolvers.answers, strict=True):
            assert got[0] == expected[0], (got, expected)
            assert normalized(got[1]) == normalized(expected[1]), (got, expected)
        assert await self.rows(self.fast.trader) == await self.rows(self.resolvers.trader)


@pytest.fixture
async def pair(database: Db, owner_conn: asyncpg.Connection) -> AsyncIterator[Pair]:
    resolvers_only = api_settings(database, compiled_mutations=False)
    async with api_client(resolvers_only) as slow, api_client(api_settings(database)) as fast:
        # The fast app learns both documents from a third trader's requests (resolvers).
        stranger = uuid.uuid4()
        learned = await fast.gql(SUBMIT, {"input": LIMIT}, token=fast.token(stranger))
        order_id = learned["data"]["submitOrder"]["id"]
        other = await fast.gql(SUBMIT, {"input": LIMIT}, token=fast.token(stranger))
        assert "errors" not in await fast.gql(
            CANCEL, {"id": other["data"]["submitOrder"]["id"]}, token=fast.token(stranger)
        )
        plans = graphql_endpoint(fast.app).compiled.plans
        assert (SUBMIT, None) in plans
        assert (CANCEL, None) in plans
        yield Pair(
            Side(slow, uuid.uuid4()), Side(fast, uuid.uuid4()), uuid.UUID(order_id), owner_conn
        )


async def test_submit_success_every_field_and_idempotency(pair: Pair) -> None:
    async def story(side: Side, _: uuid.UUID) -> None:
        await side.ask(SUBMIT, {"input": LIMIT})
        full = {
            "symbol": " msft ",
            "side": "SELL",
            "quantity": 3,
            "orderType": "LIMIT",
            "price": "20.5",
            "stopLoss": "25.00",
            "takeProfit": "15",
            "expiresAt": "2031-02-03T04:05:06+02:00",
            "clientOrderId": "k-1",
        }
        await side.ask(SUBMIT, {"input": full})
        await side.ask(SUBMIT, {"input": full})  # the idempotent repeat: the same order
        await side.ask(SUBMIT, {"input": {**full, "quantity": 4}})  # a conflict
        await side.ask(SUBMIT, {"input": {**LIMIT, "orderType": "MARKET", "price": None}})

    await pair.tell(story, compiled_answers=5)


INVALID = [
    {"symbol": "not a symbol"},
    {"quantity": 0},
    {"orderType": "MARKET"},  # with a price
    {"price": None},
    {"price": "10.001"},
    {"price": "0"},
    {"price": "100000000"},
    {"stopLoss": "11.00"},
    {"takeProfit": "9.00"},
    {"side": "SELL", "stopLoss": "9.00"},
    {"stopLoss": "5.00", "takeProfit": "4.00", "price": None, "orderType": "MARKET"},
    {"expiresAt": "2001-01-01T00:00:00Z"},
    {"clientOrderId": "tab\tinside"},
    {"clientOrderId": "x" * 65},
    # Issue 18: far dates, prices past Decimal's 28 digits, lenient symbols and decimals.
    {"expiresAt": "9999-12-31T23:59:59-14:00"},  # the year 10000 in UTC
    {"expiresAt": "9999-12-31T23:59:59Z"},
    {"expiresAt": "2099-01-01T00:00:00Z"},  # beyond the horizon
    {"expiresAt": "0001-01-01T00:00:00+14:00"},  # before the year 1 in UTC
    {"price": "1000000000000000000000000000000.001"},
    {"stopLoss": "1000000000000000000000000000000.001"},
    {"takeProfit": "1000000000000000000000000000000.001"},
    {"orderType": "STOP_LIMIT", "stopPrice": "1000000000000000000000000000000.001"},
    {"symbol": "\u00df"},
    {"symbol": "\ufb00"},
    {"symbol": "aapl\n"},
]

# Values the scalars refuse: the compiled path leaves them to the resolvers (declined).
MALFORMED = [
    {"expiresAt": "10000-01-01T00:00:00Z"},
    {"expiresAt": "infinity"},
    {"price": "1_000"},
    {"price": "\u0661\u0662\u0663"},  # Arabic-Indic digits
    {"price": " 10.00"},
    {"price": "1e1"},
    {"price": 1e-05},
]


async def test_submit_each_validation_error(pair: Pair) -> None:
    async def story(side: Side, _: uuid.UUID) -> None:
        for change in INVALID:
            body = await side.ask(SUBMIT, {"input": {**LIMIT, **change}})
            [error] = body["errors"]
            assert error["extensions"]["code"] == "BAD_USER_INPUT", (change, error)

    await pair.tell(story, compiled_answers=len(INVALID))


async def test_submit_each_malformed_value_gets_the_same_error(pair: Pair) -> None:
    async def story(side: Side, _: uuid.UUID) -> None:
        for change in MALFORMED:
            body = await side.ask(SUBMIT, {"input": {**LIMIT, **change}})
            [error] = body["errors"]
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": next(iter(change))}

    await pair.tell(story, compiled_answers=0)


async def test_a_price_sent_as_a_number_is_refused_asking_for_a_string(pair: Pair) -> None:
    # A JSON number may already be a float's rounding of what the client meant.
    literal = (
        'mutation { submitOrder(input: {symbol: "AAPL", side: BUY, quantity: 1,'
        " orderType: LIMIT, price: 190.5}) { id } }"
    )

    async def story(side: Side, _: uuid.UUID) -> None:
        for number in (190.5, 190):
            body = await side.ask(SUBMIT, {"input": {**LIMIT, "price": number}})
            [error] = body["errors"]
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "price"}
            assert (
                f'must be a string such as "190.50", not the JSON value {number}'
                in (error["message"])
            )
        body = await side.ask(literal, {})
        [error] = body["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "price"}
        assert error["message"] == 'Decimal must be a string such as "190.50", not 190.5'
        assert error["locations"] == [{"line": 1, "column": literal.index("190.5") + 1}]

    await pair.tell(story, compiled_answers=0)


async def test_submit_against_the_limits_in_force(pair: Pair) -> None:
    await pair.owner.execute(
        "UPDATE order_limits SET max_quantity = 1000, max_notional = 50000, symbols = '{AAPL,MSFT}'"
    )
    cases = [
        {"quantity": 1001},
        {"symbol": "TSLA"},
        {"quantity": 1000, "price": "50.01"},  # notional
        {"symbol": "TSLA", "orderType": "MARKET"},  # a limit before a rule: the limit's error
        {"quantity": 2000, "price": "10.001"},
        {"quantity": 1000, "price": "50.00"},  # exactly at the limits
    ]

    async def story(side: Side, _: uuid.UUID) -> None:
        for change in cases:
            await side.ask(SUBMIT, {"input": {**LIMIT, **change}})

    await pair.tell(story, compiled_answers=len(cases))


async def test_submit_over_the_open_order_cap(pair: Pair) -> None:
    # Migration 010: the trigger counts, neither path can tell beforehand; both answer
    # BAD_USER_INPUT naming order_limits.max_open_orders, and a freed place is taken again.
    await pair.owner.execute("UPDATE order_limits SET max_open_orders = 2")

    async def story(side: Side, _: uuid.UUID) -> None:
        first = await side.ask(SUBMIT, {"input": LIMIT})
        await side.ask(SUBMIT, {"input": LIMIT})
        refused = await side.ask(SUBMIT, {"input": LIMIT})
        assert "order_limits.max_open_orders" in refused["errors"][0]["message"]
        await side.ask(CANCEL, {"id": first["data"]["submitOrder"]["id"]})
        await side.ask(SUBMIT, {"input": LIMIT})

    await pair.tell(story, compiled_answers=5)


async def test_submit_over_the_order_rate(pair: Pair) -> None:
    # Migration 015: the trigger refuses with OA429; both paths answer HTTP 429, RATE_LIMITED
    # with the same retryAfterSeconds, and the Retry-After header.
    await pair.owner.execute("UPDATE order_limits SET max_orders_per_minute = 2")

    async def story(side: Side, _: uuid.UUID) -> None:
        await side.ask(SUBMIT, {"input": LIMIT})
        await side.ask(SUBMIT, {"input": LIMIT})
        response = await side.client.post(SUBMIT, {"input": LIMIT}, token=side.token())
        side.answers.append((response.status_code, response.json()))
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert response.headers["Retry-After"] == str(error["extensions"]["retryAfterSeconds"])

    await pair.tell(story, compiled_answers=3)
    assert [status for status, _ in pair.fast.answers] == [200, 200, 429]


# Migration 006's terms (time in force, stop-limit): what each path takes and refuses.
TERMS = [
    {"orderType": "STOP_LIMIT", "stopPrice": "9.50", "timeInForce": "GTC"},
    {"timeInForce": "DAY"},  # the database sets expiresAt to the session close
    {"timeInForce": "IOC", "clientOrderId": "ioc-1"},
    {"timeInForce": "IOC", "clientOrderId": "ioc-1"},  # the idempotent repeat
    {"timeInForce": "FOK", "clientOrderId": "ioc-1"},  # a conflict: another time in force
    {"stopPrice": "9.50"},  # a stop price without STOP_LIMIT
    {"orderType": "STOP_LIMIT"},  # STOP_LIMIT without its stop price
    {"orderType": "STOP", "timeInForce": "IOC"},  # a stop cannot be over at once
    {"timeInForce": "FOK", "expiresAt": "2031-01-01T00:00:00Z"},
    {"timeInForce": "DAY", "expiresAt": "2031-01-01T00:00:00Z"},  # after the close: the
    # compiled path leaves the close to the trigger, then reads it for the service's words
    {"timeInForce": None},
]


async def test_submit_with_each_time_in_force_and_stop_limit(pair: Pair) -> None:
    async def story(side: Side, _: uuid.UUID) -> None:
        for change in TERMS:
            await side.ask(SUBMIT, {"input": {**LIMIT, **change}})

    await pair.tell(story, compiled_answers=len(TERMS))


@pytest.mark.parametrize("role", ["anon", "service_role", "compliance_auditor"])
async def test_submit_and_cancel_by_a_role_that_may_not(pair: Pair, role: str) -> None:
    async def story(side: Side, stranger_order: uuid.UUID) -> None:
        await side.ask(SUBMIT, {"input": LIMIT}, role)
        await side.ask(CANCEL, {"id": str(stranger_order)}, role)

    await pair.tell(story, compiled_answers=2)
    assert (
        await pair.owner.fetchval("SELECT status FROM orders WHERE id = $1", pair.stranger_order)
        == "PENDING"
    )


async def test_cancel_every_outcome(pair: Pair) -> None:
    async def story(side: Side, stranger_order: uuid.UUID) -> None:
        placed = await side.ask(SUBMIT, {"input": LIMIT})
        mine = placed["data"]["submitOrder"]["id"]
        await side.ask(CANCEL, {"id": mine, "reason": "r" * 501})  # too long
        await side.ask(CANCEL, {"id": str(stranger_order)})  # another trader's: not found
        await side.ask(CANCEL, {"id": str(uuid.uuid4())})  # missing: the same answer
        await side.ask(CANCEL, {"id": mine, "reason": "changed my mind"})
        await side.ask(CANCEL, {"id": mine})  # a terminal order
        second = await side.ask(SUBMIT, {"input": LIMIT})
        await side.ask(CANCEL, {"id": second["data"]["submitOrder"]["id"]})  # default reason

    await pair.tell(story, compiled_answers=8)
    assert (
        await pair.owner.fetchval("SELECT status FROM orders WHERE id = $1", pair.stranger_order)
        == "PENDING"
    )


async def test_variables_graphql_core_refuses_are_the_resolvers_to_report(pair: Pair) -> None:
    async def story(side: Side, _: uuid.UUID) -> None:
        await side.ask(SUBMIT, {"input": {**LIMIT, "price": "abc"}})
        await side.ask(SUBMIT, {"input": {**LIMIT, "symbol": "A\x00"}})
        await side.ask(SUBMIT, {"input": {**LIMIT, "side": "HOLD"}})
        await side.ask(CANCEL, {"id": "not-a-uuid"})

    declined = compiled("submitOrder", "declined")
    await pair.tell(story, compiled_answers=0)
    assert compiled("submitOrder", "declined") == declined + 3


def test_only_plain_order_selections_of_the_two_mutations_are_compiled() -> None:
    assert compile_mutation(SUBMIT, None) is not None
    assert compile_mutation(CANCEL, None) is not None
    for document in (
        "mutation($id: UUID!) { approveOrder(id: $id) { id } }",
        "mutation($i: SubmitOrderInput!) { submitOrder(input: $i) { id fills { id } } }",
        "mutation($i: SubmitOrderInput!) { submitOrder(input: $i) { ...o } }"
        " fragment o on Order { id }",
        "mutation($i: SubmitOrderInput!) { submitOrder(input: $i) { id @skip(if: true) } }",
        "mutation($i: SubmitOrderInput!) { a: submitOrder(input: $i) { id }"
        " b: submitOrder(input: $i) { id } }",
        "query { viewer { role } }",
    ):
        assert compile_mutation(document, None) is None, document


def test_the_cancellable_states_are_the_lifecycle_tables() -> None:
    assert (
        sorted(
            f"{status}:{approved}:{routed}"
            for status in ("PENDING", "PARTIAL")
            for approved in ("false", "true")
            for routed in ("false", "true")
        )
        == CANCELLABLE
    )


async def test_through_a_transaction_pooler_each_trader_writes_their_own(
    cluster: pg.Cluster, database: Db, owner_conn: asyncpg.Connection
) -> None:
    """PgBouncer in transaction mode, two server sessions for many traders at once: the
    autocommit statement carries its own role and claims, never anyone else's."""
    with pgbouncer(cluster.owner_url, pool_size=2) as bouncer:
        settings = api_settings(dataclasses.replace(database, pooler=bouncer), db_pool_size=6)
        assert settings.db_pooler == "transaction"
        async with api_client(settings) as client:
            first = uuid.uuid4()
            await client.gql(SUBMIT, {"input": LIMIT}, token=client.token(first))  # learned
            placed = await client.gql(SUBMIT, {"input": LIMIT}, token=client.token(first))
            await client.gql(
                CANCEL, {"id": placed["data"]["submitOrder"]["id"]}, token=client.token(first)
            )  # learned
            traders = [uuid.uuid4() for _ in range(12)]
            before = compiled("submitOrder", "answered") + compiled("cancelOrder", "answered")

            async def submit_and_cancel(trader: uuid.UUID) -> dict[str, Any]:
                token = client.token(trader)
                body = await client.gql(SUBMIT, {"input": LIMIT}, token=token)
                order = body["data"]["submitOrder"]
                assert order["traderId"] == str(trader), body
                cancelled = await client.gql(CANCEL, {"id": order["id"]}, token=token)
                assert cancelled["data"]["c"]["state"] == "CANCELLED", cancelled
                return order

            orders = await asyncio.gather(*(submit_and_cancel(t) for t in traders))
            after = compiled("submitOrder", "answered") + compiled("cancelOrder", "answered")
            assert after - before == 2 * len(traders)
    stored = await owner_conn.fetch(
        "SELECT id, trader_id, status::text FROM orders WHERE id = ANY($1::uuid[])",
        [o["id"] for o in orders],
    )
    assert {(str(r["id"]), str(r["trader_id"]), r["status"]) for r in stored} == {
        (o["id"], o["traderId"], "CANCELLED") for o in orders
    }
