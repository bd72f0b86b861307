"""API throughput against the raw database, on the same data, in the same run.

    python bench/api_throughput.py [--orders 2000] [--seconds 5]

Uses DATABASE_URL (owner, to arrange data) and API_DATABASE_URL
(authenticator) when set; otherwise a throwaway embedded PostgreSQL that is
deleted at the end. For each operation it measures, sequentially on one
client (so the machine's noise hits both sides alike):

- baseline: the same SQL the API needs, sent with asyncpg as authenticator in
  one transaction with role and claims set (what a hand-written thin layer
  over the database would do at best);
- api: the GraphQL request through the whole ASGI app (token verification,
  transaction, Strawberry execution, JSON), called in-process as an ASGI
  server would call it (no HTTP client in the measurement).

Figures are quoted as ratios (api time / baseline time): lower is better.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from app.auth.jwt import mint_token
from app.db import embedded
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url
from app.main import create_app
from app.settings import Settings

SECRET = "bench-secret-that-is-long-enough-for-hs256-000000"
TRADER = uuid.UUID("11111111-1111-4111-8111-111111111111")

ORDERS_QUERY = """
query Page($first: Int!) {
  orders(first: $first) {
    edges { cursor node { id symbol side quantity orderType price status filledQuantity
      averageFillPrice createdAt fills { id quantityFilled priceAtFill venue commission timestamp } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
ORDER_QUERY = "query One($id: UUID!) { order(id: $id) { id symbol status filledQuantity } }"


async def arrange(owner_dsn: str, orders: int) -> list[str]:
    conn = await asyncpg.connect(owner_dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('role', 'service_role', true),"
                " set_config('request.jwt.claims', '{\"role\":\"service_role\"}', true)"
            )
            ids = await conn.fetch(
                "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
                " SELECT CASE WHEN g % 4 = 0 THEN $1::uuid ELSE gen_random_uuid() END,"
                " 'SYM' || (g % 50), 'BUY', 100, 'LIMIT', 10 + g % 90"
                " FROM generate_series(1, $2) g RETURNING id, trader_id",
                TRADER,
                orders,
            )
            mine = [r["id"] for r in ids if r["trader_id"] == TRADER]
            await conn.execute("UPDATE orders SET approved_at = now() WHERE id = ANY($1)", mine)
            await conn.execute(
                "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue)"
                " SELECT id, 40, 10, 'Mock' FROM unnest($1::uuid[]) id",
                mine,
            )
        await conn.execute("ANALYZE")
        return [str(i) for i in mine]
    finally:
        await conn.close()


async def timed(fn: Callable[[], Awaitable[Any]], seconds: float) -> list[float]:
    for _ in range(20):  # warm caches and the pool
        await fn()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return samples


async def run(owner_url: str, api_url: str, orders: int, seconds: float) -> None:
    order_ids = await arrange(libpq_url(owner_url), orders)
    settings = Settings.from_env(
        {"JWT_SECRET": SECRET, "API_DATABASE_URL": api_url, "DATABASE_URL": owner_url}
    )
    token = mint_token(settings, sub=TRADER)
    claims = json.dumps({"sub": str(TRADER), "role": "authenticated"})
    raw = await asyncpg.connect(libpq_url(api_url))

    async def baseline_page() -> None:
        async with raw.transaction():
            await raw.execute(
                "SELECT set_config('role', 'authenticated', true),"
                " set_config('request.jwt.claims', $1, true)",
                claims,
            )
            rows = await raw.fetch(
                "SELECT id, symbol, side, quantity, order_type, price, status, filled_quantity,"
                " average_fill_price, created_at FROM orders"
                " WHERE trader_id = (SELECT auth.uid())"
                " ORDER BY created_at DESC, id DESC LIMIT 21"
            )
            fills = await raw.fetch(
                'SELECT id, order_id, quantity_filled, price_at_fill, venue, commission, "timestamp"'
                " FROM fills WHERE order_id = ANY($1)",
                [r["id"] for r in rows],
            )
            json.dumps([dict(r) for r in rows] + [dict(f) for f in fills], default=str)

    async def baseline_one() -> None:
        async with raw.transaction():
            await raw.execute(
                "SELECT set_config('role', 'authenticated', true),"
                " set_config('request.jwt.claims', $1, true)",
                claims,
            )
            row = await raw.fetchrow(
                "SELECT id, symbol, status, filled_quantity FROM orders WHERE id = $1",
                uuid.UUID(order_ids[0]),
            )
            json.dumps(dict(row) if row else None, default=str)

    app = create_app(settings)
    results: list[tuple[str, float, float]] = []
    async with app.router.lifespan_context(app):

        def api_call(query: str, variables: dict[str, Any]) -> Callable[[], Awaitable[None]]:
            body = json.dumps({"query": query, "variables": variables}).encode()
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/graphql",
                "raw_path": b"/graphql",
                "query_string": b"",
                "root_path": "",
                "server": ("127.0.0.1", 8000),
                "client": ("127.0.0.1", 50000),
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"authorization", f"Bearer {token}".encode()),
                ],
            }

            async def call() -> None:
                chunks: list[bytes] = []
                status: list[int] = []

                async def receive() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                async def send(message: dict[str, Any]) -> None:
                    if message["type"] == "http.response.start":
                        status.append(message["status"])
                    elif message["type"] == "http.response.body":
                        chunks.append(message.get("body", b""))

                await app(dict(scope), receive, send)
                assert status == [200], chunks
                assert b'"errors"' not in b"".join(chunks), chunks

            return call

        for name, base, api in (
            ("orders(first: 20) with fills", baseline_page, api_call(ORDERS_QUERY, {"first": 20})),
            ("order(id)", baseline_one, api_call(ORDER_QUERY, {"id": order_ids[0]})),
        ):
            b = statistics.median(await timed(base, seconds))
            a = statistics.median(await timed(api, seconds))
            results.append((name, b, a))
    await raw.close()

    print(f"\n{'operation':32} {'baseline ms':>12} {'api ms':>10} {'api/baseline':>13}")
    for name, b, a in results:
        print(f"{name:32} {b * 1000:12.3f} {a * 1000:10.3f} {a / b:13.2f}")
    print("\nreproduce: python bench/api_throughput.py --orders", orders, "--seconds", seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    env = Settings.from_env()
    if env.database_url and env.api_database_url:
        asyncio.run(run(env.database_url, env.api_database_url, args.orders, args.seconds))
        return
    with embedded.throwaway("order-api-bench-") as server:
        owner = server.owner_url.render_as_string(hide_password=False)
        upgrade_to_head(owner)
        api = server.url_for("authenticator").render_as_string(hide_password=False)
        asyncio.run(run(owner, api, args.orders, args.seconds))


if __name__ == "__main__":
    main()
