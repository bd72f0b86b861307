"""Command line: ``python -m app {dev,serve,worker,token,db,audit}``.

``dev`` is the README's one-command local start: embedded PostgreSQL,
migrations at head, the dev seed, the API with GraphiQL and an in-process
execution engine, and a ready-to-paste token for a seed trader.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets
import sys
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from uuid import UUID

from app import logs
from app.settings import APP_ROLES, Settings, SettingsError

log = logging.getLogger("app")

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


def _api_settings(settings: Settings) -> Settings:
    """For ``serve`` and ``worker``: the configured login (API_DATABASE_URL, or derived from
    DATABASE_URL), else the embedded server's; never the embedded server when a database is
    configured."""
    from app.db.urls import api_database_url

    configured = api_database_url(settings)  # refuses DATABASE_URL without a way to log in
    if configured is None:
        return _embedded_settings(settings)[0]
    return dataclasses.replace(settings, api_database_url=configured)


@contextlib.contextmanager
def _connecting(name: str, url: str | None) -> Iterator[None]:
    """A failure to connect becomes one line naming the variable and the server."""
    from app.db.failures import connection_failure, describe

    try:
        yield
    except Exception as error:
        reason = connection_failure(error)
        if reason is None:
            raise
        where = f"{name} ({describe(url)})" if url else f"the {name} PostgreSQL"
        raise CannotConnect(f"cannot connect to the database at {where}: {reason}") from None


class CannotConnect(Exception):
    """The database named in the message cannot be reached or logged in to."""


async def _check_api_login(settings: Settings) -> None:
    """What the server's startup checks first, checked before the server starts so that a
    failure is one line rather than uvicorn's traceback of the app's startup."""
    from app.main import database_for

    database = database_for(settings)
    try:
        await database.check_login_role()
    finally:
        await database.dispose()


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
    from app import serving
    from app.auth.jwt import mint_token
    from app.db import embedded, trading_session
    from app.db.migrations import upgrade_to_head
    from app.main import create_app
    from app.serving import uvicorn_options

    sock = serving.bind(settings.host, settings.port)  # a taken port fails before anything
    configured = settings.database_url is not None
    started = False
    try:
        if configured:
            settings = _api_settings(settings)
        else:
            settings, started = _embedded_settings(settings)
        settings = dataclasses.replace(settings, jwt_secret=_dev_secret(settings))
        assert settings.database_url is not None
        owner, api = ("DATABASE_URL", "API_DATABASE_URL") if configured else ("embedded", "")
        with _connecting(owner, settings.database_url if configured else None):
            upgrade_to_head(settings.database_url)
            trading_session.apply(settings.database_url, settings.market_close)
        load_seed(settings.database_url)
        with _connecting(api or owner, settings.api_database_url if configured else None):
            asyncio.run(_check_api_login(settings))

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

        app = create_app(settings)
        if not args.no_worker:
            _attach_worker(app, settings)
        return serving.run(
            app, sock, on_ready=banner, log_level="info", **uvicorn_options(settings)
        )
    finally:
        sock.close()
        if started:
            embedded.stop(settings.data_dir)


def _attach_worker(app: object, settings: Settings) -> None:
    """Run one execution engine inside the dev server's event loop."""
    from starlette.applications import Starlette

    from app.engine.run import run_worker

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
    from app import serving, supervisor
    from app.main import create_app
    from app.serving import uvicorn_options

    sock = serving.bind(settings.host, settings.port)
    try:
        settings = _api_settings(settings)
        with _connecting("API_DATABASE_URL", settings.api_database_url):
            asyncio.run(_check_api_login(settings))
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


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from app.engine.run import main as run_engine

    settings = _api_settings(settings)
    with _connecting("API_DATABASE_URL", settings.api_database_url):
        return run_engine(settings)


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth.jwt import mint_token

    if settings.jwt_secret is None and settings.database_url is None:
        settings = dataclasses.replace(settings, jwt_secret=_dev_secret(settings))
    print(mint_token(settings, sub=args.sub, role=args.role, ttl_seconds=args.ttl))
    return 0


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from app.db import embedded, trading_session
    from app.db.migrations import upgrade_to_head
    from app.db.urls import libpq_url

    if args.action == "stop":
        stopped = embedded.stop(settings.data_dir)
        print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
        return 0
    configured = settings.database_url
    settings, _ = _embedded_settings(settings)
    assert settings.database_url is not None
    if args.action == "url":
        print(libpq_url(settings.database_url))
    elif args.action == "upgrade":
        with _connecting("DATABASE_URL" if configured else "embedded", configured):
            upgrade_to_head(settings.database_url)
            trading_session.apply(settings.database_url, settings.market_close)
    elif args.action == "seed":
        load_seed(settings.database_url)
    elif args.action == "psql":
        return embedded.run_psql(settings.database_url, args.rest)
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """Verify or export the hash-chained audit trail as compliance_auditor (app/audit)."""
    from app.audit import commands
    from app.audit.store import Selection

    if args.action == "verify" and args.file is not None:
        return commands.verify_file(args.file)
    settings = _api_settings(settings)
    url = settings.api_database_url
    assert url is not None
    configured = "API_DATABASE_URL" if settings.database_url else "embedded"
    with _connecting(configured, url if settings.database_url else None):
        if args.action == "verify":
            selection = Selection(trader=args.trader, order=args.order, since=args.since)
            return commands.verify_database(url, settings.db_pooler, selection)
        selection = Selection(trader=args.trader, since=args.since, until=args.until)
        return commands.export(url, settings.db_pooler, selection, args.format, args.output)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other refusal of the command line (argparse adds a usage line).
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def _positive_seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1 second, got {value}")
    return value


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: add one, e.g. {text}Z for UTC"
        )
    return value


def _add_audit_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify or export the hash-chained audit trail")
    actions = audit.add_subparsers(dest="action", required=True)
    verify = actions.add_parser(
        "verify", help="recompute the chains; exit 1 naming every row that does not verify"
    )
    verify.add_argument("--trader", type=_uuid, help="only this trader's orders")
    verify.add_argument("--order", type=_uuid, help="only this order's chain")
    verify.add_argument(
        "--since", type=_instant, help="only rows at or after this time (ISO 8601, with zone)"
    )
    verify.add_argument(
        "--file", type=Path, help="verify this export (audit export) instead of the database"
    )
    export = actions.add_parser("export", help="write the audit trail with its hashes")
    export.add_argument("--from", dest="since", type=_instant, required=True, help="inclusive")
    export.add_argument("--to", dest="until", type=_instant, required=True, help="exclusive")
    export.add_argument("--trader", type=_uuid, help="only this trader's rows")
    export.add_argument("--format", choices=["csv", "jsonl"], required=True)
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m app", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser(
        "dev", help="everything on localhost: database, migrations, seed, API, engine"
    )
    dev.add_argument("--no-worker", action="store_true", help="do not run the execution engine")
    serve = sub.add_parser(
        "serve", help="the API in production mode, configured from the environment"
    )
    serve.add_argument(
        "--workers",
        type=_positive_count,
        default=None,
        help="worker processes, each with its own pool of DB_POOL_SIZE connections"
        " (default: one per CPU this process may use)",
    )
    sub.add_parser("worker", help="the execution engine as its own process")
    token = sub.add_parser("token", help="mint a development token signed with JWT_SECRET")
    token.add_argument("--sub", type=_uuid, help="trader UUID (required for role authenticated)")
    token.add_argument("--role", default="authenticated", choices=APP_ROLES)
    token.add_argument("--ttl", type=_positive_seconds, default=3600, help="lifetime in seconds")
    db = sub.add_parser("db", help="the database: url, upgrade, seed, psql, stop")
    db.add_argument("action", choices=["url", "upgrade", "seed", "psql", "stop"])
    db.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for psql")
    _add_audit_parser(sub)
    args = parser.parse_args(argv)
    audit_verify = args.command == "audit" and args.action == "verify"
    if audit_verify and args.file is not None and (args.trader or args.order or args.since):
        parser.error("--file verifies the whole export: no --trader, --order or --since")
    if args.command == "audit" and args.action == "export" and args.since >= args.until:
        parser.error("--from must be before --to")

    _quiet_pgserver()
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format)
        if args.command == "token" and args.role == "authenticated" and not args.sub:
            parser.error("--sub is required for role authenticated")
        handler = {
            "dev": cmd_dev,
            "serve": cmd_serve,
            "worker": cmd_worker,
            "token": cmd_token,
            "db": cmd_db,
            "audit": cmd_audit,
        }[args.command]
        return handler(settings, args)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except CannotConnect as error:
        print(f"database error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        from app.audit.commands import AuditError
        from app.db.session import UnsafeLoginRole
        from app.serving import PortUnavailable

        if isinstance(error, PortUnavailable | UnsafeLoginRole | AuditError):
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
