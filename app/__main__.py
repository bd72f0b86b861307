"""Command line: ``python -m app {dev,serve,worker,token,db,audit}``.

``dev`` is the README's one-command local start: embedded PostgreSQL,
migrations at head, the dev seed, the API with GraphiQL and an in-process
execution engine, and a ready-to-paste token for a seed trader.

This module parses and dispatches; each command lives in app/cli/ under its own name. It
also decides how a refusal reads: one line on stderr, exit 2 for usage and configuration,
1 for a database, port or audit failure.
"""

from __future__ import annotations

import sys

from app import logs
from app.cli import audit, db, dev, serve, token, worker
from app.cli.arguments import Parser, UsageError
from app.cli.connections import CannotConnect, quiet_pgserver
from app.settings import Settings, SettingsError

COMMANDS = (dev, serve, worker, token, db, audit)
"""In the order ``--help`` lists them."""


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m app", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        if "check" in args:  # only commands with combinations to refuse set one
            args.check(args)
    except UsageError as error:
        parser.error(str(error))

    quiet_pgserver()
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format)
        result: int = args.run(settings, args)
        return result
    except UsageError as error:
        parser.error(str(error))
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
