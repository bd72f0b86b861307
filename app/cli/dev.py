"""``python -m app dev``: the README's one-command local start.

Embedded PostgreSQL (or DATABASE_URL), migrations at head, the dev seed, the API with
GraphiQL and an in-process execution engine, and a ready-to-paste token for a seed trader.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from app.cli import arguments
from app.cli.connections import api_settings, check_api_login, connecting, embedded_settings
from app.cli.db import load_seed
from app.cli.token import dev_secret
from app.settings import Settings

DEV_TRADER = UUID("11111111-1111-4111-8111-111111111111")


def add_parser(sub: Any) -> None:
    dev = arguments.add_command(
        sub,
        "dev",
        "everything on localhost: database, migrations, seed, API, engine",
        "python -m app dev --port 8080",
        details="""\
The embedded PostgreSQL (in ORDER_API_DATA_DIR, or DATABASE_URL when set) is migrated to
head and seeded; the API serves GraphiQL at http://HOST:PORT/graphql with an execution
engine inside; a token for a seed trader is printed once the server listens.

On exit (Ctrl-C) dev stops the embedded PostgreSQL when dev started it; one that was
already running is left running, and python -m app db stop stops it.""",
    )
    arguments.add_listen_options(dev)
    dev.add_argument("--no-worker", action="store_true", help="do not run the execution engine")
    dev.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app import serving
    from app.auth.jwt import mint_token
    from app.db import trading_session
    from app.db.migrations import upgrade_to_head
    from app.graphql.graphiql import Defaults
    from app.main import create_app
    from app.serving import uvicorn_options

    settings = arguments.listen_settings(settings, args)
    sock = serving.bind(settings.host, settings.port)  # a taken port fails before anything
    configured = settings.database_url is not None
    started = False
    try:
        if configured:
            settings = api_settings(settings)
        else:
            settings, started = embedded_settings(settings)
        settings = dataclasses.replace(settings, jwt_secret=dev_secret(settings))
        assert settings.database_url is not None
        owner, api = ("DATABASE_URL", "API_DATABASE_URL") if configured else ("embedded", "")
        with connecting(owner, settings.database_url if configured else None):
            upgrade_to_head(settings.database_url)
            trading_session.apply(settings.database_url, settings.market_close)
        load_seed(settings.database_url)
        with connecting(api or owner, settings.api_database_url if configured else None):
            asyncio.run(check_api_login(settings))

        token = mint_token(settings, sub=DEV_TRADER, ttl_seconds=7 * 24 * 3600)
        url = f"http://{settings.host}:{settings.port}/graphql"

        def banner() -> None:
            print(
                f"\nOrder API ready: {url} (GraphiQL in a browser)\n"
                f"Dev token for seed trader {DEV_TRADER} (valid 7 days); in GraphiQL's Headers"
                f' tab:\n\n{{"Authorization": "Bearer {token}"}}\n\n'
                f"Mint others: python -m app token --sub UUID [--role ROLE]\n",
                flush=True,
            )

        # GraphiQL opens with the examples and this token in its Headers tab (dev only).
        defaults = Defaults(headers={"Authorization": f"Bearer {token}"})
        app = create_app(settings, graphiql_defaults=defaults)
        if not args.no_worker:
            _attach_worker(app, settings)
        return serving.run(
            app, sock, on_ready=banner, log_level="info", **uvicorn_options(settings)
        )
    finally:
        sock.close()
        if not configured:
            _leave_embedded(settings, started=started)


def _leave_embedded(settings: Settings, *, started: bool) -> None:
    """Stop the embedded server dev started, unless another command still uses it; say
    plainly what happened to it either way."""
    from app.db import embedded

    if not started:
        print(
            "embedded PostgreSQL left running: it was running before dev started"
            " (python -m app db stop stops it)",
            flush=True,
        )
        return
    try:
        embedded.stop(settings.data_dir)
    except embedded.InUse:
        print(
            "embedded PostgreSQL left running: another command uses it"
            " (python -m app db stop stops it once that ends)",
            flush=True,
        )
    else:
        print("embedded PostgreSQL stopped", flush=True)


def _attach_worker(app: object, settings: Settings) -> None:
    """Run one execution engine inside the dev server's event loop."""
    from starlette.applications import Starlette

    from app.engine.run import run_worker

    assert isinstance(app, Starlette)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Starlette) -> AsyncIterator[None]:
        async with inner(app_):
            stop = asyncio.Event()
            task = asyncio.create_task(run_worker(settings, stop))
            try:
                yield
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=10)

    app.router.lifespan_context = lifespan
