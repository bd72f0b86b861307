"""The traders whose tokens the clients rotate, and, for each, an order to read (W3).

The big trader is always one of them (its page is the one an index must not make slow);
the others are spread evenly over the rest. Tokens are minted with the product's own
``mint_token`` and the benchmark's secret, valid for the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from app.auth.jwt import mint_token
from app.settings import Settings
from bench.scale.dataset import Shape, trader_uuid

SECRET = "bench-scale-secret-that-is-long-enough-for-hs256-0"
TOKEN_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Trader:
    id: str
    token: str
    order_id: str  # one of its orders, with a fill when it has one


def numbers(shape: Shape, count: int) -> list[int]:
    step = max(1, shape.traders // (count - 1))
    return [0, *range(1, shape.traders + 1, step)][:count]


async def traders(owner_dsn: str, shape: Shape, count: int = 1000) -> list[Trader]:
    settings = Settings(jwt_secret=SECRET)
    ids = [trader_uuid(n) for n in numbers(shape, count)]
    conn = await asyncpg.connect(owner_dsn)
    try:
        rows = await conn.fetch(
            """SELECT DISTINCT ON (trader_id) trader_id, id FROM public.orders
                WHERE trader_id = ANY($1::uuid[])
                ORDER BY trader_id, status = 'FILLED' DESC, created_at DESC""",
            ids,
        )
    finally:
        await conn.close()
    order_of = {row["trader_id"]: str(row["id"]) for row in rows}
    missing = [str(i) for i in ids if i not in order_of]
    if missing:
        raise SystemExit(f"{len(missing)} benchmark traders have no orders, e.g. {missing[0]}")
    return [
        Trader(str(i), mint_token(settings, sub=i, ttl_seconds=TOKEN_SECONDS), order_of[i])
        for i in ids
    ]
