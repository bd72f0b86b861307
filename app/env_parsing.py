"""How one environment variable's text becomes a typed value, or a ``SettingsError`` naming it.

Each reader takes the environment as a mapping (``Settings.from_env`` reads ``os.environ``
once and passes it here) and answers its default when the variable is unset or empty. Which
variables exist, and their defaults, is ``app/settings.py``'s table.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it."""


def parse_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def parse_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def parse_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def parse_decimal(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return Decimal(raw)
    except ArithmeticError:
        raise SettingsError(f"{name} must be a decimal number, got {raw!r}") from None


def parse_str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return raw if raw else None


def parse_postgres_url(env: Mapping[str, str], name: str) -> str | None:
    """A PostgreSQL connection URL, refused here when malformed. The message never repeats the
    value: it may hold a password."""
    raw = parse_str(env, name)
    if raw is None:
        return None
    try:
        backend = make_url(raw).get_backend_name()
    except (ValueError, ArgumentError):  # unparsable, or a port that is not a number
        backend = None
    if backend not in ("postgresql", "postgres"):
        raise SettingsError(
            f"{name} is not a PostgreSQL URL; expected postgresql://user:password@host:port/database"
        )
    return raw


def parse_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {env.get(name)!r}")
    return raw


def parse_csv(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_one_of(env: Mapping[str, str], name: str, derived: str | None, source: str) -> str | None:
    """``name``'s value, or the one ``source`` implies; both given and different is an error."""
    explicit = parse_str(env, name)
    if explicit is not None and derived is not None and explicit != derived:
        raise SettingsError(
            f"{name} ({explicit!r}) contradicts {source} (which implies {derived!r}); set one"
        )
    return explicit if explicit is not None else derived


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP field name (RFC 9110's token)."""


def parse_header_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """HTTP header names, comma-separated, or ``*`` alone for any."""
    entries = parse_csv(env, name, ())
    if "*" in entries:
        if len(entries) > 1:
            raise SettingsError(f"{name}: '*' allows every header; list no others beside it")
        return entries
    for entry in entries:
        if not _TOKEN.fullmatch(entry):
            raise SettingsError(
                f"{name}: {entry!r} is not an HTTP header name like X-Client-Version"
            )
    return entries


_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Exact origins (``scheme://host[:port]``, as browsers send them), or ``*`` alone."""
    entries = parse_csv(env, name, ())
    if "*" in entries:
        if len(entries) > 1:
            raise SettingsError(f"{name}: '*' allows every origin; list no others beside it")
        return entries
    origins = []
    for entry in entries:
        try:
            url = urllib.parse.urlsplit(entry)
            port = url.port
        except ValueError:
            port, url = None, urllib.parse.urlsplit("")
        scheme = url.scheme.lower()
        if (
            scheme not in _DEFAULT_PORTS
            or not url.hostname
            or url.path not in ("", "/")
            or url.query
            or url.fragment
            or url.username
        ):
            raise SettingsError(
                f"{name}: {entry!r} is not an origin like https://app.example.com[:port]"
            )
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            host = f"{host}:{port}"
        origins.append(f"{scheme}://{host}")
    return tuple(origins)


# --- readers -------------------------------------------------------------------------------------
# A reader turns one variable into its value: ``reader(env, name, default)``. Settings declares
# each variable once, with its reader (app/settings.py's ``env(...)``); the reader's ``kind``
# says what text it accepts, for the configuration reference (docs/hooks/configuration.py).


@dataclass(frozen=True)
class Reader:
    read: Callable[[Mapping[str, str], str, Any], Any]
    kind: str
    """What the variable accepts, as the reference shows it: "integer ≥ 1", "true or false"."""

    def __call__(self, env: Mapping[str, str], name: str, default: Any) -> Any:
        return self.read(env, name, default)


def reads(kind: str) -> Callable[[Callable[[Mapping[str, str], str, Any], Any]], Reader]:
    """Make a reading function a ``Reader`` of ``kind``."""

    def wrap(read: Callable[[Mapping[str, str], str, Any], Any]) -> Reader:
        return Reader(read, kind)

    return wrap


@reads("true or false")
def boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    return parse_bool(env, name, default)


def integer(*, minimum: int = 0) -> Reader:
    @reads(f"integer ≥ {minimum}")
    def read(env: Mapping[str, str], name: str, default: int) -> int:
        return parse_int(env, name, default, minimum=minimum)

    return read


def optional_integer(*, minimum: int = 0) -> Reader:
    """An integer, or None (the default) when unset."""

    @reads(f"integer ≥ {minimum}")
    def read(env: Mapping[str, str], name: str, default: int | None) -> int | None:
        return None if parse_str(env, name) is None else parse_int(env, name, 0, minimum=minimum)

    return read


@reads("number")
def number(env: Mapping[str, str], name: str, default: float) -> float:
    return parse_float(env, name, default)


@reads("decimal")
def decimal_number(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    return parse_decimal(env, name, default)


@reads("text")
def text(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = parse_str(env, name)
    return default if value is None else value


@reads("path")
def path(env: Mapping[str, str], name: str, default: Path | None) -> Path | None:
    value = parse_str(env, name)
    return default if value is None else Path(value)


@reads("PostgreSQL URL")
def postgres_url(env: Mapping[str, str], name: str, default: None) -> str | None:
    return parse_postgres_url(env, name)


@reads("comma-separated PostgreSQL URLs")
def postgres_urls(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        parse_postgres_url({name: part}, name) or "" for part in parse_csv(env, name, default)
    )


def choice(*choices: str) -> Reader:
    @reads(f"one of {', '.join(choices)}")
    def read(env: Mapping[str, str], name: str, default: str) -> str:
        return parse_choice(env, name, default, choices)

    return read


@reads("comma-separated names")
def names(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    return parse_csv(env, name, default)


@reads("comma-separated origins, or *")
def origins(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    return parse_origins(env, name)


@reads("comma-separated header names, or *")
def header_names(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    return parse_header_names(env, name)


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, how its text is read, and what it means."""

    name: str
    read: Reader
    doc: str


def env(name: str, default: Any, read: Reader, doc: str) -> Any:
    """A setting's one declaration: its variable, default, reader (type and bounds) and
    meaning. ``Settings.from_env`` reads every field so declared; ``variables()`` lists them."""
    return field(default=default, metadata={"env": Variable(name, read, doc)})


def declared(cls: type) -> list[tuple[str, Variable, Any]]:
    """(field, variable, default) of each field of ``cls`` declared with ``env``, in order."""
    return [
        (f.name, f.metadata["env"], f.default)
        for f in dataclasses.fields(cls)
        if "env" in f.metadata
    ]
