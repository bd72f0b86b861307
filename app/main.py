"""create_app(settings) -> the Starlette application; its lifespan owns the pool and the change feed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from app.auth.jwt import TokenVerifier
from app.db import migrations
from app.db.change_feed import ChangeFeed
from app.db.session import Database, create_engine
from app.db.urls import async_url
from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.schema import build_schema
from app.graphql.subscriptions import Subscription
from app.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def database_for(settings: Settings) -> Database:
    if settings.api_database_url is None:
        raise SettingsError("API_DATABASE_URL is not set (the API logs in as 'authenticator')")
    return Database(
        create_engine(
            async_url(settings.api_database_url),
            pool_size=settings.db_pool_size,
            pool_timeout=settings.db_pool_timeout,
            statement_timeout_ms=settings.statement_timeout_ms,
        )
    )


def create_app(settings: Settings, *, database: Database | None = None) -> Starlette:
    settings.check_token_config()
    verifier = TokenVerifier(settings)
    db = database if database is not None else database_for(settings)
    # The one reader of the change feed of this process, on the pool (as authenticator).
    changes = ChangeFeed(db, poll_seconds=settings.change_feed_poll_ms / 1000)
    schema = build_schema(settings, subscription=Subscription)
    graphql = GraphQLEndpoint(
        schema, settings=settings, database=db, verifier=verifier, changes=changes
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            role = await db.check_login_role()
        except BaseException:
            await db.dispose()  # refusing to start must not leave the pool's connection open
            raise
        log.info("serving as database role %s", role.name)
        await changes.start()
        try:
            yield
        finally:
            await changes.stop()
            await db.dispose()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    head = migrations.head_revision()  # read the scripts once, not per probe

    async def readyz(request: Request) -> JSONResponse:
        try:
            async with db.engine.connect() as conn:
                current = await migrations.current_revision(conn)
        except Exception as error:  # any failure to reach the database means not ready
            log.warning("readiness check failed: %s", error)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        if current != head:
            return JSONResponse(
                {"status": "unavailable", "migration": current, "expected": head}, 503
            )
        return JSONResponse({"status": "ready", "migration": current})

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.database = db
    app.state.changes = changes
    app.state.settings = settings
    return app


def describe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
