"""The pool serves waiting requests in turn: a client that sends request after request cannot
keep taking its connection back while another request waits (that one would get a 503
POOL_EXHAUSTED after DB_POOL_TIMEOUT although connections were free all along)."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.api import api_client, api_settings
from tests.conftest import Db

# A fragment keeps it on the resolvers' path, in Database.transaction.
ORDERS = "{ orders(first: 5) { edges { node { ...o } } } } fragment o on Order { id }"
SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"


async def test_a_waiting_request_is_served_while_another_client_keeps_sending(
    database: Db,
) -> None:
    settings = api_settings(database, db_pool_size=1, db_pool_timeout=3.0)
    async with api_client(settings) as client:
        busy_token = client.token(uuid.uuid4())
        stop = asyncio.Event()

        async def busy() -> int:
            sent = 0
            while not stop.is_set():
                response = await client.post(ORDERS, token=busy_token)
                assert response.status_code == 200, response.text
                sent += 1
            return sent

        busy_client = asyncio.create_task(busy())
        try:
            await asyncio.sleep(0.2)
            started = time.monotonic()
            order = {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}
            waiting = await client.post(
                SUBMIT,
                {"input": {**order, "clientOrderId": "w-1"}},
                token=client.token(uuid.uuid4()),
            )
            waited = time.monotonic() - started
        finally:
            stop.set()
            sent = await busy_client
        assert waiting.status_code == 200, waiting.text
        assert waited < 1.0, f"waited {waited:.2f} s while the busy client sent {sent}"
