"""Fuzzing the GraphQL endpoint: operations generated from the contract schema (valid ones, ones
with one schema violation, and garbled text), sent as each role. None may answer HTTP 500 or
INTERNAL_SERVER_ERROR, or leak SQL, the database's internal names, Python paths or a traceback.

CI runs the ``ci`` Hypothesis profile: a fixed seed per role (the same examples every run), no
example database. ``FUZZ_PROFILE=fuzz pytest tests/test_api_fuzz.py --log-cli-level=INFO`` runs many
more and logs the outcomes per role.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import graphql
import hypothesis_graphql
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, nodes

from app.settings import APP_ROLES
from tests import pg
from tests.api import Client, api_client, api_settings
from tests.conftest import Db

log = logging.getLogger(__name__)
T = TypeVar("T")

CONTRACT = graphql.build_schema((Path(__file__).parent / "contract" / "schema.graphql").read_text())

settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=False,  # each role has a fixed seed of its own instead (see the test)
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("fuzz", settings.get_profile("ci"), max_examples=1500)
PROFILE = settings.get_profile(os.environ.get("FUZZ_PROFILE", "ci"))

# Words that only an internal error would show a client.
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|\bapp\.\w+|sqlalchemy|asyncpg|psycopg|SQLSTATE|"
    r"\bSELECT\b|\bINSERT\b|\bUPDATE\b|\bDELETE\b|\bWHERE\b|\bFROM \w+_|set_config|pg_\w+",
)


class Loop:
    """An event loop in a thread of its own: Hypothesis drives the app synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class Target:
    loop: Loop
    client: Client
    internal_names: set[str]
    order_ids: list[str]
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)

    def post(self, document: str, token: str | None) -> tuple[int, str]:
        async def send() -> tuple[int, str]:
            response = await self.client.post(document, token=token)
            return response.status_code, response.text

        return self.loop.run(send())


async def seed_orders(client: Client) -> list[str]:
    """Orders of two traders in several states, so that generated operations find rows."""
    submit = (
        "mutation($s: String!) { submitOrder(input: {symbol: $s, side: BUY, quantity: 100,"
        " orderType: MARKET}) { id } }"
    )
    engine = client.token(None, "service_role")
    ids = []
    for trader, symbol in [(uuid.uuid4(), "AAPL"), (uuid.uuid4(), "MSFT")] * 2:
        body = await client.gql(submit, {"s": symbol}, token=client.token(trader))
        ids.append(body["data"]["submitOrder"]["id"])
    approve = "mutation($id: UUID!) { approveOrder(id: $id) { id } }"
    for order_id in ids[:3]:
        await client.gql(approve, {"id": order_id}, token=engine)
    fill = (
        "mutation($id: UUID!) { recordFill(input: {orderId: $id, quantityFilled: 40, priceAtFill:"
        ' "10.5", venue: "PAPER"}) { id } }'
    )
    for order_id in ids[:2]:
        await client.gql(fill, {"id": order_id}, token=engine)
    return ids


async def internal_names(dsn: str) -> set[str]:
    """The database's names a client never needs: columns, constraints, triggers, functions,
    policies, indexes."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT conname AS name FROM pg_constraint WHERE connamespace = 'public'::regnamespace
            UNION SELECT tgname FROM pg_trigger WHERE NOT tgisinternal
            UNION SELECT proname FROM pg_proc
                   WHERE pronamespace IN ('public'::regnamespace, 'auth'::regnamespace)
            UNION SELECT policyname FROM pg_policies
            UNION SELECT indexname FROM pg_indexes WHERE schemaname = 'public'
            UNION SELECT attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                   WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0
            """
        )
    finally:
        await conn.close()
    # Short plain words (role, uid) are also the contract's; those with an underscore are not.
    return {row["name"] for row in rows if "_" in row["name"]}


@pytest.fixture(scope="module")
def target(cluster: pg.Cluster) -> Iterator[Target]:
    loop = Loop()
    stack = AsyncExitStack()
    name = loop.run(pg.create_test_database(cluster))
    try:
        database = Db(cluster, name)
        client = loop.run(stack.enter_async_context(api_client(api_settings(database))))
        yield Target(
            loop=loop,
            client=client,
            internal_names=loop.run(internal_names(database.dsn())),
            order_ids=loop.run(seed_orders(client)),
        )
    finally:
        loop.run(stack.aclose())
        loop.run(pg.drop_test_database(cluster, name))
        loop.close()


def scalars(order_ids: list[str]) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    text = st.text(max_size=40)
    return {
        "UUID": st.one_of(st.sampled_from(order_ids), st.uuids().map(str), text, st.just("")).map(
            nodes.String
        ),
        "Decimal": st.one_of(
            st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
            st.sampled_from(["1e400", "-0", "NaN", "Infinity", "1" * 40, "0.00001"]),
            text,
        ).map(nodes.String),
        "DateTime": st.one_of(
            st.datetimes().map(lambda d: d.isoformat() + "Z"),
            st.sampled_from(["2099-01-01T00:00:00+00:00", "9999-12-31T23:59:59Z", "0001"]),
            text,
        ).map(nodes.String),
    }


def operations(order_ids: list[str]) -> st.SearchStrategy[tuple[str, str]]:
    custom = scalars(order_ids)
    valid = hypothesis_graphql.from_schema(CONTRACT, custom_scalars=custom)
    invalid = hypothesis_graphql.from_schema(CONTRACT, custom_scalars=custom, mode=Mode.NEGATIVE)

    @st.composite
    def garbled(draw: Callable[..., Any]) -> str:
        document: str = draw(valid)
        start = draw(st.integers(0, max(0, len(document) - 1)))
        end = draw(st.integers(start, len(document)))
        return document[:start] + draw(st.text(max_size=3)) + document[end:]

    return st.one_of(
        valid.map(lambda d: ("valid", d)),
        invalid.map(lambda d: ("invalid", d)),
        garbled().map(lambda d: ("garbled", d)),
    )


def check(target: Target, role: str, kind: str, document: str, status: int, text: str) -> str:
    """Asserts the answer is one a client may see; returns its outcome for the tally."""
    where = f"{role} {kind}: {document!r} -> {status} {text[:500]}"
    assert status < 500, where
    body = json.loads(text)
    errors = body.get("errors") or []
    codes = sorted({error["extensions"]["code"] for error in errors})
    assert "INTERNAL_SERVER_ERROR" not in codes, where
    messages = " ".join(error["message"] for error in errors)
    # What the client sent itself may be quoted back (an excerpt of a bad value).
    leaked = {word for word in LEAKS.findall(messages) if word not in document}
    leaked |= {name for name in target.internal_names if name in messages and name not in document}
    assert not leaked, (leaked, where)
    return f"{status} {'+'.join(codes) or 'data'}"


@pytest.mark.parametrize("role", APP_ROLES)
def test_generated_operations_never_fail_internally_or_leak(target: Target, role: str) -> None:
    token = None if role == "anon" else target.client.token(uuid.uuid4(), role)
    tally = target.outcomes.setdefault(role, Counter())

    @settings(PROFILE)
    @seed(APP_ROLES.index(role))  # the same operations every run; other ones for each role
    @given(operation=operations(target.order_ids))
    def run(operation: tuple[str, str]) -> None:
        kind, document = operation
        status, text = target.post(document, token)
        tally[f"{kind} {check(target, role, kind, document, status, text)}"] += 1
        if kind == "valid" and status == 200 and document.lstrip().startswith(("{", "query")):
            # Again: a query that succeeded may now be answered by its compiled statement.
            again_status, again = target.post(document, token)
            check(target, role, kind, document, again_status, again)

    run()
    log.info(
        "fuzzed %s operations as %s: %s", sum(tally.values()), role, dict(sorted(tally.items()))
    )
