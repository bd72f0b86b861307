"""Builders for end-to-end API tests: an app on a test database, tokens, a GraphQL client."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from sqlalchemy import event
from starlette.applications import Starlette

from app.auth.jwt import mint_token
from app.graphql.endpoint import GraphQLEndpoint
from app.main import create_app
from app.settings import Settings

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def api_settings(database: Any, **overrides: Any) -> Settings:
    base = Settings.from_env(
        {
            "JWT_SECRET": SECRET,
            "API_DATABASE_URL": database.api_url.render_as_string(hide_password=False),
            "DATABASE_URL": database.owner_url.render_as_string(hide_password=False),
            # As production must be configured when API_DATABASE_URL is a transaction pooler.
            "DB_POOLER": "transaction" if getattr(database, "pooler", None) else "none",
        }
    )
    # A compiler bug must fail the test, not hide behind the resolvers' fallback.
    return dataclasses.replace(base, **{"compiled_queries_strict": True, **overrides})


def make_token(
    settings: Settings,
    sub: uuid.UUID | None = None,
    role: str = "authenticated",
    **extra: Any,
) -> str:
    return mint_token(settings, sub=sub, role=role, extra=extra or None)


@dataclasses.dataclass
class Client:
    http: httpx.AsyncClient
    settings: Settings
    app: Starlette

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        response = await self.post(query, variables, token=token)
        assert response.status_code in (200, 503), response.text
        body: dict[str, Any] = response.json()
        return body

    def token(self, sub: uuid.UUID | None = None, role: str = "authenticated", **extra: Any) -> str:
        return make_token(self.settings, sub, role, **extra)


def graphql_endpoint(app: Starlette) -> GraphQLEndpoint:
    [endpoint] = {
        route.endpoint
        for route in app.routes
        if isinstance(getattr(route, "endpoint", None), GraphQLEndpoint)
    }
    return endpoint


@contextmanager
def statements_sent(client: Client) -> Iterator[list[str]]:
    """Every SQL statement the app sends while the block runs (N+1 checks, 'nothing ran').

    The app sends SQL in two places: through SQLAlchemy (resolvers, mutations) and, for
    compiled queries, straight on the asyncpg connection (``Database.read_json``, which
    sends the role and claims, then the one statement). Both are counted.
    """
    sent: list[str] = []
    database = client.app.state.database
    engine = database.engine.sync_engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    read_json = database.read_json

    async def counted_read_json(claims: Any, sql: str, args: Any) -> str:
        sent.extend(
            ["SELECT order_api_private.become(...), set_config('statement_timeout', ...)", sql]
        )
        result: str = await read_json(claims, sql, args)
        return result

    event.listen(engine, "before_cursor_execute", record)
    database.read_json = counted_read_json
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
        del database.read_json


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[Client]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Client(http=http, settings=settings, app=app)
