"""A trusted document's first call is already compiled; a document sent as text is not.

    python bench/trusted_first_call.py [--orders 2000] [--rounds 15]

Uses DATABASE_URL (owner) and API_DATABASE_URL (authenticator) when set; otherwise a
throwaway embedded PostgreSQL. One app, in-process (httpx's ASGI transport, the same
overhead on both sides). Each round, alternating which goes first, makes two new
documents of the same page query (a comment makes each text new, so no cache of the
parser, the validation or the plans knows it):

- text: POSTed as ``query``; its first call takes the resolvers (which learn it), its
  second the compiled plan;
- trusted: stored (as ``documents add`` stores it) and picked up (what each server's poll
  does), then POSTed as ``documentId``: compiled at pickup, so its first call already takes
  the compiled plan.

Printed: the median first and second call of each, and how many first calls the compiled
path answered (order_api_compiled_queries_total{outcome="answered"}).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time
from typing import Any

import httpx
from api_throughput import ORDERS_QUERY, SECRET, TRADER, arrange

from app import metrics
from app.auth.jwt import mint_token
from app.db import embedded, trusted_documents
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url
from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.manifests import Document
from app.main import create_app
from app.settings import Settings

VARIABLES = {"first": 20}


def answered() -> float:
    value: float = metrics.COMPILED_QUERIES.labels("answered")._value.get()
    return value


async def run(owner_url: str, api_url: str, orders: int, rounds: int) -> None:
    await arrange(libpq_url(owner_url), orders)
    settings = Settings.from_env(
        {"JWT_SECRET": SECRET, "API_DATABASE_URL": api_url, "DATABASE_URL": owner_url}
    )
    headers = {"Authorization": f"Bearer {mint_token(settings, sub=TRADER)}"}
    app = create_app(settings)
    [endpoint] = {
        r.endpoint for r in app.routes if isinstance(getattr(r, "endpoint", None), GraphQLEndpoint)
    }
    times: dict[str, list[tuple[float, float]]] = {"text": [], "trusted": []}
    compiled_first = {"text": 0, "trusted": 0}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http,
    ):

        async def call(payload: dict[str, Any]) -> float:
            started = time.perf_counter()
            response = await http.post("/graphql", json=payload, headers=headers)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            assert "errors" not in response.json(), response.text
            return elapsed

        async def text(round_: int) -> None:
            payload = {"query": f"# round {round_} text\n{ORDERS_QUERY}", "variables": VARIABLES}
            before = answered()
            first = await call(payload)
            compiled_first["text"] += int(answered() > before)
            times["text"].append((first, await call(payload)))

        async def trusted(round_: int) -> None:
            body = f"# round {round_} trusted\n{ORDERS_QUERY}"
            document_id = f"sha256:{hashlib.sha256(body.encode()).hexdigest()}"
            await trusted_documents.add(owner_url, [Document(document_id, body, "Page")], None)
            await endpoint.trusted.refresh()  # the pickup: what each server's poll does
            payload = {"documentId": document_id, "variables": VARIABLES}
            before = answered()
            first = await call(payload)
            compiled_first["trusted"] += int(answered() > before)
            times["trusted"].append((first, await call(payload)))

        await text(-1)  # warm the app (connections, imports) outside the measurement
        for round_ in range(rounds):
            pair = (text, trusted) if round_ % 2 == 0 else (trusted, text)
            for side in pair:
                await side(round_)

    print(f"\n{'document':10} {'first call ms':>14} {'second call ms':>15} {'first compiled':>15}")
    for name, samples in times.items():
        first = statistics.median(s[0] for s in samples) * 1000
        second = statistics.median(s[1] for s in samples) * 1000
        print(f"{name:10} {first:14.2f} {second:15.2f} {compiled_first[name]:>8}/{rounds}")
    print(f"\nreproduce: python bench/trusted_first_call.py --orders {orders} --rounds {rounds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    env = Settings.from_env()
    if env.database_url and env.api_database_url:
        asyncio.run(run(env.database_url, env.api_database_url, args.orders, args.rounds))
        return
    with embedded.throwaway("order-api-bench-") as server:
        owner = server.owner_url.render_as_string(hide_password=False)
        upgrade_to_head(owner)
        api = server.url_for("authenticator").render_as_string(hide_password=False)
        asyncio.run(run(owner, api, args.orders, args.rounds))


if __name__ == "__main__":
    main()
