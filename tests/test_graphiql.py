"""The GraphiQL page and its assets, served by the product itself (no CDN), and the schema as SDL.

The real browser test (tests/test_browser.py) shows the page working; these check what it is
made of, fast and without a browser.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from graphql import (
    GraphQLSchema,
    build_client_schema,
    build_schema,
    get_introspection_query,
    lexicographic_sort_schema,
    parse,
    print_schema,
    validate,
)

from app.graphql.graphiql import ASSETS, EXAMPLES, LICENSES, STATIC_DIR, Defaults
from app.main import create_app
from tests.api import api_settings
from tests.conftest import Db

BROWSER = {"Accept": "text/html"}


@asynccontextmanager
async def client(database: Db, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(database, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            yield http


def sha384(data: bytes) -> str:
    return base64.b64encode(hashlib.sha384(data).digest()).decode()


def printed(schema: GraphQLSchema) -> str:
    return print_schema(lexicographic_sort_schema(schema))


def referenced(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


async def test_the_page_loads_every_asset_from_this_server_with_its_digest(database: Db) -> None:
    async with client(database) as http:
        page = await http.get("/graphql", headers=BROWSER)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        urls = referenced(page.text)
        # Every URL is relative to /graphql (so a path prefix keeps working): nothing elsewhere.
        assert sorted(urls) == sorted(["data:,"] + [f"graphiql/{a.name}" for a in ASSETS])
        for asset in ASSETS:
            assert f'integrity="sha384-{asset.sha384}"' in page.text
            served = await http.get(f"/graphiql/{asset.name}")
            assert served.status_code == 200, asset.name
            assert sha384(served.content) == asset.sha384, asset.name
    assert "unpkg" not in page.text
    assert "Cookies" not in page.text  # js-cookie is gone with the CDN


async def test_graphiql_defaults_are_served_only_to_an_app_given_them(database: Db) -> None:
    defaults = Defaults(headers={"Authorization": "Bearer dev-token"})
    app = create_app(api_settings(database), graphiql_defaults=defaults)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            given = await http.get("/graphiql/defaults.json")
            page = await http.get("/graphql", headers=BROWSER)
    assert given.status_code == 200
    tabs = given.json()["tabs"]
    assert [tab["query"] for tab in tabs] == [query for query, _ in EXAMPLES]
    assert {tab["headers"] for tab in tabs} == {'{\n  "Authorization": "Bearer dev-token"\n}'}
    async with client(database) as http:  # as serve builds it: no defaults
        none = await http.get("/graphiql/defaults.json")
        assert (none.status_code, none.json()) == (200, {})
        served = await http.get("/graphql", headers=BROWSER)
    # The page is the same either way; the token is never in it.
    assert served.text == page.text
    assert "dev-token" not in page.text


async def test_graphiqls_example_operations_are_valid_against_the_schema(database: Db) -> None:
    async with client(database) as http:
        sdl = (await http.get("/graphql/schema.graphql")).text
    schema = build_schema(sdl)
    for query, _ in EXAMPLES:
        assert validate(schema, parse(query)) == [], query


async def test_the_page_tells_the_browser_to_load_nothing_from_elsewhere(database: Db) -> None:
    async with client(database) as http:
        page = await http.get("/graphql", headers=BROWSER)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in page.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    inline = re.search(r"<script>(.*?)</script>", page.text, re.S)
    assert inline is not None
    digest = base64.b64encode(hashlib.sha256(inline.group(1).encode()).digest()).decode()
    assert policy["script-src"] == f"'self' 'sha256-{digest}'"


async def test_the_page_hands_the_headers_tab_to_subscriptions(database: Db) -> None:
    async with client(database) as http:
        page = await http.get("/graphql", headers=BROWSER)
    assert "wsConnectionParams: persistedHeaders" in page.text
    assert "shouldPersistHeaders: true" in page.text


def test_the_committed_assets_match_their_pins_and_keep_their_licences() -> None:
    for asset in ASSETS:
        assert sha384((STATIC_DIR / asset.name).read_bytes()) == asset.sha384, asset.name
    for package, _, name in LICENSES:
        text = (STATIC_DIR / "licenses" / name).read_text()
        assert "Permission is hereby granted" in text, package
    pinned = {asset.name for asset in ASSETS} | {"licenses"}
    assert {path.name for path in STATIC_DIR.iterdir()} == pinned


async def test_with_graphiql_off_neither_the_page_nor_its_assets_are_served(database: Db) -> None:
    async with client(database, graphiql=False) as http:
        page = await http.get("/graphql", headers=BROWSER)
        asset = await http.get(f"/graphiql/{ASSETS[0].name}")
    assert "GraphiQL" not in page.text
    assert asset.status_code == 404


# --- the schema as SDL ---------------------------------------------------------------------------


async def test_the_sdl_is_the_schema_the_server_answers_introspection_with(database: Db) -> None:
    async with client(database) as http:
        sdl = await http.get("/graphql/schema.graphql")
        introspected = await http.post("/graphql", json={"query": get_introspection_query()})
    assert sdl.status_code == 200
    assert sdl.headers["content-type"] == "text/plain; charset=utf-8"
    served = build_client_schema(introspected.json()["data"])
    # The same types, fields, arguments and descriptions, whatever order each printer uses.
    assert printed(build_schema(sdl.text)) == printed(served)
    assert "type Query" in sdl.text
    assert "orderUpdates" in sdl.text


async def test_the_sdl_supports_conditional_requests(database: Db) -> None:
    async with client(database) as http:
        first = await http.get("/graphql/schema.graphql")
        again = await http.get(
            "/graphql/schema.graphql", headers={"If-None-Match": first.headers["etag"]}
        )
    assert again.status_code == 304
    assert again.content == b""


async def test_without_introspection_the_sdl_is_not_published_either(database: Db) -> None:
    async with client(database, introspection=False) as http:
        sdl = await http.get("/graphql/schema.graphql")
        introspected = await http.post(
            "/graphql", json={"query": "{ __schema { types { name } } }"}
        )
    assert sdl.status_code == 404
    assert "type Query" not in sdl.text
    assert "errors" in introspected.json()


# --- a subscription sent over HTTP ---------------------------------------------------------------


async def test_a_subscription_over_http_is_refused_with_bad_user_input(database: Db) -> None:
    # GraphiQL sends one over HTTP when run before it has parsed the edit; so can any client.
    async with client(database) as http:
        query = "subscription Updates { orderUpdates { id } }"
        posted = await http.post(
            "/graphql",
            json={"query": query},
            headers={"Accept": "application/json, multipart/mixed"},
        )
        got = await http.get("/graphql", params={"query": query})
        # The word alone does not make a subscription.
        named = await http.post("/graphql", json={"query": "query subscription { __typename }"})
    for response in (posted, got):
        assert response.status_code == 400, response.text
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "over WebSocket" in error["message"]
    assert named.json() == {"data": {"__typename": "Query"}}
