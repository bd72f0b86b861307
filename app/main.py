"""create_app(settings) -> the Starlette application; its lifespan owns the pool and the listener."""

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
from app.db.listener import OrderChangeListener
from app.db.session import Database, open_database
from app.db.urls import async_url, libpq_url
from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.schema import build_schema
from app.graphql.subscriptions import Subscription
from app.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def database_for(settings: Settings) -> Database:
    if settings.api_database_url is None:
        raise SettingsError("API_DATABASE_URL is not set (the API logs in as 'authenticator')")
    return open_database(async_url(settings.api_database_url), settings, pooler=settings.db_pooler)


def create_app(settings: Settings, *, database: Database | None = None) -> Starlette:
    settings.check_token_config()
    verifier = TokenVerifier(settings)
    db = database if database is not None else database_for(settings)
    # The one LISTEN connection of this process logs in as the pool does (authenticator).
    listener = OrderChangeListener(libpq_url(db.engine.url))
    schema = build_schema(settings, subscription=Subscription)
    graphql = GraphQLEndpoint(
        schema, settings=settings, database=db, verifier=verifier, listener=listener
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            role = await db.check_login_role()
        except BaseException:
            await db.dispose()  # refusing to start must not leave the pool's connection open
            raise
        log.info("serving as database role %s", role.name)
        await listener.start()
        try:
            yield
        finally:
            await listener.stop()
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
    app.state.listener = listener
    app.state.settings = settings
    return app


def describe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
