"""Command line: ``python -m app {dev,serve,worker,token,db,audit,documents}``.

``dev`` is the README's one-command local start: embedded PostgreSQL,
migrations at head, the dev seed, the API with GraphiQL and an in-process
execution engine, and a ready-to-paste token for a seed trader.

This module parses and dispatches; each command lives in app/cli/ under its own name. It
also decides how a refusal reads: one line on stderr, ``python -m app COMMAND: error: ...``
(app/cli/arguments.py), exit 2 for usage and configuration, 1 for a database, port or audit
failure.
"""

from __future__ import annotations

import argparse
import sys

from app import logs
from app.cli import audit, db, dev, documents, serve, token, worker
from app.cli.arguments import CommandFailed, Parser, UsageError, refusal
from app.cli.connections import CannotConnect, quiet_pgserver
from app.settings import Settings, SettingsError

COMMANDS = (dev, serve, worker, token, db, audit, documents)
"""In the order ``--help`` lists them."""

PROG = "python -m app"

EPILOG = """\
examples:
  python -m app dev                  everything on localhost; GraphiQL at http://127.0.0.1:8000/graphql
  python -m app token --sub UUID     a token for a trader of the dev database
  python -m app db psql              psql on the dev database
  python -m app db stop              stop the embedded PostgreSQL

python -m app COMMAND --help says what COMMAND does, with an example."""


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog=PROG,
        description="The order API: a GraphQL API for orders, isolated by PostgreSQL's row"
        " level security.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    # Known arguments only, so that ``db psql`` can pass psql's own options on; every other
    # command refuses what it does not know.
    args, unknown = parser.parse_known_args(argv)
    prog = getattr(args, "prog", PROG)
    if getattr(args, "passes_unknown_arguments", False):
        args.rest = unknown[1:] if unknown[:1] == ["--"] else unknown
    elif unknown:
        return _refuse(refusal(prog, f"unrecognized arguments: {' '.join(unknown)}", usage=True), 2)
    try:
        if "check" in args:  # only commands with combinations to refuse set one
            args.check(args)
    except UsageError as error:
        return _refuse(refusal(prog, str(error), usage=True), 2)

    quiet_pgserver()
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format)
        result: int = args.run(settings, args)
        return result
    except KeyboardInterrupt:
        # uvicorn raises the Ctrl-C again once it has shut down: the server stopped as asked,
        # which is no error to show a traceback for (130: the shell's "ended by SIGINT").
        return 130
    except UsageError as error:
        return _refuse(refusal(prog, str(error), usage=True), 2)
    except SettingsError as error:
        return _refuse(refusal(prog, str(error)), 2)
    except (CannotConnect, CommandFailed) as error:
        return _refuse(refusal(prog, str(error)), 1)
    except Exception as error:
        from app.audit.commands import AuditError
        from app.db.session import UnsafeLoginRole
        from app.serving import PortUnavailable

        if isinstance(error, PortUnavailable | UnsafeLoginRole | AuditError):
            return _refuse(refusal(prog, str(error)), 1)
        raise


def _refuse(line: str, status: int) -> int:
    print(line, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
