"""The command line's parser and its argument types: each refusal is one line naming the value."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import datetime
from typing import Any, NoReturn
from uuid import UUID

from app.settings import Settings


def refusal(prog: str, message: str, *, usage: bool = False) -> str:
    """The one form of every refusal of the command line, whatever refused: the parser, a
    setting, the database, the port. A usage error points at the command's help."""
    hint = f" (see {prog} --help)" if usage else ""
    return f"{prog}: error: {message}{hint}"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other refusal of the command line (argparse adds a usage line).
        self.exit(2, refusal(self.prog, message, usage=True) + "\n")


class UsageError(Exception):
    """Arguments that parse one by one but not together (exit status 2)."""


class CommandFailed(Exception):
    """The command could not do its work; the message says why (exit status 1)."""


def add_command(sub: Any, name: str, summary: str, example: str, *, details: str = "") -> Parser:
    """A subcommand whose ``--help`` says what it does (``summary``, then ``details``) and
    shows an example."""
    description = summary[0].upper() + summary[1:] + "."
    parser: Parser = sub.add_parser(
        name,
        help=summary,
        description=f"{description}\n\n{details}" if details else description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(prog=parser.prog)
    return parser


def add_listen_options(parser: argparse.ArgumentParser) -> None:
    """``--host``/``--port``: where the API listens; unset, the HOST and PORT settings."""
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: $HOST, else 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=tcp_port, default=None, help="port to listen on (default: $PORT, else 8000)"
    )


def listen_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings with ``--host``/``--port`` applied over HOST and PORT."""
    return dataclasses.replace(
        settings,
        host=settings.host if args.host is None else args.host,
        port=settings.port if args.port is None else args.port,
    )


def tcp_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def positive_seconds(text: str) -> int:
    return _at_least_one(text, number="whole number of seconds", one="1 second")


def positive_count(text: str) -> int:
    return _at_least_one(text, number="whole number", one="1")


def _at_least_one(text: str, *, number: str, one: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {number}: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least {one}, got {value}")
    return value


def instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: add one, e.g. {text}Z for UTC"
        )
    return value
