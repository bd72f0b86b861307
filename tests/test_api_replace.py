"""Time in force, stop-limit and replaceOrder through the API, as every role (issue 13).

The engine's side of a replacement (the venue's confirmation, migration 006's protocol step 3)
is plain SQL as service_role here: exactly the statement the engine runs. Every refusal is
checked for its code and, where it is BAD_USER_INPUT, the field it names.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.db.timestamps import isoformat
from tests import pg, supabase
from tests.api import Client, api_client, api_settings
from tests.conftest import Db, SupabaseSession
from tests.sql import as_role
from tests.test_subscriptions import harness, subscribed

ORDER_FIELDS = """
  id traderId clientOrderId status quantity filledQuantity orderType price stopPrice
  timeInForce replacesId replacedById stopLoss expiresAt
"""
SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) {" + ORDER_FIELDS + "} }"
REPLACE = (
    "mutation($id: UUID!, $input: ReplaceOrderInput!) { replaceOrder(id: $id, input: $input) {"
    + ORDER_FIELDS
    + "} }"
)
ORDER = "query($id: UUID!) { order(id: $id) {" + ORDER_FIELDS + " executionLogs { action } } }"
ORDERS = (
    "query($filter: OrderFilter) { orders(first: 100, filter: $filter) { edges { node {"
    + ORDER_FIELDS
    + "} } } }"
)
LOGS = "query($action: ExecutionAction) { executionLogs(action: $action) { edges { node { orderId action status } } } }"
APPROVE = "mutation($id: UUID!) { approveOrder(id: $id) { id } }"
FILL = """
mutation($id: UUID!, $q: Int!) {
  recordFill(input: {orderId: $id, quantityFilled: $q, priceAtFill: "10.00", venue: "Test"}) { id }
}
"""
REJECT = """
mutation($id: UUID!) {
  rejectOrder(id: $id, reason: "the old order filled first", errorCode: "FILLED_FIRST") { status }
}
"""
CANCEL = "mutation($id: UUID!) { cancelOrder(id: $id) { status } }"
CONFIRM = "UPDATE orders SET status = 'REPLACED', replaced_by_id = $2 WHERE id = $1"

LIMIT_ORDER = {"symbol": "AAPL", "side": "BUY", "quantity": 100, "orderType": "LIMIT"}


@dataclass
class World:
    client: Client
    login: asyncpg.Connection
    """authenticator, for plain SQL as any role (tests.sql.as_role)."""

    def trader(self) -> Trader:
        return Trader(self, uuid.uuid4())

    async def as_role(self, role: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        token = None if role == "anon" else self.client.token(role=role)
        return await self.client.gql(query, variables, token=token)

    async def engine(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        return data(await self.as_role("service_role", query, variables))

    async def approve_and_fill(self, order_id: str, quantity: int) -> None:
        await self.engine(APPROVE, {"id": order_id})
        await self.engine(FILL, {"id": order_id, "q": quantity})

    async def confirm(self, old: str, new: str) -> None:
        """The engine's confirmation of a replacement: the venue replaced ``old`` by ``new``."""
        async with as_role(self.login, "service_role", commit=True) as conn:
            await conn.execute(CONFIRM, uuid.UUID(old), uuid.UUID(new))


@dataclass
class Trader:
    world: World
    id: uuid.UUID

    @property
    def token(self) -> str:
        return self.world.client.token(self.id)

    async def submit(self, **changes: Any) -> dict[str, Any]:
        variables = {"input": {"price": "10.00", **LIMIT_ORDER, **changes}}
        order: dict[str, Any] = data(await self.gql(SUBMIT, variables))["submitOrder"]
        return order

    async def replace(self, order_id: str, **changes: Any) -> dict[str, Any]:
        return await self.gql(REPLACE, {"id": order_id, "input": changes})

    async def replaced(self, order_id: str, **changes: Any) -> dict[str, Any]:
        order: dict[str, Any] = data(await self.replace(order_id, **changes))["replaceOrder"]
        return order

    async def order(self, order_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = data(await self.gql(ORDER, {"id": order_id}))["order"]
        return found

    async def gql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        return await self.world.client.gql(query, variables, token=self.token)


def data(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]
    return result


def refusal(body: dict[str, Any]) -> tuple[str, str | None]:
    """The one error's code and field."""
    [error] = body["errors"]
    return error["extensions"]["code"], error["extensions"].get("field")


@pytest.fixture(scope="module", params=["postgresql", "supabase"])
async def world(
    request: pytest.FixtureRequest, cluster: pg.Cluster, supabase_cluster: SupabaseSession
) -> AsyncIterator[World]:
    # On Supabase service_role bypasses row level security: the grants and triggers must
    # hold the replacement protocol on their own.
    if request.param == "supabase":
        name = await supabase.create_database(supabase_cluster.cluster)
        db: Any = supabase.SupabaseDb(supabase_cluster.cluster, name)
        login = await asyncpg.connect(db.dsn(supabase.LOGIN))
    else:
        name = await pg.create_test_database(cluster)
        db = Db(cluster, name)
        login = await asyncpg.connect(db.dsn("authenticator"))
    try:
        async with api_client(api_settings(db)) as client:
            yield World(client, login)
    finally:
        await login.close()
        if request.param == "supabase":
            await supabase.drop_database(db.cluster, name)
        else:
            await pg.drop_test_database(cluster, name)


# --- the new fields, as every role -------------------------------------------------------------


async def test_the_new_fields_reach_every_role_that_may_see_the_order(world: World) -> None:
    trader = world.trader()
    old = await trader.submit(orderType="STOP_LIMIT", price="10.50", stopPrice="10.00")
    new = await trader.replaced(old["id"], price="10.60")
    await world.confirm(old["id"], new["id"])
    expected = {
        old["id"]: ("REPLACED", "10.00", "GTC", None, new["id"]),
        new["id"]: ("PENDING", "10.00", "GTC", old["id"], None),
    }

    def seen(order: dict[str, Any]) -> tuple[Any, ...]:
        return (
            order["status"],
            order["stopPrice"],
            order["timeInForce"],
            order["replacesId"],
            order["replacedById"],
        )

    for role in ("trader", "service_role", "compliance_auditor"):
        token = trader.token if role == "trader" else world.client.token(role=role)
        for order_id, fields in expected.items():
            # order(id) is answered by the compiled path, orders by it too (strict in tests).
            one = data(await world.client.gql(ORDER, {"id": order_id}, token=token))["order"]
            assert seen(one) == fields, role
        listed = data(
            await world.client.gql(ORDERS, {"filter": {"traderId": str(trader.id)}}, token=token)
        )["orders"]["edges"]
        assert {edge["node"]["id"]: seen(edge["node"]) for edge in listed} == expected, role
    for order_id in expected:
        assert data(await world.as_role("anon", ORDER, {"id": order_id}))["order"] is None
        assert await world.trader().order(order_id) is None  # another trader


async def test_submit_defaults_to_gtc_and_a_day_order_ends_at_the_database_close(
    world: World,
) -> None:
    trader = world.trader()
    gtc = await trader.submit()
    assert (gtc["timeInForce"], gtc["expiresAt"], gtc["stopPrice"]) == ("GTC", None, None)

    day = await trader.submit(timeInForce="DAY")
    async with as_role(world.login, "authenticated", trader.id) as conn:
        close = await conn.fetchval("SELECT public.session_close(now())")
    assert (day["timeInForce"], day["expiresAt"]) == ("DAY", isoformat(close))

    earlier = datetime.now(UTC) + timedelta(minutes=1)
    kept = await trader.submit(timeInForce="DAY", expiresAt=earlier.isoformat())
    assert datetime.fromisoformat(kept["expiresAt"]) == earlier

    for time_in_force in ("IOC", "FOK"):
        at_once = await trader.submit(orderType="MARKET", price=None, timeInForce=time_in_force)
        assert (at_once["timeInForce"], at_once["expiresAt"]) == (time_in_force, None)


async def test_a_repeated_day_submission_is_the_same_order_and_other_terms_conflict(
    world: World,
) -> None:
    trader = world.trader()
    first = await trader.submit(timeInForce="DAY", clientOrderId="day-1")
    # The database set expiresAt; the repeat leaves it out as the first did.
    again = await trader.submit(timeInForce="DAY", clientOrderId="day-1")
    assert again == first
    for changes in (
        {"timeInForce": "GTC"},
        {"orderType": "STOP_LIMIT", "stopPrice": "9.50", "timeInForce": "DAY"},
    ):
        body = await trader.gql(
            SUBMIT,
            {"input": {"price": "10.00", **LIMIT_ORDER, "clientOrderId": "day-1", **changes}},
        )
        assert refusal(body) == ("CONFLICT", None), body


# --- who may replace ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "code"),
    [
        ("anon", "UNAUTHENTICATED"),
        ("service_role", "FORBIDDEN"),
        ("compliance_auditor", "FORBIDDEN"),
    ],
)
async def test_only_a_trader_may_submit_or_replace(world: World, role: str, code: str) -> None:
    trader = world.trader()
    order = await trader.submit()
    replace = await world.as_role(role, REPLACE, {"id": order["id"], "input": {"quantity": 5}})
    assert refusal(replace)[0] == code
    submit = await world.as_role(
        role,
        SUBMIT,
        {"input": {**LIMIT_ORDER, "orderType": "STOP_LIMIT", "price": "1", "stopPrice": "1"}},
    )
    assert refusal(submit)[0] == code
    assert (await trader.order(order["id"])) == order | {"executionLogs": [{"action": "SUBMITTED"}]}
    assert await replacements_of(world, order["id"]) == []


async def replacements_of(world: World, order_id: str) -> list[uuid.UUID]:
    async with as_role(world.login, "service_role") as conn:
        rows = await conn.fetch("SELECT id FROM orders WHERE replaces_id = $1", uuid.UUID(order_id))
    return [row["id"] for row in rows]


async def test_another_traders_order_and_a_missing_one_are_not_found(world: World) -> None:
    owner, other = world.trader(), world.trader()
    order = await owner.submit()
    for order_id in (order["id"], str(uuid.uuid4())):
        body = await other.replace(order_id, price="11.00")
        assert refusal(body) == ("NOT_FOUND", None), body
        assert body["errors"][0]["message"] == f"order {order_id} not found"
    assert await replacements_of(world, order["id"]) == []


# --- what a replacement is ---------------------------------------------------------------------


async def test_a_replacement_copies_what_is_left_out_and_leaves_the_old_order_working(
    world: World,
) -> None:
    trader = world.trader()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    old = await trader.submit(stopLoss="9.00", expiresAt=tomorrow.isoformat(), clientOrderId="o-1")
    await world.approve_and_fill(old["id"], 40)

    new = await trader.replaced(old["id"], price="10.50")

    assert new["id"] != old["id"]
    assert {k: new[k] for k in ("status", "replacesId", "replacedById", "clientOrderId")} == {
        "status": "PENDING",
        "replacesId": old["id"],
        "replacedById": None,
        "clientOrderId": None,  # the old order's key is its own
    }
    # Left out: the old order's quantity counted as a total, so exactly its unfilled rest.
    assert (new["quantity"], new["filledQuantity"], new["price"]) == (60, 0, "10.50")
    copied = ("orderType", "stopLoss", "expiresAt", "timeInForce", "stopPrice")
    assert {k: new[k] for k in copied} == {k: old[k] for k in copied}
    # Until the venue confirms, the old order works on unchanged.
    still = await trader.order(old["id"])
    assert still is not None
    assert (still["status"], still["filledQuantity"], still["replacedById"]) == (
        "PARTIAL",
        40,
        None,
    )


async def test_quantity_is_the_total_across_the_chain_of_replacements(world: World) -> None:
    trader = world.trader()
    first = await trader.submit()
    await world.approve_and_fill(first["id"], 40)
    for total in (40, 30):
        body = await trader.replace(first["id"], quantity=total)
        assert refusal(body) == ("BAD_USER_INPUT", "quantity"), body
        assert "above the 40 already filled" in body["errors"][0]["message"]

    second = await trader.replaced(first["id"], quantity=150)
    assert second["quantity"] == 110
    await world.confirm(first["id"], second["id"])
    await world.approve_and_fill(second["id"], 10)

    third = await trader.replaced(second["id"])  # left out: second's unfilled rest, 100
    assert (third["quantity"], third["replacesId"]) == (100, second["id"])
    await world.confirm(second["id"], third["id"])
    body = await trader.replace(third["id"], quantity=50)  # 40 + 10 filled before it
    assert refusal(body) == ("BAD_USER_INPUT", "quantity"), body
    fourth = await trader.replaced(third["id"], quantity=51)
    assert fourth["quantity"] == 1


async def test_the_database_refuses_the_same_total_in_plain_sql(world: World) -> None:
    trader = world.trader()
    old = await trader.submit()
    await world.approve_and_fill(old["id"], 40)
    async with as_role(world.login, "authenticated", trader.id) as conn:
        with pytest.raises(asyncpg.PostgresError) as refused:
            await conn.execute(
                "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price,"
                " replaces_id) VALUES ($1, 'AAPL', 'BUY', 40, 'LIMIT', 10, $2)",
                trader.id,
                uuid.UUID(old["id"]),
            )
    assert (refused.value.sqlstate, refused.value.column_name) == ("OA422", "quantity")


async def test_a_replacement_may_change_its_time_in_force(world: World) -> None:
    trader = world.trader()
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    old = await trader.submit(expiresAt=tomorrow.isoformat())
    # Another time in force: a left-out expiry is the new one's default, not the old order's.
    day = await trader.replaced(old["id"], timeInForce="DAY")
    async with as_role(world.login, "authenticated", trader.id) as conn:
        close = await conn.fetchval("SELECT public.session_close(now())")
    assert (day["timeInForce"], day["expiresAt"]) == ("DAY", isoformat(close))
    await trader.gql(CANCEL, {"id": day["id"]})  # the trader withdraws the request
    ioc = await trader.replaced(old["id"], timeInForce="IOC")
    assert (ioc["timeInForce"], ioc["expiresAt"]) == ("IOC", None)
    await trader.gql(CANCEL, {"id": ioc["id"]})
    cleared = await trader.replaced(old["id"], expiresAt=None)
    assert (cleared["timeInForce"], cleared["expiresAt"]) == ("GTC", None)


NEXT_WEEK = (datetime.now(UTC) + timedelta(days=7)).isoformat()
PAST = "2020-01-01T00:00:00Z"

REFUSALS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # name: (the old order, the replacement's input, the field named)
    "stopPrice on a LIMIT order": ({}, {"stopPrice": "9.00"}, "stopPrice"),
    "stopPrice removed from a STOP_LIMIT": (
        {"orderType": "STOP_LIMIT", "stopPrice": "9.50"},
        {"stopPrice": None},
        "stopPrice",
    ),
    "stopPrice with three decimals": (
        {"orderType": "STOP_LIMIT", "stopPrice": "9.50"},
        {"stopPrice": "9.505"},
        "stopPrice",
    ),
    "price removed from a LIMIT order": ({}, {"price": None}, "price"),
    "price with three decimals": ({}, {"price": "10.005"}, "price"),
    "IOC on a STOP order": ({"orderType": "STOP"}, {"timeInForce": "IOC"}, "timeInForce"),
    "FOK on a STOP_LIMIT order": (
        {"orderType": "STOP_LIMIT", "stopPrice": "9.50"},
        {"timeInForce": "FOK"},
        "timeInForce",
    ),
    "IOC with an expiry": ({}, {"timeInForce": "IOC", "expiresAt": NEXT_WEEK}, "expiresAt"),
    "an expiry on an IOC order": (
        {"timeInForce": "IOC", "orderType": "MARKET", "price": None},
        {"expiresAt": NEXT_WEEK},
        "expiresAt",
    ),
    "DAY expiring after the session close": (
        {},
        {"timeInForce": "DAY", "expiresAt": NEXT_WEEK},
        "expiresAt",
    ),
    "expiry in the past": ({}, {"expiresAt": PAST}, "expiresAt"),
    "timeInForce null": ({}, {"timeInForce": None}, "timeInForce"),
    "quantity null": ({}, {"quantity": None}, "quantity"),
    "quantity zero": ({}, {"quantity": 0}, "quantity"),
    "clientOrderId not printable": ({}, {"clientOrderId": "a\tb"}, "clientOrderId"),
}


@pytest.mark.parametrize(("old", "changes", "field"), REFUSALS.values(), ids=REFUSALS.keys())
async def test_an_impossible_replacement_is_bad_user_input_naming_the_field(
    world: World, old: dict[str, Any], changes: dict[str, Any], field: str
) -> None:
    trader = world.trader()
    order = await trader.submit(**old)
    body = await trader.replace(order["id"], **changes)
    assert refusal(body) == ("BAD_USER_INPUT", field), body
    assert await replacements_of(world, order["id"]) == []


async def test_only_a_working_order_without_a_waiting_replacement_can_be_replaced(
    world: World,
) -> None:
    trader = world.trader()
    cancelled = await trader.submit()
    await trader.gql(CANCEL, {"id": cancelled["id"]})
    filled = await trader.submit(quantity=10)
    await world.approve_and_fill(filled["id"], 10)
    for order_id, status in ((cancelled["id"], "CANCELLED"), (filled["id"], "FILLED")):
        body = await trader.replace(order_id, price="11.00")
        assert refusal(body) == ("CONFLICT", None), body
        assert f"a {status} order cannot be replaced" in body["errors"][0]["message"]

    old = await trader.submit()
    waiting = await trader.replaced(old["id"], price="10.10")
    second = await trader.replace(old["id"], price="10.20")
    assert refusal(second) == ("CONFLICT", None), second
    assert "already has a replacement waiting" in second["errors"][0]["message"]
    unconfirmed = await trader.replace(waiting["id"], price="10.30")
    assert refusal(unconfirmed) == ("CONFLICT", None), unconfirmed
    assert "waits for the venue to confirm" in unconfirmed["errors"][0]["message"]

    await world.confirm(old["id"], waiting["id"])
    replaced = await trader.replace(old["id"], price="10.40")
    assert refusal(replaced) == ("CONFLICT", None), replaced
    assert "a REPLACED order cannot be replaced" in replaced["errors"][0]["message"]
    assert await replacements_of(world, waiting["id"]) == []


# --- idempotency and the race with a fill ------------------------------------------------------


async def test_a_repeated_replacement_is_the_same_new_order_even_after_a_fill_and_rejection(
    world: World,
) -> None:
    trader = world.trader()
    old = await trader.submit(clientOrderId="old-1")
    await world.approve_and_fill(old["id"], 40)
    new = await trader.replaced(old["id"], quantity=100, price="10.20", clientOrderId="new-1")
    assert new["quantity"] == 60
    assert (
        await trader.replaced(old["id"], quantity=100, price="10.20", clientOrderId="new-1") == new
    )

    for changes in (
        {"quantity": 90, "price": "10.20"},
        {"quantity": 100, "price": "10.30"},
        {"quantity": 100, "price": "10.20", "timeInForce": "DAY"},
    ):
        body = await trader.replace(old["id"], clientOrderId="new-1", **changes)
        assert refusal(body) == ("CONFLICT", None), body
        assert "'new-1' was already used for a different order" in body["errors"][0]["message"]
    # A key of an order that is not this replacement: a conflict too.
    body = await trader.replace(old["id"], clientOrderId="old-1")
    assert refusal(body) == ("CONFLICT", None), body

    # The old order fills again before the venue confirms: the request is still the same one.
    await world.engine(FILL, {"id": old["id"], "q": 5})
    assert (
        await trader.replaced(old["id"], quantity=100, price="10.20", clientOrderId="new-1") == new
    )
    # The confirmation is refused; the engine rejects the replacement, the old fills stand.
    with pytest.raises(asyncpg.PostgresError) as refused:
        await world.confirm(old["id"], new["id"])
    assert refused.value.sqlstate == "OA409"
    assert (await world.engine(REJECT, {"id": new["id"]}))["rejectOrder"]["status"] == "REJECTED"
    still = await trader.order(old["id"])
    assert still is not None
    assert (still["status"], still["filledQuantity"], still["replacedById"]) == (
        "PARTIAL",
        45,
        None,
    )
    repeat = await trader.replaced(old["id"], quantity=100, price="10.20", clientOrderId="new-1")
    assert (repeat["id"], repeat["status"]) == (new["id"], "REJECTED")


async def test_a_repeat_after_the_confirmation_returns_the_replacement(world: World) -> None:
    trader = world.trader()
    old = await trader.submit()
    new = await trader.replaced(old["id"], clientOrderId="r-after")
    await world.confirm(old["id"], new["id"])
    assert await trader.replaced(old["id"], clientOrderId="r-after") == new


# --- what everyone else sees of it -------------------------------------------------------------


async def test_the_audit_trail_shows_replaced_and_expired_to_the_auditor(world: World) -> None:
    trader = world.trader()
    old = await trader.submit()
    new = await trader.replaced(old["id"])
    await world.confirm(old["id"], new["id"])
    async with as_role(world.login, "service_role", commit=True) as conn:
        expiring = await conn.fetchval(
            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, expires_at)"
            " VALUES ($1, 'AAPL', 'SELL', 5, 'MARKET', clock_timestamp()) RETURNING id",
            trader.id,
        )
    async with as_role(world.login, "service_role", commit=True) as conn:
        await conn.execute("UPDATE orders SET status = 'EXPIRED' WHERE id = $1", expiring)

    auditor = world.client.token(role="compliance_auditor")
    for action, order_id in (("REPLACED", old["id"]), ("EXPIRED", str(expiring))):
        logs = data(await world.client.gql(LOGS, {"action": action}, token=auditor))
        nodes = [edge["node"] for edge in logs["executionLogs"]["edges"]]
        assert {"orderId": order_id, "action": action, "status": action} in nodes
        for token in (trader.token, auditor):
            listed = data(
                await world.client.gql(
                    ORDERS,
                    {"filter": {"status": [action], "traderId": str(trader.id)}},
                    token=token,
                )
            )["orders"]["edges"]
            assert [edge["node"]["id"] for edge in listed] == [order_id]
        other = data(await world.trader().gql(LOGS, {"action": action}))
        assert order_id not in {e["node"]["orderId"] for e in other["executionLogs"]["edges"]}


UPDATES = """
subscription { orderUpdates { id status replacesId replacedById executionLogs { action } } }
"""


async def test_subscribers_see_both_orders_change(
    database: Db, authenticator_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    async with harness(database) as h, subscribed(h, h.token(trader), query=UPDATES) as stream:
        await h.subscribers(1)
        order = {**LIMIT_ORDER, "price": "10.00"}
        old = (await h.gql(SUBMIT, {"input": order}, h.token(trader)))["submitOrder"]
        assert (await stream.order())["id"] == old["id"]
        new = (
            await h.gql(REPLACE, {"id": old["id"], "input": {"price": "10.10"}}, h.token(trader))
        )["replaceOrder"]
        requested = await stream.order()
        assert (requested["id"], requested["status"], requested["replacesId"]) == (
            new["id"],
            "PENDING",
            old["id"],
        )
        async with as_role(authenticator_conn, "service_role", commit=True) as conn:
            await conn.execute(CONFIRM, uuid.UUID(old["id"]), uuid.UUID(new["id"]))
        confirmed = await stream.order()
        assert (confirmed["id"], confirmed["status"], confirmed["replacedById"]) == (
            old["id"],
            "REPLACED",
            new["id"],
        )
        assert confirmed["executionLogs"][-1] == {"action": "REPLACED"}
