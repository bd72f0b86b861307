"""``python -m app audit``: verify or export the hash-chained audit trail as
compliance_auditor (the work itself is app/audit)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from app.cli import arguments
from app.cli.connections import api_settings, connecting
from app.settings import Settings


def add_parser(sub: Any) -> None:
    audit = arguments.add_command(
        sub,
        "audit",
        "verify or export the hash-chained audit trail, as compliance_auditor",
        "python -m app audit verify --since 2026-01-01T00:00Z",
    )
    audit.set_defaults(run=run, check=check)
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = arguments.add_command(
        actions,
        "verify",
        "recompute the chains; exit 1 naming every row that does not verify",
        "python -m app audit verify --trader 11111111-1111-4111-8111-111111111111",
    )
    verify.add_argument("--trader", type=arguments.uuid, help="only this trader's orders")
    verify.add_argument("--order", type=arguments.uuid, help="only this order's chain")
    verify.add_argument(
        "--since",
        type=arguments.instant,
        help="only rows at or after this time (ISO 8601, with zone)",
    )
    verify.add_argument(
        "--file", type=Path, help="verify this export (audit export) instead of the database"
    )
    export = arguments.add_command(
        actions,
        "export",
        "write the audit trail with its hashes, for audit verify --file",
        "python -m app audit export --from 2026-01-01T00:00Z --to 2026-02-01T00:00Z"
        " --format jsonl --output january.jsonl",
    )
    export.add_argument(
        "--from", dest="since", type=arguments.instant, required=True, help="inclusive"
    )
    export.add_argument(
        "--to", dest="until", type=arguments.instant, required=True, help="exclusive"
    )
    export.add_argument("--trader", type=arguments.uuid, help="only this trader's rows")
    export.add_argument("--format", choices=["csv", "jsonl"], required=True)
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")


def check(args: argparse.Namespace) -> None:
    """The combinations argparse cannot refuse, refused before the environment is read."""
    if (
        args.action == "verify"
        and args.file is not None
        and (args.trader or args.order or args.since)
    ):
        raise arguments.UsageError(
            "--file verifies the whole export: no --trader, --order or --since"
        )
    if args.action == "export" and args.since >= args.until:
        raise arguments.UsageError("--from must be before --to")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app.audit import commands
    from app.audit.store import Selection

    if args.action == "verify" and args.file is not None:
        return commands.verify_file(args.file)
    settings = api_settings(settings)
    url = settings.api_database_url
    assert url is not None
    configured = "API_DATABASE_URL" if settings.database_url else "embedded"
    with connecting(configured, url if settings.database_url else None):
        if args.action == "verify":
            selection = Selection(trader=args.trader, order=args.order, since=args.since)
            return commands.verify_database(url, settings.db_pooler, selection)
        selection = Selection(trader=args.trader, since=args.since, until=args.until)
        return commands.export(url, settings.db_pooler, selection, args.format, args.output)
