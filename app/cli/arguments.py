"""The command line's parser and its argument types: each refusal is one line naming the value."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import NoReturn
from uuid import UUID


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other refusal of the command line (argparse adds a usage line).
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(Exception):
    """Arguments that parse one by one but not together; reported by the top parser."""


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
