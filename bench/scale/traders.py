"""The traders whose tokens the clients rotate, and, for each, an order to read (W3).

Readers (W1, W3 and W4's reads): the big trader is always one of them (its page is the one
an index must not make slow); the others are spread evenly over the rest. Writers (W2 and
W4's writes) are other traders, each the one after a reader: so the orders a run submits
never change the pages it reads, for a later server in the same run or for a later run on
the same data set (``--reuse``). Tokens are minted with the product's own ``mint_token``
and the benchmark's secret, valid for the whole run.
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


def step(shape: Shape, count: int) -> int:
    """The distance between two readers (at least 2, so that a writer fits between them)."""
    return max(2, shape.traders // (count - 1))


def numbers(shape: Shape, count: int) -> list[int]:
    """The readers' trader numbers: 0 (the big trader), 1, 1 + step, 1 + 2 step, ..."""
    return [0, *range(1, shape.traders + 1, step(shape, count))][:count]


def writer_numbers(shape: Shape, count: int) -> list[int]:
    """The writers' trader numbers: 2, 2 + step, ...: each the one after a reader."""
    return list(range(2, shape.traders + 1, step(shape, count)))[:count]


async def traders(
    owner_dsn: str, shape: Shape, count: int = 1000, *, writers: bool = False
) -> list[Trader]:
    settings = Settings(jwt_secret=SECRET)
    ids = [trader_uuid(n) for n in (writer_numbers if writers else numbers)(shape, count)]
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


@dataclass(frozen=True)
class Clients:
    readers: list[Trader]
    writers: list[Trader]

    def for_request(self, workload: str, n: int) -> Trader:
        """Who sends request ``n`` of this workload (W2 is a write; the rest are reads)."""
        people = self.writers if workload == "W2" else self.readers
        return people[n % len(people)]


async def clients(owner_dsn: str, shape: Shape, count: int = 1000) -> Clients:
    return Clients(
        await traders(owner_dsn, shape, count), await traders(owner_dsn, shape, count, writers=True)
    )
