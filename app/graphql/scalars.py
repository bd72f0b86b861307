"""The contract's custom scalars as Strawberry's (with the contract's descriptions), with these
changes.

DateTime is written as PostgreSQL writes JSON timestamps (db/timestamps.py):
compiled queries (graphql/compiled/) put timestamps into the response with
``to_json`` as they are; the resolvers answer the very same text through this.

Decimal is written by db/decimals.py's rule: "304.34", not "304.340000".

UUID, Decimal and DateTime refuse a malformed value quoting only an excerpt of
it (graphql/inputs.py): Strawberry's own quote the whole value, however large.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import re
import uuid
from collections.abc import Callable

import dateutil.parser  # type: ignore[import-untyped]  # Strawberry's DateTime parser
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import (
    DateTimeDefinition,
    DecimalDefinition,
    UUIDDefinition,
)
from strawberry.types.scalar import ScalarDefinition

from app.db.decimals import decimal_text
from app.db.timestamps import isoformat
from app.graphql.inputs import excerpt


def _parser(
    parse: Callable[[str], object],
    name: str,
    errors: tuple[type[Exception], ...],
    *,
    accept_non_string: bool = False,
) -> Callable[[object], object]:
    def parse_value(value: object) -> object:
        if not isinstance(value, str):
            if not accept_non_string or isinstance(value, bool):
                raise StrawberryInputCoercionError(f"{name} must be a string")
            value = str(value)
        try:
            return parse(value)
        except errors:
            raise StrawberryInputCoercionError(
                f"Value cannot represent a {name}: {excerpt(value)!r}"
            ) from None

    return parse_value


DATETIME: ScalarDefinition = dataclasses.replace(
    DateTimeDefinition,
    description="ISO 8601 timestamp with offset.",
    serialize=isoformat,
    parse_value=_parser(dateutil.parser.isoparse, "DateTime", (ValueError, OverflowError)),
)
"""Strawberry's DateTime (same name, same parsing), serialized like PostgreSQL's to_json."""

PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
"""What the Decimal scalar takes: digits with an optional sign and fraction, as PostgreSQL's
numeric input reads them alike. Python's Decimal() would also take "1_000", "١٢٣" (other
scripts' digits), surrounding whitespace, exponents, NaN and Infinity."""


def _plain_decimal(value: str) -> decimal.Decimal:
    if not PLAIN_DECIMAL.fullmatch(value):
        raise ValueError("not a plain decimal")
    return decimal.Decimal(value)


DECIMAL: ScalarDefinition = dataclasses.replace(
    DecimalDefinition,
    description='Exact decimal number, serialized as a string such as "187.25"; never a float.',
    serialize=decimal_text,
    parse_value=_parser(_plain_decimal, "Decimal", (ValueError,), accept_non_string=True),
)

UUID: ScalarDefinition = dataclasses.replace(
    UUIDDefinition,
    description="RFC 4122 UUID in its canonical text form.",
    parse_value=_parser(uuid.UUID, "UUID", (ValueError,)),
)

OVERRIDES: dict[object, ScalarDefinition] = {
    dt.datetime: DATETIME,
    decimal.Decimal: DECIMAL,
    uuid.UUID: UUID,
}
"""Strawberry's scalar_overrides for the schema (graphql/schema.py)."""
