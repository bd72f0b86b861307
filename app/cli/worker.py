"""``python -m app worker``: the execution engine as its own process."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli import arguments
from app.cli.connections import api_settings, connecting
from app.settings import Settings


def add_parser(sub: Any) -> None:
    arguments.add_command(
        sub,
        "worker",
        "the execution engine as its own process",
        "API_DATABASE_URL=postgresql://authenticator:pw@db.example.com/orders python -m app worker",
        details="It works the submitted orders (risk checks, routing to the paper venue,"
        " fills);\nrun one or more beside python -m app serve.",
    ).set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app.engine.run import main as run_engine

    settings = api_settings(settings)
    with connecting("API_DATABASE_URL", settings.api_database_url):
        return run_engine(settings)
