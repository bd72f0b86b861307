"""``python -m app serve``: the API in production mode, one or more worker processes."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
from typing import Any

from app.cli import arguments
from app.cli.connections import api_settings, check_api_login, connecting
from app.settings import Settings

log = logging.getLogger("app")


def add_parser(sub: Any) -> None:
    serve = arguments.add_command(
        sub,
        "serve",
        "the API in production mode, configured from the environment",
        "API_DATABASE_URL=postgresql://authenticator:pw@db.example.com/orders \\\n"
        "  JWT_JWKS=https://auth.example.com/.well-known/jwks.json \\\n"
        "  python -m app serve --host 0.0.0.0 --port 8000 --workers 4",
        details="It logs in as API_DATABASE_URL (the embedded PostgreSQL when no database is"
        " configured);\nrun the migrations first (python -m app db upgrade). The execution"
        " engine runs apart:\npython -m app worker.",
    )
    arguments.add_listen_options(serve)
    serve.add_argument(
        "--workers",
        type=arguments.positive_count,
        default=None,
        help="worker processes, each with its own pool of DB_POOL_SIZE connections"
        " (default: one per CPU this process may use)",
    )
    serve.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app import serving, supervisor
    from app.main import create_app
    from app.serving import uvicorn_options

    settings = arguments.listen_settings(settings, args)
    sock = serving.bind(settings.host, settings.port)
    try:
        settings = api_settings(settings)
        with connecting("API_DATABASE_URL", settings.api_database_url):
            asyncio.run(check_api_login(settings))
        where = f"http://{settings.host}:{settings.port}/graphql"
        workers = args.workers or supervisor.default_workers()
        plural = "s" if workers > 1 else ""
        return supervisor.run(
            functools.partial(create_app, settings),
            sock,
            workers=workers,
            on_ready=lambda: log.info("Order API ready: %s (%d worker%s)", where, workers, plural),
            proxy_headers=True,
            **uvicorn_options(settings),
        )
    finally:
        sock.close()
