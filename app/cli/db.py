"""``python -m app db``: the database's URL, migrations, dev seed, psql, and stopping it.

Each action is a subcommand of its own, so that ``--help`` anywhere only prints help and an
unknown argument is refused; only ``psql`` passes the arguments it does not know to psql.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from app.cli import arguments
from app.cli.connections import connecting, embedded_settings
from app.settings import Settings

SEED_FILE = Path(__file__).resolve().parents[2] / "seeds" / "dev" / "order_execution.sql"

ACTIONS = {
    "url": ("print the owner's connection URL (starts the embedded server if needed)", ""),
    "upgrade": (
        "migrate the database to head and write MARKET_CLOSE into it",
        "DATABASE_URL=postgresql://owner:pw@db.example.com/orders python -m app db upgrade",
    ),
    "seed": ("load the dev seed (seeds/dev/order_execution.sql)", "python -m app db seed"),
    "psql": (
        "run psql on the database as its owner; the arguments after psql go to psql"
        " (psql's own help: python -m app db psql -- --help)",
        'python -m app db psql -c "select * from order_limits"',
    ),
    "stop": (
        "stop the embedded PostgreSQL; refused while dev, serve, worker or psql uses it",
        "python -m app db stop",
    ),
}


def add_parser(sub: Any) -> None:
    db = arguments.add_command(
        sub,
        "db",
        "the database: url, upgrade, seed, psql, stop",
        "python -m app db upgrade",
    )
    db.set_defaults(run=run)
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (summary, example) in ACTIONS.items():
        action = arguments.add_command(
            actions, name, summary, example or f"python -m app db {name}"
        )
        if name == "psql":
            action.set_defaults(passes_unknown_arguments=True)
        if name == "stop":
            action.add_argument(
                "--force",
                action="store_true",
                help="stop it even while another command uses it (their requests then fail)",
            )


def load_seed(owner_url: str) -> None:
    from app.db.embedded import run_psql

    if run_psql(owner_url, ["-q", "-v", "ON_ERROR_STOP=1", "-f", str(SEED_FILE)], quiet=True):
        raise arguments.CommandFailed(f"loading {SEED_FILE} failed")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app.db import embedded, trading_session
    from app.db.migrations import upgrade_to_head
    from app.db.urls import libpq_url

    if args.action == "stop":
        try:
            stopped = embedded.stop(settings.data_dir, force=args.force)
        except embedded.InUse as error:
            raise arguments.CommandFailed(str(error)) from None
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
