"""orderUpdates(orderId:, snapshot: true): the order's current state first, then its changes.

Over WebSocket, both protocols, through the app's real change feed and database.
"""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Db
from tests.test_subscriptions import LEGACY_WS, TRANSPORT_WS, harness, subscribed

SNAPSHOT = """
subscription Updates($orderId: UUID, $snapshot: Boolean!) {
  orderUpdates(orderId: $orderId, snapshot: $snapshot) {
    id status filledQuantity fills { quantityFilled }
  }
}
"""


def with_snapshot(snapshot: bool) -> str:
    return SNAPSHOT.replace("$snapshot: Boolean!", "$snapshot: Boolean = " + str(snapshot).lower())


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_snapshot_subscription_starts_with_the_orders_current_state(
    database: Db, protocol: str
) -> None:
    alice = uuid.uuid4()
    async with harness(database) as h:
        order_id = await h.submit(alice)
        await h.approve(order_id)
        await h.fill(order_id, 30)
        async with subscribed(
            h, h.token(alice), order_id, protocol=protocol, query=with_snapshot(True)
        ) as stream:
            first = await stream.order()
            assert (first["id"], first["status"], first["filledQuantity"]) == (
                order_id,
                "PARTIAL",
                30,
            )
            assert first["fills"] == [{"quantityFilled": 30}]
            await h.subscribers(1)
            await h.fill(order_id, 70)
            # Changes follow; the last one shows the fill (intermediate ones may be coalesced).
            update = await stream.order()
            while update["filledQuantity"] != 100:
                update = await stream.order()
            assert update["status"] == "FILLED"


async def test_without_snapshot_the_stream_starts_with_the_next_change(database: Db) -> None:
    alice = uuid.uuid4()
    async with harness(database) as h:
        order_id = await h.submit(alice)
        await h.announced(1)
        async with subscribed(h, h.token(alice), order_id, query=with_snapshot(False)) as stream:
            await h.subscribers(1)
            await h.approve(order_id)
            await h.fill(order_id, 100)
            update = await stream.order()
            while update["status"] != "FILLED":
                assert update["status"] == "PENDING"
                update = await stream.order()


async def test_a_snapshot_of_an_order_the_caller_cannot_see_is_not_found(database: Db) -> None:
    alice, mallory = uuid.uuid4(), uuid.uuid4()
    async with harness(database) as h:
        order_id = await h.submit(alice)
        async with subscribed(h, h.token(mallory), order_id, query=with_snapshot(True)) as stream:
            payload = await stream.next()
            assert payload["data"] is None
            [error] = payload["errors"]
            assert error["extensions"]["code"] == "NOT_FOUND"
            assert (await stream.message())["type"] == "complete"


async def test_a_snapshot_needs_an_order_id(database: Db) -> None:
    alice = uuid.uuid4()
    async with (
        harness(database) as h,
        subscribed(h, h.token(alice), None, query=with_snapshot(True)) as stream,
    ):
        message = await stream.message()
        assert message["type"] in ("error", "next"), message
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert errors[0]["extensions"]["field"] == "snapshot"
