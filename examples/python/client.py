"""A minimal Order API client: log in with a token, page orders, submit one, follow it until filled.

    pip install httpx websockets
    export ORDER_API_TOKEN=...      # the token `python -m app dev` prints
    python examples/python/client.py --url http://127.0.0.1:8000/graphql

Queries and mutations are plain HTTP POSTs with the token in the Authorization header. The
subscription is a WebSocket speaking graphql-transport-ws, where a browser cannot set headers:
the token travels in the connection_init payload instead. Every step prints what it did; any
failure (an error from the API, an order that ends other than FILLED, the timeout) prints one
line to stderr and exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

VIEWER = "query Viewer { viewer { traderId role } }"

ORDERS = """
query Orders($first: Int!, $after: String) {
  orders(first: $first, after: $after) {
    edges { node { id symbol side quantity status } }
    pageInfo { hasNextPage endCursor }
  }
}"""

SUBMIT = """
mutation Submit($input: SubmitOrderInput!) {
  submitOrder(input: $input) { id clientOrderId status }
}"""

# snapshot: true starts the stream with the order's current state, so subscribing after the
# submit cannot miss a fill that happened in between.
UPDATES = """
subscription Updates($id: UUID!) {
  orderUpdates(orderId: $id, snapshot: true) { id status filledQuantity averageFillPrice }
}"""

# Statuses after which an order changes no more; only FILLED counts as success here.
FINAL = {"FILLED", "REJECTED", "CANCELLED", "EXPIRED", "REPLACED"}


class ClientError(Exception):
    """Anything that ends the example unsuccessfully; the message is printed as is."""


def describe(errors: list[dict[str, Any]]) -> str:
    first = errors[0]
    extensions = first.get("extensions") or {}
    where = f" [{extensions['field']}]" if "field" in extensions else ""
    return f"{extensions.get('code', 'ERROR')}{where}: {first.get('message')}"


async def graphql(
    http: httpx.AsyncClient, url: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await http.post(url, json={"query": query, "variables": variables or {}})
    try:
        body = response.json()
    except json.JSONDecodeError:
        raise ClientError(f"HTTP {response.status_code}: {response.text.strip()}") from None
    if body.get("errors"):
        raise ClientError(describe(body["errors"]))
    if response.status_code != 200 or "data" not in body:
        raise ClientError(f"HTTP {response.status_code}: {response.text.strip()}")
    data: dict[str, Any] = body["data"]
    return data


async def log_in(http: httpx.AsyncClient, url: str) -> None:
    viewer = (await graphql(http, url, VIEWER))["viewer"]
    if viewer["role"] == "anon":
        raise ClientError("no token: set ORDER_API_TOKEN (python -m app dev prints one)")
    print(f"logged in: trader {viewer['traderId']}, role {viewer['role']}")


async def page_orders(http: httpx.AsyncClient, url: str, *, page_size: int, pages: int) -> None:
    after = None
    for number in range(1, pages + 1):
        page = (await graphql(http, url, ORDERS, {"first": page_size, "after": after}))["orders"]
        for edge in page["edges"]:
            order = edge["node"]
            print(
                f"  page {number}: {order['id']} {order['side']} {order['quantity']}"
                f" {order['symbol']} {order['status']}"
            )
        if not page["pageInfo"]["hasNextPage"]:
            print(f"orders: all read in {number} page(s) of up to {page_size}")
            return
        after = page["pageInfo"]["endCursor"]
    print(f"orders: first {pages} page(s) read; more remain (after: {after})")


async def submit(
    http: httpx.AsyncClient, url: str, *, symbol: str, quantity: int
) -> dict[str, Any]:
    # The clientOrderId makes the submit idempotent: a retry after a timeout or a lost answer
    # returns the order already written instead of buying twice.
    order_input = {
        "symbol": symbol,
        "side": "BUY",
        "quantity": quantity,
        "orderType": "MARKET",
        "clientOrderId": f"example-{uuid.uuid4()}",
    }
    order: dict[str, Any] = (await graphql(http, url, SUBMIT, {"input": order_input}))[
        "submitOrder"
    ]
    print(f"submitted: {order['id']} clientOrderId={order['clientOrderId']} {order['status']}")
    again = (await graphql(http, url, SUBMIT, {"input": order_input}))["submitOrder"]
    if again["id"] != order["id"]:
        raise ClientError(f"a retry with the same clientOrderId made a new order {again['id']}")
    print("retried with the same clientOrderId: the same order, nothing new written")
    return order


async def follow(ws_url: str, token: str, order_id: str) -> None:
    """Follow one order over graphql-transport-ws until it reaches a final status."""
    async with connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        ack = json.loads(await ws.recv())
        if ack.get("type") != "connection_ack":
            raise ClientError(f"expected connection_ack, got {ack}")
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": UPDATES, "variables": {"id": order_id}},
                }
            )
        )
        print(f"following {order_id} over {ws_url}")
        while True:
            message = json.loads(await ws.recv())
            kind = message.get("type")
            if kind == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif kind == "error":
                raise ClientError(f"subscription refused: {describe(message['payload'])}")
            elif kind == "complete":
                raise ClientError("the server ended the subscription before a final status")
            elif kind == "next":
                payload = message["payload"]
                if payload.get("errors"):
                    # UPDATES_MISSED (a lag or an outage): the stream stays open and, for one
                    # order, the server sends its current state next. Anything else is fatal.
                    reason = payload["errors"][0].get("extensions", {}).get("reason")
                    if reason != "UPDATES_MISSED":
                        raise ClientError(f"update failed: {describe(payload['errors'])}")
                    print("  updates were missed; the current state follows")
                    continue
                order = payload["data"]["orderUpdates"]
                price = order["averageFillPrice"]
                at = f" at {price}" if price is not None else ""
                print(f"  update: {order['status']}, filled {order['filledQuantity']}{at}")
                if order["status"] in FINAL:
                    await ws.send(json.dumps({"id": "1", "type": "complete"}))
                    if order["status"] != "FILLED":
                        raise ClientError(f"order {order_id} ended {order['status']}, not FILLED")
                    print(f"FILLED: {order['filledQuantity']} at {order['averageFillPrice']}")
                    return


async def run(args: argparse.Namespace, token: str) -> None:
    ws_url = "ws" + args.url.removeprefix("http")  # http -> ws, https -> wss
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        await log_in(http, args.url)
        await page_orders(http, args.url, page_size=args.page_size, pages=args.pages)
        order = await submit(http, args.url, symbol=args.symbol, quantity=args.quantity)
    await follow(ws_url, token, order["id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/graphql")
    parser.add_argument("--symbol", default="AAPL")
    parser.add_argument("--quantity", type=int, default=10)
    parser.add_argument("--page-size", type=int, default=2)
    parser.add_argument("--pages", type=int, default=3, help="read at most this many pages")
    parser.add_argument("--timeout", type=float, default=30, help="seconds for the whole run")
    args = parser.parse_args()
    token = os.environ.get("ORDER_API_TOKEN", "").strip()
    if not token:
        parser.error("set ORDER_API_TOKEN to a token (python -m app dev prints one)")

    async def bounded() -> None:
        async with asyncio.timeout(args.timeout):
            await run(args, token)

    try:
        asyncio.run(bounded())
    except TimeoutError:
        print(f"error: not done within {args.timeout:g} s", file=sys.stderr)
        return 1
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError, ConnectionClosed) as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
