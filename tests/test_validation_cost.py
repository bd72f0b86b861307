"""What a document costs before it executes grows at most linearly with its length (issue 18).

A chain of fragments that each spread the next one twice is 2^n fields written out in n
lines; anything that walks a fragment again at each spread does 2^n work. These tests send
that chain over every transport, and check the class (fragments, variables, directives) with
property tests that count the work done, not the time it took: counting is exact on a shared
machine.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
import strawberry
from graphql import parse
from graphql.language import Lexer, Source, TokenKind
from httpx_ws import aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from strawberry.schema.schema import validate_document

from app.graphql import limits, operation
from app.graphql.extensions import validation_rules
from app.graphql.schema import build_schema
from app.graphql.subscriptions import Subscription
from app.main import create_app
from app.settings import Settings
from tests.api import api_settings
from tests.conftest import Db

LEVELS = 40
SERVER_SECONDS = 0.1
"""The most CPU time of this process (the server, in-process) that refusing may take."""
TIMEOUT = 5.0


def chain(levels: int, *, fan: int = 2, on: str = "Query", leaf: str = "viewer { role }") -> str:
    """``levels`` fragments, each spreading the next ``fan`` times: fan^levels fields."""
    prefix = f"F{uuid.uuid4().hex[:6]}_"  # a document of its own: no cache has seen it
    fragments = [
        f"fragment {prefix}{i} on {on} {{ " + f"...{prefix}{i + 1} " * fan + "}"
        for i in range(levels - 1)
    ]
    fragments.append(f"fragment {prefix}{levels - 1} on {on} {{ {leaf} }}")
    operation_type = "subscription" if on == "Subscription" else "query"
    return f"{operation_type} {{ ...{prefix}0 }}\n" + "\n".join(fragments)


def tokens(document: str) -> int:
    lexer, count = Lexer(Source(document)), 0
    while lexer.advance().kind != TokenKind.EOF:
        count += 1
    return count


# --- over every transport ------------------------------------------------------------------------


@asynccontextmanager
async def served(database: Db) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    settings = api_settings(database)
    app: Starlette = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        ASGIWebSocketTransport(app=app) as transport,
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        yield http, settings


async def post(http: httpx.AsyncClient, document: str) -> list[dict[str, Any]]:
    response = await http.post("/graphql", json={"query": document})
    errors: list[dict[str, Any]] = response.json().get("errors", [])
    return errors


async def get(http: httpx.AsyncClient, document: str) -> list[dict[str, Any]]:
    response = await http.get("/graphql", params={"query": document})
    errors: list[dict[str, Any]] = response.json().get("errors", [])
    return errors


def over_websocket(protocol: str) -> Callable[[httpx.AsyncClient, str], Any]:
    async def send(http: httpx.AsyncClient, document: str) -> list[dict[str, Any]]:
        async with aconnect_ws("http://test/graphql", http, subprotocols=[protocol]) as ws:
            await ws.send_json({"type": "connection_init", "payload": {}})
            assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "connection_ack"
            start = "subscribe" if protocol == "graphql-transport-ws" else "start"
            await ws.send_json({"id": "1", "type": start, "payload": {"query": document}})
            while True:
                message = await ws.receive_json(timeout=TIMEOUT)
                if message["type"] not in ("ping", "pong", "ka"):
                    break
        assert message["type"] in ("error", "data", "next"), message
        payload = message["payload"]
        errors: list[dict[str, Any]] = (
            payload if isinstance(payload, list) else payload.get("errors", [payload])
        )
        return errors

    return send


TRANSPORTS = {
    "POST": (post, "Query", "viewer { role }"),
    "GET": (get, "Query", "viewer { role }"),
    "graphql-transport-ws": (
        over_websocket("graphql-transport-ws"),
        "Subscription",
        "orderUpdates { id }",
    ),
    "graphql-ws": (over_websocket("graphql-ws"), "Subscription", "orderUpdates { id }"),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_chain_of_double_spreads_is_refused_at_once_and_healthz_keeps_answering(
    database: Db, transport: str
) -> None:
    send, on, leaf = TRANSPORTS[transport]
    async with served(database) as (http, _):
        await send(http, chain(2, on=on, leaf=leaf))  # the first request pays for warming up
        document = chain(LEVELS, on=on, leaf=leaf)
        assert len(document.encode()) < 3000

        async def healthz() -> float:
            """Seconds from sending the document to /healthz's answer, asked 10 ms later: a
            blocked event loop answers it only once the document is done with."""
            await asyncio.sleep(0.01)
            assert (await http.get("/healthz")).status_code == 200
            return time.perf_counter() - sent

        sent, cpu = time.perf_counter(), time.process_time()
        errors, healthz_seconds = await asyncio.gather(send(http, document), healthz())
        cpu = time.process_time() - cpu

    assert [error["extensions"]["code"] for error in errors] == ["BAD_USER_INPUT"]
    assert "fields once its fragments are expanded" in errors[0]["message"], errors
    assert cpu < SERVER_SECONDS, f"{cpu:.3f} s of CPU to refuse {LEVELS} levels"
    assert healthz_seconds < 1.0


# --- the class: counted work ------------------------------------------------------------------

SETTINGS = Settings()
SCHEMA = build_schema(SETTINGS, subscription=Subscription)
RULES = validation_rules(SETTINGS)


@contextmanager
def counted() -> Iterator[list[int]]:
    """Counts the Python function calls made in the block: work, whatever the machine's load."""
    calls = [0]

    def count(frame: Any, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            calls[0] += 1

    previous = sys.getprofile()
    sys.setprofile(count)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


def work_before_execution(document: str, schema: strawberry.Schema = SCHEMA) -> int:
    """The calls made to parse and validate ``document`` as a request does, caches aside."""
    with counted() as calls:
        parsed = parse(document)
        validate_document(schema._schema, parsed, RULES)
        operation.operation_type(document, None)
    return calls[0]


CALLS_PER_TOKEN = 400
"""The most calls per token of a document: measured at most ~150 on these shapes."""
BASE_CALLS = 20_000


def within_linear_work(document: str) -> None:
    calls = work_before_execution(document)
    allowed = BASE_CALLS + CALLS_PER_TOKEN * tokens(document)
    assert calls <= allowed, f"{calls} calls for {tokens(document)} tokens: {document[:200]}"


def test_the_exponential_chain_costs_linear_work() -> None:
    """The issue's document: before the fix, 20 levels made ~4,000,000 calls."""
    small, large = work_before_execution(chain(10)), work_before_execution(chain(LEVELS))
    assert large < 6 * small  # 4 times the levels, well under 2^30 times the work
    within_linear_work(chain(LEVELS))


directive = st.sampled_from(["@include(if: $b)", "@skip(if: false)", "@include(if: true)"])


@st.composite
def exponential_documents(draw: st.DrawFn) -> str:
    """Fragments spreading the next ones 2-4 times, with variables and repeated directives in
    every fragment: what one spread would repeat, spreads repeat exponentially."""
    levels = draw(st.integers(2, 30))
    variables = draw(st.integers(1, 20))
    name = f"F{uuid.uuid4().hex[:6]}_"
    fragments = []
    for level in range(levels):
        body = []
        for _ in range(draw(st.integers(2, 4))):
            target = draw(st.integers(level + 1, min(level + 2, levels)))
            directives = " ".join(draw(st.lists(directive, max_size=4)))
            if target < levels:
                body.append(f"...{name}{target} {directives}")
            else:
                v = draw(st.integers(0, variables - 1))
                body.append(f"orders(first: $n{v}) {directives} {{ edges {{ cursor }} }}")
        if draw(st.booleans()):
            body.append("... on Query @include(if: $b) { viewer { role } }")
        fragments.append(f"fragment {name}{level} on Query {{ {' '.join(body)} }}")
    definitions = ", ".join(f"$n{v}: Int" for v in range(variables))
    operation_text = f"query Q($b: Boolean!, {definitions}) {{ ...{name}0 }}"
    return operation_text + "\n" + "\n".join(fragments)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=exponential_documents())
def test_documents_of_exponentially_repeated_fragments_cost_linear_work(document: str) -> None:
    within_linear_work(document)


@st.composite
def repeated_documents(draw: st.DrawFn) -> str:
    """Many operations over shared fragments, many same-named fields and fragments side by
    side: the shapes that graphql-core's own rules compare pairwise."""
    count = draw(st.integers(10, 200))
    shape = draw(st.sampled_from(["operations", "same field", "fragments", "inline"]))
    if shape == "operations":
        operations = " ".join(f"query Q{i}($a: Int) {{ ...F0 }}" for i in range(count))
        return f"{operations} fragment F0 on Query {{ orders(first: $a) {{ __typename }} }}"
    if shape == "same field":
        return "{ viewer { " + "role " * count + "} }"
    if shape == "fragments":
        spreads = " ".join(f"...A{i}" for i in range(count))
        fragments = " ".join(
            f"fragment A{i} on OrderConnection {{ edges {{ node {{ id }} }} }}"
            for i in range(count)
        )
        return f"{{ orders {{ {spreads} }} }} {fragments}"
    return "{ viewer { " + "... on Viewer { role } " * count + "} }"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=repeated_documents())
def test_repeated_fields_fragments_and_operations_cost_linear_work(document: str) -> None:
    within_linear_work(document)


def test_a_fragment_cycle_is_refused_by_graphql_core_and_measuring_it_ends() -> None:
    measured = limits.measure(
        parse("{ ...A } fragment A on Query { ...B viewer { role } } fragment B on Query { ...A }")
    )
    [(_, totals)] = measured.operations
    assert totals.fields == 2  # each fragment counted once; the spread closing the cycle, never
    errors = validate_document(
        SCHEMA._schema, parse("{ ...A } fragment A on Query { ...A }"), RULES
    )
    assert [error.message for error in errors] == ["Cannot spread fragment 'A' within itself."]


def test_documents_within_the_limits_are_measured_as_strawberry_measured_them() -> None:
    """Depth counts nested fields (introspection fields add none), aliases count per spread."""
    document = parse(
        "query Q { a: viewer { role } ...V orders { edges { node { id ...N } } } }"
        " fragment V on Query { b: viewer { role } c: viewer { __typename } }"
        " fragment N on Order { fills { id } }"
    )
    [(_, totals)] = limits.measure(document).operations
    assert (totals.depth, totals.aliases) == (4, 3)
