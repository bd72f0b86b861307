"""Correctness before timing: each server answers every sampled trader with that trader's data.

For a sample of the traders (the big one always among them), against the database read
as owner:

- W1: exactly the trader's 20 newest order ids, newest first, each with its fills' ids;
- W3: the asked order, its fills and its audit trail (ids and actions, in order);
- W2: a new PENDING order that belongs to the token's trader, with its SUBMITTED audit row;
- another trader's order id (W3) answers null: RLS decides, not the client;
- an anonymous caller's W1 page is empty, and a token with a wrong signature gets HTTP 401.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from bench.scale import workloads
from bench.scale.servers import Server, post
from bench.scale.traders import Clients, Trader

SAMPLE = 25


class Mismatch(AssertionError):
    pass


def _data(server: Server, workload: str, trader: Trader, order_id: str, n: int) -> Any:
    body = workloads.body(server.name, workload, trader.id, order_id, n)
    status, answer = post(server.port, body, trader.token)
    if status != 200 or not isinstance(answer, dict) or answer.get("errors"):
        raise Mismatch(f"{server.label} {workload} for {trader.id}: {status} {answer}")
    return answer["data"]


def _page(server: Server, data: Any) -> list[tuple[str, list[str]]]:
    if server.name == "ours":
        return [
            (e["node"]["id"], [f["id"] for f in e["node"]["fills"]])
            for e in data["orders"]["edges"]
        ]
    return [
        (e["node"]["rowId"], [f["rowId"] for f in e["node"]["fillsByOrderId"]["nodes"]])
        for e in data["allOrders"]["edges"]
    ]


def _order(server: Server, data: Any) -> tuple[str, list[str], list[str]] | None:
    if server.name == "ours":
        o = data["order"]
        if o is None:
            return None
        return o["id"], [f["id"] for f in o["fills"]], [x["action"] for x in o["executionLogs"]]
    o = data["orderByRowId"]
    if o is None:
        return None
    return (
        o["rowId"],
        [f["rowId"] for f in o["fillsByOrderId"]["nodes"]],
        [x["action"] for x in o["executionLogsByOrderId"]["nodes"]],
    )


async def check(server: Server, owner_dsn: str, people: Clients) -> int:
    """Raises Mismatch on the first wrong answer; the number of answers checked."""
    every = max(1, len(people.readers) // SAMPLE)
    sample = people.readers[::every]
    writers = people.writers[::every]  # submissions go to writers, as the load's do
    checked = 0
    conn = await asyncpg.connect(owner_dsn)
    try:
        for index, trader in enumerate(sample):
            truth = await conn.fetch(
                """SELECT o.id::text,
                          coalesce((SELECT array_agg(f.id::text ORDER BY f."timestamp",
                                                     f.created_at, f.id)
                                      FROM public.fills f WHERE f.order_id = o.id), '{}') AS fills
                     FROM public.orders o WHERE o.trader_id = $1::uuid
                    ORDER BY o.created_at DESC, o.id DESC LIMIT 20""",
                trader.id,
            )
            page = _page(server, _data(server, "W1", trader, trader.order_id, index))
            if page != [(r["id"], list(r["fills"])) for r in truth]:
                raise Mismatch(f"{server.label} W1: not trader {trader.id}'s 20 newest orders")

            one = _order(server, _data(server, "W3", trader, trader.order_id, index))
            row = await conn.fetchrow(
                """SELECT (SELECT coalesce(array_agg(f.id::text ORDER BY f."timestamp",
                                                     f.created_at, f.id), '{}')
                             FROM public.fills f WHERE f.order_id = $1::uuid) AS fills,
                          (SELECT array_agg(l.action::text ORDER BY l."timestamp", l.id)
                             FROM public.execution_logs l WHERE l.order_id = $1::uuid) AS logs""",
                trader.order_id,
            )
            if one != (trader.order_id, list(row["fills"]), list(row["logs"])):
                raise Mismatch(f"{server.label} W3: order {trader.order_id} came back as {one}")

            stranger = sample[(index + 1) % len(sample)]
            if stranger.id != trader.id and (
                _order(server, _data(server, "W3", trader, stranger.order_id, index)) is not None
            ):
                raise Mismatch(f"{server.label} W3: {trader.id} read {stranger.id}'s order")

            writer = writers[index % len(writers)]
            created = _data(server, "W2", writer, writer.order_id, index)
            created_id = (
                created["submitOrder"]["id"]
                if server.name == "ours"
                else created["createOrder"]["order"]["rowId"]
            )
            owner = await conn.fetchrow(
                """SELECT o.trader_id::text AS trader, o.status::text AS status,
                          (SELECT array_agg(l.action::text) FROM public.execution_logs l
                            WHERE l.order_id = o.id) AS logs
                     FROM public.orders o WHERE o.id = $1::uuid""",
                created_id,
            )
            if owner is None or (owner["trader"], owner["status"], owner["logs"]) != (
                writer.id,
                "PENDING",
                ["SUBMITTED"],
            ):
                raise Mismatch(f"{server.label} W2: order {created_id} is {owner}")
            checked += 4
    finally:
        await conn.close()
    return checked + _check_strangers(server, sample)


def _check_strangers(server: Server, sample: list[Trader]) -> int:
    """Nobody without a valid token reads anything: anonymous sees no order, a forged token
    (one trader's claims under another token's signature) is refused outright."""
    first, second = sample[0], sample[-1]
    page = workloads.body(server.name, "W1", first.id, first.order_id, 0)
    status, answer = post(server.port, page, None)
    if status != 200 or not isinstance(answer, dict) or answer.get("errors"):
        raise Mismatch(f"{server.label} W1 anonymous: {status} {answer}")
    if _page(server, answer["data"]) != []:
        raise Mismatch(f"{server.label} W1: an anonymous caller sees orders")
    forged = first.token.rsplit(".", 1)[0] + "." + second.token.rsplit(".", 1)[1]
    if forged != first.token:
        status, answer = post(server.port, page, forged)
        if status != 401:
            raise Mismatch(f"{server.label}: a token with a wrong signature got HTTP {status}")
    return 2
