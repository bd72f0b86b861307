"""create_app(settings) -> the Starlette application; its lifespan owns the pool and the change feed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import strawberry
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics, tracing
from app.auth.jwt import TokenVerifier
from app.db import migrations, readiness
from app.db.change_feed import ChangeFeed
from app.db.consistency import TOKEN_HEADER
from app.db.replicas import Replicas
from app.db.session import Database, open_database
from app.db.urls import async_url, libpq_url
from app.engine import queue
from app.graphql import graphiql, order_events, positions
from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.schema import build_schema
from app.graphql.sdl import sdl_route
from app.metrics import AppMetrics
from app.settings import Settings, SettingsError
from app.telemetry import RequestTelemetry

log = logging.getLogger(__name__)


@strawberry.type
class Subscription(order_events.Subscription, positions.Subscription):
    """The schema's subscriptions: orderUpdates (graphql/subscriptions.py), whose class both
    extend, orderEvents (graphql/order_events.py) and positionUpdates (graphql/positions.py)."""


def database_for(settings: Settings) -> Database:
    if settings.api_database_url is None:
        raise SettingsError("API_DATABASE_URL is not set (the API logs in as 'authenticator')")
    return open_database(async_url(settings.api_database_url), settings, pooler=settings.db_pooler)


def replicas_for(settings: Settings, primary: Database) -> Replicas | None:
    """The read replicas of ``API_READ_DATABASE_URLS`` beside ``primary``; None without."""
    if not settings.read_database_urls:
        return None
    return Replicas(
        primary,
        [
            open_database(async_url(url), settings, pooler=settings.db_pooler)
            for url in settings.read_database_urls
        ],
        max_lag_seconds=settings.read_replica_max_lag_seconds,
        wait_ms=settings.read_your_writes_wait_ms,
    )


CORS_HEADERS = ("Authorization", "Content-Type", "X-Request-Id", TOKEN_HEADER)
"""The request headers the API reads; CORS_ALLOW_HEADERS adds others (a client's own)."""


def cors(settings: Settings) -> Middleware:
    """CORS for HTTP (the WebSocket upgrade's Origin check is the endpoint's, from the same list).

    Callers authenticate with the Authorization header and the API sets no cookies, so
    credentialed requests are never allowed, and ``*`` is then as safe as CORS allows. With
    CORS_ORIGINS unset no origin is allowed: a preflight from anywhere is refused. A header
    the frontend sends that is neither the API's nor in CORS_ALLOW_HEADERS fails its preflight.
    """
    extra = settings.cors_allow_headers
    headers = ["*"] if extra == ("*",) else [*CORS_HEADERS, *extra]
    return Middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=headers,
        allow_credentials=False,
        # Readable by the calling page: the request id to quote, the 401's Bearer challenge.
        expose_headers=["X-Request-Id", "WWW-Authenticate", TOKEN_HEADER],
        max_age=600,
    )


class Api(Starlette):
    """The application: Starlette's, with a shorter way in for ``POST /graphql``.

    Every API request is a POST to /graphql, and its route is known from the scope alone.
    It goes through the same middleware as any other request (the server-error handler,
    telemetry, CORS: built from the same list), straight to the endpoint, without
    Starlette's exception middleware and router: the endpoint answers its own refusals
    (graphql/errors.py), so neither had anything to do for it but cost each request
    (issue 19, bench/stage_profile.py). Everything else takes Starlette's whole stack.
    """

    def __init__(self, *, graphql: ASGIApp, **options: Any) -> None:
        super().__init__(**options)
        stack = graphql
        for cls, args, kwargs in reversed(self.user_middleware):
            stack = cls(stack, *args, **kwargs)
        self._graphql_post = ServerErrorMiddleware(stack, debug=self.debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/graphql" and scope["method"] == "POST":
            scope["app"] = self
            await self._graphql_post(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    graphiql_defaults: graphiql.Defaults | None = None,
) -> Starlette:
    """The API. ``graphiql_defaults`` (dev's example operations and token) only from
    ``python -m app dev``: never a token in what ``serve`` answers."""
    verifier = TokenVerifier(settings)  # refuses a token configuration it cannot verify with
    db = database if database is not None else database_for(settings)
    if tracing.configure(settings):
        tracing.instrument_engine(db.engine)
    # The one reader of the change feed of this process logs in as the pool does (authenticator).
    changes = ChangeFeed(
        libpq_url(db.engine.url),
        poll_seconds=settings.change_feed_poll_ms / 1000,
        max_lag_seconds=settings.subscription_max_lag_ms / 1000,
        connect_timeout=settings.db_connect_timeout,
        prepared_statements=settings.db_pooler != "transaction",
    )
    schema = build_schema(settings, subscription=Subscription)
    replicas = replicas_for(settings, db)
    graphql = GraphQLEndpoint(
        schema,
        settings=settings,
        database=db,
        verifier=verifier,
        changes=changes,
        replicas=replicas,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            role = await db.check_login_role()
        except BaseException:
            await db.dispose()  # refusing to start must not leave the pool's connection open
            raise
        log.info("serving as database role %s", role.name)
        if settings.compiled_mutations and not role.compiled_writes:
            # Every mutation is still served, by the resolvers; say what the fast path needs.
            graphql.compiled.plans.mutations = False
            log.warning(
                "compiled mutations are off: the login role %s may not execute the functions"
                " of schema order_api_private (run the migrations to head; with a login role"
                " of your own, grant them as README's 'Deploy on Supabase' says)",
                role.name,
            )
        await changes.start()
        if replicas is not None:
            await replicas.start()
        # After the compiled mutations' verdict above: trusted documents are compiled now.
        await graphql.trusted.start()
        try:
            async with metrics.watching_the_process():
                yield
        finally:
            await graphql.trusted.stop()
            await changes.stop()  # ends every subscription
            if graphql.feed is not None:
                await graphql.feed.close()  # their reads in flight give their connections back
            if replicas is not None:
                await replicas.stop()
            await db.dispose()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    head = migrations.head_revision()  # read the scripts once, not per probe

    probes = readiness.StateLog(log, "readiness")

    async def readyz(request: Request) -> JSONResponse:
        state = await readiness.check(db.engine, head)
        probes.report(state)
        body = state.body()
        if replicas is not None:
            body["databases"] = replicas.states()  # each one's state and lag, as last checked
        return JSONResponse(body, 200 if state.ready else 503)

    routes: list[BaseRoute] = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        sdl_route(schema, settings),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    if settings.graphiql:
        routes.append(graphiql.defaults_route(graphiql_defaults))  # before the mount
        routes.append(graphiql.assets_mount())
    if settings.metrics:
        routes.append(
            Route(
                "/metrics",
                AppMetrics(db.engine, changes, partial(queue.count, db), replicas).endpoint,
            )
        )
    where = "the API is at /graphql" + (
        " (GraphiQL there in a browser)" if settings.graphiql else ""
    )

    async def not_found(request: Request, exc: Exception) -> PlainTextResponse:
        # A newcomer's first request is often GET /: a bare "Not Found" says nothing.
        return PlainTextResponse(f"Not Found: {where}", status_code=404)

    app = Api(
        graphql=graphql,
        routes=routes,
        exception_handlers={404: not_found},
        middleware=[Middleware(RequestTelemetry), cors(settings)],
        lifespan=lifespan,
    )
    app.state.database = db
    app.state.replicas = replicas
    app.state.changes = changes
    app.state.feed = graphql.feed
    app.state.settings = settings
    return app


def describe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
