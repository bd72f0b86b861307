"""Submitting, cancelling and executing orders through the API; errors, limits, pagination."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from app.db import migrations
from app.orders import queries, service
from tests import pg
from tests.api import Client, api_client, api_settings
from tests.conftest import Db
from tests.sql import as_role

DROP = object()
FUTURE = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0).isoformat()

SUBMIT = """
mutation($input: SubmitOrderInput!) {
  submitOrder(input: $input) {
    id symbol side quantity orderType price stopLoss takeProfit expiresAt clientOrderId status
  }
}
"""
CANCEL = "mutation($id: UUID!) { cancelOrder(id: $id) { id status filledQuantity } }"
APPROVE = "mutation($id: UUID!) { approveOrder(id: $id) { id status } }"
REJECT = (
    'mutation($id: UUID!) { rejectOrder(id: $id, reason: "risk", errorCode: "R1") { id status } }'
)
FILL = (
    "mutation($id: UUID!, $q: Int!) { recordFill(input: {orderId: $id, quantityFilled: $q,"
    ' priceAtFill: "150.00", venue: "PAPER"}) { id quantityFilled } }'
)
AUDIT = (
    "query($id: UUID!) { order(id: $id) { status filledQuantity executionLogs { action status } } }"
)


def order_input(**changes: Any) -> dict[str, Any]:
    """A valid LIMIT BUY with every optional field; ``DROP`` removes a field."""
    order: dict[str, Any] = {
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 10,
        "orderType": "LIMIT",
        "price": "150.00",
        "stopLoss": "140.00",
        "takeProfit": "160.00",
        "expiresAt": FUTURE,
        "clientOrderId": "order-1",
    }
    for name, value in changes.items():
        if value is DROP:
            order.pop(name)
        else:
            order[name] = value
    return order


def ok(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def submit(client: Client, token: str, **changes: Any) -> str:
    body = await client.gql(SUBMIT, {"input": order_input(**changes)}, token=token)
    order_id: str = ok(body)["submitOrder"]["id"]
    return order_id


# --- validation: one app and database for the whole table ---------------------------------------


@dataclass
class Shared:
    client: Client
    owner: asyncpg.Connection

    async def orders_of(self, trader: uuid.UUID) -> int:
        count: int = await self.owner.fetchval(
            "SELECT count(*) FROM orders WHERE trader_id = $1", trader
        )
        return count


@pytest.fixture(scope="module")
async def shared(cluster: pg.Cluster) -> AsyncIterator[Shared]:
    db = Db(cluster, await pg.create_test_database(cluster))
    try:
        owner = await asyncpg.connect(db.dsn())
        try:
            # The field bounds alone: no limit on the order value here.
            await owner.execute("UPDATE order_limits SET max_quantity = 1000, max_notional = NULL")
            async with api_client(api_settings(db)) as client:
                yield Shared(client, owner)
        finally:
            await owner.close()
    finally:
        await pg.drop_test_database(cluster, db.name)


SELL = {"side": "SELL", "stopLoss": "160.00", "takeProfit": "140.00"}
MARKET = {"orderType": "MARKET", "price": DROP}

INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "symbol empty": ({"symbol": ""}, "symbol"),
    "symbol blank": ({"symbol": "   "}, "symbol"),
    "symbol of 11 characters": ({"symbol": "ABCDEFGHIJK"}, "symbol"),
    "symbol with a space": ({"symbol": "AA PL"}, "symbol"),
    "symbol with a dollar": ({"symbol": "AA$L"}, "symbol"),
    "symbol not ascii": ({"symbol": "ÄPPL"}, "symbol"),
    "quantity 0": ({"quantity": 0}, "quantity"),
    "quantity negative": ({"quantity": -5}, "quantity"),
    "quantity above the maximum": ({"quantity": 1001}, "quantity"),
    "quantity beyond 32 bits": ({"quantity": 2**31}, "quantity"),
    "quantity not an integer": ({"quantity": 1.5}, "quantity"),
    "side not in the enum": ({"side": "HOLD"}, "side"),
    "orderType not in the enum": ({"orderType": "ICEBERG"}, "orderType"),
    "LIMIT without price": ({"price": DROP}, "price"),
    "LIMIT with null price": ({"price": None}, "price"),
    "STOP without price": ({"orderType": "STOP", "price": DROP}, "price"),
    "MARKET with price": ({"orderType": "MARKET"}, "price"),
    "price 0": ({"price": "0"}, "price"),
    "price negative": ({"price": "-1.00"}, "price"),
    "price with 3 decimals": ({"price": "150.001"}, "price"),
    "price above 99999999.99": ({"price": "100000000.00"}, "price"),
    "price NaN": ({"price": "NaN"}, "price"),
    "price Infinity": ({"price": "Infinity"}, "price"),
    "price abc": ({"price": "abc"}, "price"),
    "stopLoss 0": ({"stopLoss": "0"}, "stopLoss"),
    "stopLoss with 3 decimals": ({"stopLoss": "140.001"}, "stopLoss"),
    "takeProfit abc": ({"takeProfit": "abc"}, "takeProfit"),
    "BUY stopLoss above price": ({"stopLoss": "155.00"}, "stopLoss"),
    "BUY stopLoss at price": ({"stopLoss": "150.00"}, "stopLoss"),
    "BUY takeProfit below price": ({"takeProfit": "145.00"}, "takeProfit"),
    "BUY takeProfit at price": ({"takeProfit": "150.00"}, "takeProfit"),
    "SELL stopLoss below price": ({**SELL, "stopLoss": "145.00"}, "stopLoss"),
    "SELL takeProfit above price": ({**SELL, "takeProfit": "155.00"}, "takeProfit"),
    "MARKET BUY stopLoss above takeProfit": (
        {**MARKET, "stopLoss": "160.00", "takeProfit": "140.00"},
        "stopLoss",
    ),
    "MARKET SELL stopLoss below takeProfit": (
        {**MARKET, "side": "SELL", "stopLoss": "140.00", "takeProfit": "160.00"},
        "stopLoss",
    ),
    "expiresAt in the past": ({"expiresAt": "2020-01-01T00:00:00Z"}, "expiresAt"),
    "expiresAt without offset": ({"expiresAt": "2099-01-01T00:00:00"}, "expiresAt"),
    "expiresAt not a timestamp": ({"expiresAt": "tomorrow"}, "expiresAt"),
    "clientOrderId of 65 characters": ({"clientOrderId": "c" * 65}, "clientOrderId"),
    "clientOrderId empty": ({"clientOrderId": ""}, "clientOrderId"),
    "clientOrderId with a control character": ({"clientOrderId": "order\x07"}, "clientOrderId"),
    "clientOrderId with a newline": ({"clientOrderId": "order\n1"}, "clientOrderId"),
    "clientOrderId not ascii": ({"clientOrderId": "ordre-é"}, "clientOrderId"),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_submit_order_refuses_invalid_input_naming_the_field_and_writes_nothing(
    shared: Shared, case: str
) -> None:
    changes, field = INVALID[case]
    trader = uuid.uuid4()
    body = await shared.client.gql(
        SUBMIT, {"input": order_input(**changes)}, token=shared.client.token(trader)
    )
    assert body["data"] is None, body
    assert [(e["extensions"]["code"], e["extensions"].get("field")) for e in body["errors"]] == [
        ("BAD_USER_INPUT", field)
    ], body
    assert await shared.orders_of(trader) == 0


VALID: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "LIMIT BUY with every field": ({}, {"symbol": "AAPL", "price": "150.00"}),
    "lower case symbol is upper-cased": ({"symbol": "brk.b"}, {"symbol": "BRK.B"}),
    "symbol of 10 characters with a dash": ({"symbol": "ABCDE-1234"}, {"symbol": "ABCDE-1234"}),
    "quantity at the maximum": ({"quantity": 1000}, {"quantity": 1000}),
    "quantity 1": ({"quantity": 1}, {"quantity": 1}),
    "SELL with protective prices mirrored": (SELL, {"side": "SELL", "stopLoss": "160.00"}),
    "STOP with a price": ({"orderType": "STOP"}, {"orderType": "STOP", "price": "150.00"}),
    "MARKET without prices": (
        {**MARKET, "stopLoss": DROP, "takeProfit": DROP},
        {"price": None, "stopLoss": None, "takeProfit": None},
    ),
    "MARKET with protective prices": ({**MARKET}, {"price": None, "stopLoss": "140.00"}),
    "price at the maximum": (
        {"price": "99999999.99", "takeProfit": DROP},
        {"price": "99999999.99"},
    ),
    "price with a trailing zero decimal": ({"price": "150.100"}, {"price": "150.10"}),
    "price without decimals": ({"price": "151"}, {"price": "151.00"}),
    "no optional fields": (
        {"stopLoss": DROP, "takeProfit": DROP, "expiresAt": DROP, "clientOrderId": DROP},
        {"stopLoss": None, "expiresAt": None, "clientOrderId": None},
    ),
    "expiresAt with another offset": (
        {"expiresAt": "2031-01-01T02:00:00+02:00"},
        {"expiresAt": "2031-01-01T00:00:00+00:00"},
    ),
    "clientOrderId of 64 printable characters": (
        {"clientOrderId": "~ !" + "c" * 61},
        {"clientOrderId": "~ !" + "c" * 61},
    ),
}


@pytest.mark.parametrize("case", list(VALID))
async def test_submit_order_accepts_the_same_builder_with_valid_values(
    shared: Shared, case: str
) -> None:
    changes, expected = VALID[case]
    trader = uuid.uuid4()
    body = await shared.client.gql(
        SUBMIT, {"input": order_input(**changes)}, token=shared.client.token(trader)
    )
    order = ok(body)["submitOrder"]
    if "expiresAt" in expected and expected["expiresAt"] is not None:
        assert datetime.fromisoformat(order.pop("expiresAt")) == datetime.fromisoformat(
            expected.pop("expiresAt")
        )
        expected = {key: value for key, value in expected.items() if key != "expiresAt"}
    assert {key: order[key] for key in expected} == expected
    assert order["status"] == "PENDING"
    assert await shared.orders_of(trader) == 1


FILL_INPUT = "mutation($input: RecordFillInput!) { recordFill(input: $input) { id } }"

OTHER_INVALID: dict[str, tuple[str, str, dict[str, Any], str]] = {
    # case: (query, role, variables beyond the order id, field)
    "recordFill quantityFilled 0": (
        FILL_INPUT,
        "service_role",
        {"quantityFilled": 0},
        "quantityFilled",
    ),
    "recordFill priceAtFill 0": (FILL_INPUT, "service_role", {"priceAtFill": "0"}, "priceAtFill"),
    "recordFill priceAtFill with 3 decimals": (
        FILL_INPUT,
        "service_role",
        {"priceAtFill": "1.001"},
        "priceAtFill",
    ),
    "recordFill priceAtFill abc": (
        FILL_INPUT,
        "service_role",
        {"priceAtFill": "abc"},
        "priceAtFill",
    ),
    "recordFill venue blank": (FILL_INPUT, "service_role", {"venue": "  "}, "venue"),
    "recordFill venue of 51 characters": (FILL_INPUT, "service_role", {"venue": "v" * 51}, "venue"),
    "recordFill commission negative": (
        FILL_INPUT,
        "service_role",
        {"commission": "-0.01"},
        "commission",
    ),
    "recordFill timestamp in the future": (
        FILL_INPUT,
        "service_role",
        {"timestamp": "2999-01-01T00:00:00Z"},
        "timestamp",
    ),
    "recordFill timestamp without offset": (
        FILL_INPUT,
        "service_role",
        {"timestamp": "2020-01-01T00:00:00"},
        "timestamp",
    ),
    "recordFill orderId not a uuid": (FILL_INPUT, "service_role", {"orderId": "nope"}, "orderId"),
    "rejectOrder reason blank": (
        'mutation($id: UUID!) { rejectOrder(id: $id, reason: "  ") { id } }',
        "service_role",
        {},
        "reason",
    ),
    "rejectOrder errorCode of 51 characters": (
        'mutation($id: UUID!, $code: String) { rejectOrder(id: $id, reason: "r",'
        " errorCode: $code) { id } }",
        "service_role",
        {"code": "E" * 51},
        "errorCode",
    ),
    "cancelOrder reason of 501 characters": (
        "mutation($id: UUID!, $reason: String) { cancelOrder(id: $id, reason: $reason) { id } }",
        "authenticated",
        {"reason": "r" * 501},
        "reason",
    ),
}


@pytest.mark.parametrize("case", list(OTHER_INVALID))
async def test_other_mutations_refuse_invalid_input_naming_the_field_and_change_nothing(
    shared: Shared, case: str
) -> None:
    query, role, changes, field = OTHER_INVALID[case]
    client = shared.client
    trader = uuid.uuid4()
    engine = client.token(None, "service_role")
    order_id = await submit(client, client.token(trader))
    ok(await client.gql(APPROVE, {"id": order_id}, token=engine))
    if query is FILL_INPUT:
        fill = {"orderId": order_id, "quantityFilled": 1, "priceAtFill": "1.00", "venue": "P"}
        variables: dict[str, Any] = {"input": {**fill, **changes}}
    else:
        variables = {"id": order_id, **changes}
    token = engine if role == "service_role" else client.token(trader)
    body = await client.gql(query, variables, token=token)
    assert body["data"] is None, body
    assert [(e["extensions"]["code"], e["extensions"].get("field")) for e in body["errors"]] == [
        ("BAD_USER_INPUT", field)
    ], body
    assert await status_in_db(shared.owner, order_id) == ("PENDING", 0, 2)


async def test_a_negative_commission_is_refused_with_a_message_that_allows_zero(
    shared: Shared,
) -> None:
    client = shared.client
    fill = {"orderId": str(uuid.uuid4()), "quantityFilled": 1, "priceAtFill": "1.00"}
    body = await client.gql(
        FILL_INPUT,
        {"input": {**fill, "venue": "P", "commission": "-1"}},
        token=client.token(None, "service_role"),
    )
    assert [error["message"] for error in body["errors"]] == ["commission must be at least 0"]


async def test_a_fill_may_carry_no_commission_and_a_past_venue_timestamp(shared: Shared) -> None:
    # The valid counterpart of the table above.
    client = shared.client
    engine = client.token(None, "service_role")
    order_id = await submit(client, client.token(uuid.uuid4()))
    ok(await client.gql(APPROVE, {"id": order_id}, token=engine))
    fill = {"orderId": order_id, "quantityFilled": 1, "priceAtFill": "1.00", "venue": "P"}
    ok(await client.gql(FILL_INPUT, {"input": {**fill, "commission": "0"}}, token=engine))
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    ok(await client.gql(FILL_INPUT, {"input": {**fill, "timestamp": past}}, token=engine))
    assert await status_in_db(shared.owner, order_id) == ("PARTIAL", 2, 4)


# --- idempotency -----------------------------------------------------------------------------


async def test_resubmitting_the_same_order_returns_it_without_writing_again(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        token = client.token(uuid.uuid4())
        first = await submit(client, token, clientOrderId="same-1")
        # The same content spelled differently is the same order.
        again = await submit(
            client,
            token,
            clientOrderId="same-1",
            symbol=" aapl",
            price="150",
            expiresAt=datetime.fromisoformat(FUTURE)
            .astimezone(timezone(timedelta(hours=-5)))
            .isoformat(),
        )
    assert again == first
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 1
    assert await owner_conn.fetchval("SELECT count(*) FROM execution_logs") == 1


async def test_reusing_a_client_order_id_with_other_content_is_a_conflict(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        trader, other = uuid.uuid4(), uuid.uuid4()
        first = await submit(client, client.token(trader), clientOrderId="dup")
        for changes in ({"quantity": 11}, {"side": "SELL", **SELL}, {"expiresAt": DROP}):
            body = await client.gql(
                SUBMIT,
                {"input": order_input(clientOrderId="dup", **changes)},
                token=client.token(trader),
            )
            assert body["data"] is None
            assert codes(body) == ["CONFLICT"], (changes, body)
        # The key is unique per trader: another trader may use it.
        theirs = await submit(client, client.token(other), clientOrderId="dup")
    assert theirs != first
    rows = await owner_conn.fetch("SELECT trader_id, quantity FROM orders ORDER BY created_at")
    assert [(row["trader_id"], row["quantity"]) for row in rows] == [(trader, 10), (other, 10)]


async def test_concurrent_identical_submits_create_one_order(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        token = client.token(uuid.uuid4())
        bodies = await asyncio.gather(
            *(
                client.gql(SUBMIT, {"input": order_input(clientOrderId="race")}, token=token)
                for _ in range(5)
            )
        )
    ids = {ok(body)["submitOrder"]["id"] for body in bodies}
    assert len(ids) == 1
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 1
    assert await owner_conn.fetchval("SELECT id::text FROM orders") == ids.pop()


async def test_a_request_with_any_error_writes_nothing_of_its_other_mutations(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    two = """
    mutation($good: SubmitOrderInput!, $bad: SubmitOrderInput!) {
      good: submitOrder(input: $good) { id }
      bad: submitOrder(input: $bad) { id }
    }
    """
    async with api_client(api_settings(database)) as client:
        token = client.token(uuid.uuid4())
        variables = {
            "good": order_input(clientOrderId="good"),
            "bad": order_input(clientOrderId="bad", quantity=0),
        }
        body = await client.gql(two, variables, token=token)
        assert body["data"] is None
        assert codes(body) == ["BAD_USER_INPUT"]
        assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 0
        # Both valid: both written, in one transaction.
        variables["bad"] = order_input(clientOrderId="fine")
        assert set(ok(await client.gql(two, variables, token=token))) == {"good", "bad"}
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 2


# --- cancel ----------------------------------------------------------------------------------


async def status_in_db(owner: asyncpg.Connection, order_id: str) -> tuple[str, int, int]:
    row = await owner.fetchrow(
        "SELECT status::text AS status, filled_quantity,"
        " (SELECT count(*) FROM execution_logs l WHERE l.order_id = o.id) AS logs"
        " FROM orders o WHERE id = $1",
        uuid.UUID(order_id),
    )
    assert row is not None
    return row["status"], row["filled_quantity"], row["logs"]


async def test_a_trader_cancels_a_pending_or_partially_filled_order(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        token, engine = client.token(uuid.uuid4()), client.token(None, "service_role")
        pending = await submit(client, token, clientOrderId="p")
        partial = await submit(client, token, clientOrderId="q")
        ok(await client.gql(APPROVE, {"id": partial}, token=engine))
        ok(await client.gql(FILL, {"id": partial, "q": 4}, token=engine))
        cancelled = ok(await client.gql(CANCEL, {"id": pending}, token=token))["cancelOrder"]
        assert cancelled == {"id": pending, "status": "CANCELLED", "filledQuantity": 0}
        cancelled = ok(await client.gql(CANCEL, {"id": partial}, token=token))["cancelOrder"]
        assert cancelled == {"id": partial, "status": "CANCELLED", "filledQuantity": 4}
    assert (await status_in_db(owner_conn, pending))[0] == "CANCELLED"
    assert (await status_in_db(owner_conn, partial))[:2] == ("CANCELLED", 4)


async def test_cancelling_a_finished_order_is_a_conflict_and_changes_nothing(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        token, engine = client.token(uuid.uuid4()), client.token(None, "service_role")
        filled = await submit(client, token, clientOrderId="f")
        ok(await client.gql(APPROVE, {"id": filled}, token=engine))
        ok(await client.gql(FILL, {"id": filled, "q": 10}, token=engine))
        cancelled = await submit(client, token, clientOrderId="c")
        ok(await client.gql(CANCEL, {"id": cancelled}, token=token))
        rejected = await submit(client, token, clientOrderId="r")
        ok(await client.gql(REJECT, {"id": rejected}, token=engine))
        for order_id, status in (
            (filled, "FILLED"),
            (cancelled, "CANCELLED"),
            (rejected, "REJECTED"),
        ):
            before = await status_in_db(owner_conn, order_id)
            assert before[0] == status
            body = await client.gql(CANCEL, {"id": order_id}, token=token)
            assert body["data"] is None
            assert codes(body) == ["CONFLICT"], (status, body)
            assert await status_in_db(owner_conn, order_id) == before


async def test_cancelling_another_traders_order_is_not_found(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        theirs = await submit(client, client.token(uuid.uuid4()))
        body = await client.gql(CANCEL, {"id": theirs}, token=client.token(uuid.uuid4()))
    assert body["data"] is None
    assert codes(body) == ["NOT_FOUND"]
    assert (await status_in_db(owner_conn, theirs))[0] == "PENDING"


# --- the execution engine's mutations -----------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "code"),
    [
        ("authenticated", "FORBIDDEN"),
        ("compliance_auditor", "FORBIDDEN"),
        ("anon", "UNAUTHENTICATED"),
    ],
)
async def test_only_service_role_may_approve_fill_or_reject(
    database: Db, owner_conn: asyncpg.Connection, role: str, code: str
) -> None:
    async with api_client(api_settings(database)) as client:
        trader = uuid.uuid4()
        order_id = await submit(client, client.token(trader))
        approved = await submit(client, client.token(trader), clientOrderId="approved")
        ok(await client.gql(APPROVE, {"id": approved}, token=client.token(None, "service_role")))
        before = [await status_in_db(owner_conn, o) for o in (order_id, approved)]
        token = None if role == "anon" else client.token(trader, role)
        for query, target in ((APPROVE, order_id), (REJECT, order_id), (FILL, approved)):
            variables = {"id": target, "q": 1} if query is FILL else {"id": target}
            body = await client.gql(query, variables, token=token)
            assert body["data"] is None, body
            assert codes(body) == [code], (query, body)
    assert [await status_in_db(owner_conn, o) for o in (order_id, approved)] == before
    assert await owner_conn.fetchval("SELECT count(*) FROM fills") == 0


async def test_the_execution_engine_approves_fills_and_rejects_with_an_audit_trail(
    database: Db,
) -> None:
    async with api_client(api_settings(database)) as client:
        token, engine = client.token(uuid.uuid4()), client.token(None, "service_role")

        async def audit(order_id: str) -> tuple[str, int, list[tuple[str, str]]]:
            order = ok(await client.gql(AUDIT, {"id": order_id}, token=token))["order"]
            steps = [(log["action"], log["status"]) for log in order["executionLogs"]]
            return order["status"], order["filledQuantity"], steps

        order_id = await submit(client, token, clientOrderId="a")
        assert await audit(order_id) == ("PENDING", 0, [("SUBMITTED", "PENDING")])
        ok(await client.gql(APPROVE, {"id": order_id}, token=engine))
        trail = [("SUBMITTED", "PENDING"), ("APPROVED", "PENDING")]
        assert await audit(order_id) == ("PENDING", 0, trail)
        fill = ok(await client.gql(FILL, {"id": order_id, "q": 4}, token=engine))["recordFill"]
        assert fill["quantityFilled"] == 4
        trail.append(("FILLED", "PARTIAL"))
        assert await audit(order_id) == ("PARTIAL", 4, trail)
        ok(await client.gql(FILL, {"id": order_id, "q": 6}, token=engine))
        trail.append(("FILLED", "FILLED"))
        assert await audit(order_id) == ("FILLED", 10, trail)

        rejected = await submit(client, token, clientOrderId="b")
        ok(await client.gql(APPROVE, {"id": rejected}, token=engine))
        assert ok(await client.gql(REJECT, {"id": rejected}, token=engine))["rejectOrder"] == {
            "id": rejected,
            "status": "REJECTED",
        }
        assert await audit(rejected) == (
            "REJECTED",
            0,
            [("SUBMITTED", "PENDING"), ("APPROVED", "PENDING"), ("REJECTED", "REJECTED")],
        )

        cancelled = await submit(client, token, clientOrderId="c")
        ok(await client.gql(CANCEL, {"id": cancelled}, token=token))
        assert await audit(cancelled) == (
            "CANCELLED",
            0,
            [("SUBMITTED", "PENDING"), ("CANCELLED", "CANCELLED")],
        )


async def test_the_api_takes_a_late_fill_on_a_routed_cancelled_order_as_the_database_does(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    # app.orders.lifecycle and the trigger agree (tests/test_order_lifecycle.py): executions
    # the venue made before a cancel reached it are recorded, and only for a routed order.
    async with api_client(api_settings(database)) as client:
        token, engine = client.token(uuid.uuid4()), client.token(None, "service_role")
        routed = await submit(client, token, clientOrderId="r")
        unrouted = await submit(client, token, clientOrderId="u")
        for order_id in (routed, unrouted):
            ok(await client.gql(APPROVE, {"id": order_id}, token=engine))
        async with as_role(owner_conn, "service_role", commit=True):
            await owner_conn.execute("UPDATE orders SET routed_at = now() WHERE id = $1", routed)
        for order_id in (routed, unrouted):
            ok(await client.gql(FILL, {"id": order_id, "q": 4}, token=engine))
            ok(await client.gql(CANCEL, {"id": order_id}, token=token))

        late = await client.gql(FILL, {"id": routed, "q": 3}, token=engine)
        assert late["data"]["recordFill"]["quantityFilled"] == 3, late
        assert (await status_in_db(owner_conn, routed))[:2] == ("CANCELLED", 7)
        completing = await client.gql(FILL, {"id": routed, "q": 3}, token=engine)
        assert "errors" not in completing, completing
        assert (await status_in_db(owner_conn, routed))[:2] == ("FILLED", 10)

        body = await client.gql(FILL, {"id": unrouted, "q": 1}, token=engine)
        assert codes(body) == ["CONFLICT"], body
    assert (await status_in_db(owner_conn, unrouted))[:2] == ("CANCELLED", 4)


async def test_a_partially_filled_order_cannot_be_rejected_only_cancelled(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        token, engine = client.token(uuid.uuid4()), client.token(None, "service_role")
        partial = await submit(client, token)
        ok(await client.gql(APPROVE, {"id": partial}, token=engine))
        ok(await client.gql(FILL, {"id": partial, "q": 4}, token=engine))
        body = await client.gql(REJECT, {"id": partial}, token=engine)
        assert codes(body) == ["CONFLICT"], body
        assert (await status_in_db(owner_conn, partial))[:2] == ("PARTIAL", 4)


async def test_illegal_engine_steps_are_conflicts_and_change_nothing(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        token, engine = client.token(uuid.uuid4()), client.token(None, "service_role")
        unapproved = await submit(client, token, clientOrderId="u")
        body = await client.gql(FILL, {"id": unapproved, "q": 1}, token=engine)
        assert codes(body) == ["CONFLICT"], body

        approved = await submit(client, token, clientOrderId="a")
        ok(await client.gql(APPROVE, {"id": approved}, token=engine))
        body = await client.gql(APPROVE, {"id": approved}, token=engine)
        assert codes(body) == ["CONFLICT"], body

        ok(await client.gql(FILL, {"id": approved, "q": 6}, token=engine))
        body = await client.gql(FILL, {"id": approved, "q": 5}, token=engine)
        assert codes(body) == ["CONFLICT"], body

        ok(await client.gql(FILL, {"id": approved, "q": 4}, token=engine))
        body = await client.gql(REJECT, {"id": approved}, token=engine)
        assert codes(body) == ["CONFLICT"], body

        missing = str(uuid.uuid4())
        for query in (APPROVE, REJECT, FILL):
            body = await client.gql(query, {"id": missing, "q": 1}, token=engine)
            assert codes(body) == ["NOT_FOUND"], (query, body)
    assert await status_in_db(owner_conn, unapproved) == ("PENDING", 0, 1)
    # SUBMITTED, APPROVED and two FILLED: the refused steps left no trace.
    assert await status_in_db(owner_conn, approved) == ("FILLED", 10, 4)
    assert await owner_conn.fetchval("SELECT count(*) FROM fills") == 2


async def test_racing_fills_never_overfill_an_order(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        token, engine = client.token(uuid.uuid4()), client.token(None, "service_role")
        order_id = await submit(client, token, quantity=100)
        ok(await client.gql(APPROVE, {"id": order_id}, token=engine))
        bodies = await asyncio.gather(
            *(client.gql(FILL, {"id": order_id, "q": 30}, token=engine) for _ in range(5))
        )
    outcomes = sorted("ok" if "errors" not in body else codes(body)[0] for body in bodies)
    assert outcomes == ["CONFLICT", "CONFLICT", "ok", "ok", "ok"], bodies
    assert await status_in_db(owner_conn, order_id) == ("PARTIAL", 90, 5)
    assert await owner_conn.fetchval("SELECT sum(quantity_filled) FROM fills") == 90


# --- unexpected errors are masked ------------------------------------------------------------


async def test_an_unexpected_error_is_masked_logged_and_rolls_the_request_back(
    database: Db,
    owner_conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = service.submit_order

    async def submit_then_fail(tx: Any, **kwargs: Any) -> Any:
        await original(tx, **kwargs)  # the order is written, then something breaks
        raise RuntimeError("secret SQL detail: SELECT * FROM orders")

    monkeypatch.setattr(service, "submit_order", submit_then_fail)
    caplog.set_level(logging.ERROR, logger="app.graphql")
    async with api_client(api_settings(database)) as client:
        response = await client.post(
            SUBMIT, {"input": order_input()}, token=client.token(uuid.uuid4())
        )
    assert response.status_code == 200
    assert "secret" not in response.text
    assert "SELECT" not in response.text
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    request_id = response.headers["x-request-id"]
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    assert request_id in error["message"]
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 0
    logged = [record for record in caplog.records if request_id in record.getMessage()]
    assert logged
    assert logged[0].exc_info is not None
    assert "secret SQL detail" in str(logged[0].exc_info[1])


async def test_an_unexpected_error_in_a_query_is_masked_too(
    database: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret SQL detail")

    monkeypatch.setattr(queries, "orders_page", broken)
    async with api_client(api_settings(database)) as client:
        response = await client.post(
            "{ orders { edges { cursor } } }",
            token=client.token(uuid.uuid4()),
        )
    assert "secret" not in response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]


async def test_an_exhausted_pool_answers_503_service_unavailable(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    settings = api_settings(database, db_pool_size=1, db_pool_timeout=0.1)
    async with api_client(settings) as client:
        token = client.token(uuid.uuid4())
        async with owner_conn.transaction():
            # The only pooled connection waits behind the owner's lock on orders.
            await owner_conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            holding = asyncio.create_task(
                client.post("{ orders { edges { cursor } } }", token=token)
            )
            await _until_waiting_for_a_lock(owner_conn)
            refused = await client.post("{ viewer { role } }", token=token)
        held = await holding
        assert (held.status_code, refused.status_code) == (200, 503)
        [error] = refused.json()["errors"]
        assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "reason": "POOL_EXHAUSTED"}
        # Retryable: once the connection is back, the same request works.
        again = await client.post("{ viewer { role } }", token=token)
        assert again.status_code == 200


async def _until_waiting_for_a_lock(owner_conn: asyncpg.Connection) -> None:
    for _ in range(500):
        if await owner_conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no request ever waited for the lock")


# --- abuse limits ------------------------------------------------------------------------------


async def test_limits_refuse_deep_queries_many_aliases_and_large_documents(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    settings = api_settings(database, max_query_depth=3, max_aliases=5, max_document_bytes=1000)
    async with api_client(settings) as client:
        token = client.token(uuid.uuid4())
        shallow = await client.gql("{ orders { edges { node { id } } } }", token=token)
        assert "errors" not in shallow, shallow
        deep = await client.gql("{ orders { edges { node { fills { id } } } } }", token=token)
        assert deep["data"] is None
        assert codes(deep) == ["BAD_USER_INPUT"]
        assert "exceeds maximum operation depth of 3" in deep["errors"][0]["message"]

        five = "{ " + " ".join(f"v{i}: viewer {{ role }}" for i in range(5)) + " }"
        assert "errors" not in await client.gql(five, token=token)
        six = "{ " + " ".join(f"v{i}: viewer {{ role }}" for i in range(6)) + " }"
        aliased = await client.gql(six, token=token)
        assert aliased["data"] is None
        assert codes(aliased) == ["BAD_USER_INPUT"]
        assert "aliases" in aliased["errors"][0]["message"]

        submit_query = SUBMIT + "#" * (1001 - len(SUBMIT.encode()))
        assert len(submit_query.encode()) == 1001
        large = await client.post(submit_query, {"input": order_input()}, token=token)
        assert large.status_code == 413
        huge = await client.post(SUBMIT + "#" * 5000, {"input": order_input()}, token=token)
        assert huge.status_code == 413
        fits = await client.post(submit_query[:-1], {"input": order_input()}, token=token)
        assert fits.status_code == 200
        assert "errors" not in fits.json(), fits.text
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 1


async def test_batched_requests_and_mutations_over_get_are_refused(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        token = client.token(uuid.uuid4())
        headers = {"Authorization": f"Bearer {token}"}
        batch = [
            {"query": SUBMIT, "variables": {"input": order_input(clientOrderId=f"b{i}")}}
            for i in range(2)
        ]
        response = await client.http.post("/graphql", json=batch, headers=headers)
        assert response.status_code == 400, response.text

        mutation = (
            'mutation { submitOrder(input: {symbol: "AAPL", side: BUY, quantity: 1,'
            " orderType: MARKET}) { id } }"
        )
        response = await client.http.get("/graphql", params={"query": mutation}, headers=headers)
        assert response.status_code in (400, 405), response.text
        assert "data" not in response.text or response.json().get("data") is None

        # Queries over GET are allowed: the refusal above is about the mutation.
        response = await client.http.get(
            "/graphql", params={"query": "{ viewer { role } }"}, headers=headers
        )
        assert response.status_code == 200
        assert response.json() == {"data": {"viewer": {"role": "authenticated"}}}
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 0


INTROSPECTION = "{ __schema { queryType { name } } }"


async def test_introspection_works_by_default(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        body = await client.gql(INTROSPECTION)
    assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_introspection_is_refused_when_disabled(database: Db) -> None:
    async with api_client(api_settings(database, introspection=False)) as client:
        body = await client.gql(INTROSPECTION)
        still_works = await client.gql("{ viewer { role } }")
    assert body["data"] is None
    assert set(codes(body)) == {"BAD_USER_INPUT"}
    assert "introspection has been disabled" in body["errors"][0]["message"]
    assert still_works == {"data": {"viewer": {"role": "anon"}}}


# --- pagination --------------------------------------------------------------------------------

ORDERS_PAGE = """
query($first: Int, $after: String) {
  orders(first: $first, after: $after) {
    edges { cursor node { id } } pageInfo { hasNextPage endCursor }
  }
}
"""
LOGS_PAGE = """
query($first: Int, $after: String) {
  executionLogs(first: $first, after: $after) {
    edges { cursor node { id } } pageInfo { hasNextPage endCursor }
  }
}
"""


@pytest.mark.parametrize("first", [0, -1, 101])
@pytest.mark.parametrize("query", [ORDERS_PAGE, LOGS_PAGE], ids=["orders", "executionLogs"])
async def test_a_page_size_outside_1_to_100_is_bad_input(
    shared: Shared, query: str, first: int
) -> None:
    body = await shared.client.gql(query, {"first": first}, token=shared.client.token(uuid.uuid4()))
    assert body["data"] is None
    assert [(e["extensions"]["code"], e["extensions"].get("field")) for e in body["errors"]] == [
        ("BAD_USER_INPUT", "first")
    ]


def garbage_cursors() -> list[str]:
    def encoded(raw: str) -> str:
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    return [
        "garbage",
        "",
        encoded("not a date|" + str(uuid.uuid4())),
        encoded("2030-01-01T00:00:00|" + str(uuid.uuid4())),  # no offset
        encoded("2030-01-01T00:00:00+00:00|not-a-uuid"),
        "////",
    ]


@pytest.mark.parametrize("query", [ORDERS_PAGE, LOGS_PAGE], ids=["orders", "executionLogs"])
async def test_a_cursor_this_api_did_not_issue_is_bad_input(shared: Shared, query: str) -> None:
    token = shared.client.token(uuid.uuid4())
    for cursor in garbage_cursors():
        body = await shared.client.gql(query, {"after": cursor}, token=token)
        assert body["data"] is None, cursor
        assert [
            (e["extensions"]["code"], e["extensions"].get("field")) for e in body["errors"]
        ] == [("BAD_USER_INPUT", "after")], cursor


async def walk(client: Client, query: str, name: str, token: str, first: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = ok(await client.gql(query, {"first": first, "after": after}, token=token))[name]
        seen.extend(edge["node"]["id"] for edge in page["edges"])
        if page["edges"]:
            assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        if not page["pageInfo"]["hasNextPage"]:
            return seen
        assert len(page["edges"]) == first
        after = page["pageInfo"]["endCursor"]


async def test_cursors_walk_every_page_newest_first_without_gaps_or_repeats(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    # Five orders of one statement share created_at: only the id orders them.
    await owner_conn.execute(
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
        " SELECT $1, 'AAPL', 'BUY', 1, 'MARKET' FROM generate_series(1, 5)",
        trader,
    )
    async with api_client(api_settings(database)) as client:
        token = client.token(trader)
        for i in range(4):
            await submit(client, token, clientOrderId=f"walk-{i}")
        expected_orders = [
            str(row["id"])
            for row in await owner_conn.fetch(
                "SELECT id FROM orders WHERE trader_id = $1 ORDER BY created_at DESC, id DESC",
                trader,
            )
        ]
        expected_logs = [
            str(row["id"])
            for row in await owner_conn.fetch(
                'SELECT id FROM execution_logs WHERE trader_id = $1 ORDER BY "timestamp" DESC,'
                " id DESC",
                trader,
            )
        ]
        assert len(expected_orders) == len(expected_logs) == 9
        for first in (1, 2, 4, 9):
            assert await walk(client, ORDERS_PAGE, "orders", token, first) == expected_orders
        for first in (2, 5):
            assert await walk(client, LOGS_PAGE, "executionLogs", token, first) == expected_logs
        everything = ok(await client.gql(ORDERS_PAGE, {"first": 100}, token=token))["orders"]
        assert everything["pageInfo"]["hasNextPage"] is False
        # An explicit null page size means the default, as in the contract (`first: Int = 20`).
        defaulted = ok(await client.gql(ORDERS_PAGE, {"first": None}, token=token))["orders"]
        assert len(defaulted["edges"]) == 9
    # Newest first: the orders submitted through the API came after the five inserted first.
    api_orders = await owner_conn.fetch(
        "SELECT id FROM orders WHERE client_order_id IS NOT NULL ORDER BY created_at DESC, id DESC"
    )
    assert expected_orders[:4] == [str(row["id"]) for row in api_orders]


async def test_default_page_sizes_are_20_orders_and_50_logs(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    await owner_conn.execute(
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
        " SELECT $1, 'AAPL', 'BUY', 1, 'MARKET' FROM generate_series(1, 51)",
        trader,
    )
    async with api_client(api_settings(database)) as client:
        token = client.token(trader)
        for variables in ({}, {"first": None}):
            orders = ok(await client.gql(ORDERS_PAGE, variables, token=token))["orders"]
            logs = ok(await client.gql(LOGS_PAGE, variables, token=token))["executionLogs"]
            assert (len(orders["edges"]), orders["pageInfo"]["hasNextPage"]) == (20, True)
            assert (len(logs["edges"]), logs["pageInfo"]["hasNextPage"]) == (50, True)


# --- health --------------------------------------------------------------------------------------


async def test_healthz_answers_and_readyz_is_ready_only_at_the_head_revision(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        health = await client.http.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        ready = await client.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "migration": migrations.head_revision()}
        await owner_conn.execute("UPDATE alembic_version SET version_num = '000'")
        behind = await client.http.get("/readyz")
        assert behind.status_code == 503
        assert behind.json()["migration"] == "000"
