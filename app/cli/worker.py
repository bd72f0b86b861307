"""``python -m app worker``: the execution engine as its own process."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli.connections import api_settings, connecting
from app.settings import Settings


def add_parser(sub: Any) -> None:
    sub.add_parser("worker", help="the execution engine as its own process").set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app.engine.run import main as run_engine

    settings = api_settings(settings)
    with connecting("API_DATABASE_URL", settings.api_database_url):
        return run_engine(settings)
