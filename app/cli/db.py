"""``python -m app db``: the database's URL, migrations, dev seed, psql, and stopping it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from app.cli.connections import connecting, embedded_settings
from app.settings import Settings

SEED_FILE = Path(__file__).resolve().parents[2] / "seeds" / "dev" / "order_execution.sql"


def add_parser(sub: Any) -> None:
    db = sub.add_parser("db", help="the database: url, upgrade, seed, psql, stop")
    db.add_argument("action", choices=["url", "upgrade", "seed", "psql", "stop"])
    db.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for psql")
    db.set_defaults(run=run)


def load_seed(owner_url: str) -> None:
    from app.db.embedded import run_psql

    if run_psql(owner_url, ["-q", "-v", "ON_ERROR_STOP=1", "-f", str(SEED_FILE)], quiet=True):
        raise SystemExit(f"loading {SEED_FILE} failed")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app.db import embedded, trading_session
    from app.db.migrations import upgrade_to_head
    from app.db.urls import libpq_url

    if args.action == "stop":
        stopped = embedded.stop(settings.data_dir)
        print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
        return 0
    configured = settings.database_url
    settings, _ = embedded_settings(settings)
    assert settings.database_url is not None
    if args.action == "url":
        print(libpq_url(settings.database_url))
    elif args.action == "upgrade":
        with connecting("DATABASE_URL" if configured else "embedded", configured):
            upgrade_to_head(settings.database_url)
            trading_session.apply(settings.database_url, settings.market_close)
    elif args.action == "seed":
        load_seed(settings.database_url)
    elif args.action == "psql":
        return embedded.run_psql(settings.database_url, args.rest)
    return 0
