"""The contract's custom scalars as Strawberry's (with the contract's descriptions), with these
changes.

DateTime is written as PostgreSQL writes JSON timestamps (db/timestamps.py):
compiled queries (graphql/compiled/) put timestamps into the response with
``to_json`` as they are; the resolvers answer the very same text through this.

Decimal is written by db/decimals.py's rule: "304.34", not "304.340000".

UUID, Decimal and DateTime take strings only, as the contract says. Strawberry's Decimal also
takes JSON numbers and number literals, which a client's JSON library may already have
rounded (0.1 + 0.2 is 0.30000000000000004). They refuse a malformed value quoting only an
excerpt of it (graphql/inputs.py): Strawberry's own quote the whole value, however large. A
refused literal carries its location and names its argument or input field
(``extensions.field``), as a refused variable does (graphql/errors.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import re
import uuid
from collections.abc import Callable
from typing import Any

import dateutil.parser  # type: ignore[import-untyped]  # Strawberry's DateTime parser
from graphql import GraphQLError, StringValueNode, Token, TokenKind, ValueNode, print_ast
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


def _not_a_string(name: str, example: str, value: str) -> str:
    return f'{name} must be a string such as "{example}", not {value}'


def _parser(
    parse: Callable[[str], object], name: str, example: str, errors: tuple[type[Exception], ...]
) -> Callable[[object], object]:
    def parse_value(value: object) -> object:
        if not isinstance(value, str):
            raise StrawberryInputCoercionError(
                _not_a_string(name, example, f"the JSON value {excerpt(value)}")
            )
        try:
            return parse(value)
        except errors:
            raise StrawberryInputCoercionError(
                f"Value cannot represent a {name}: {excerpt(value)!r}"
            ) from None

    return parse_value


# Tokens that may stand before a list's item inside the list (its earlier items).
_LIST_ITEM_TOKENS = frozenset(
    {
        TokenKind.STRING,
        TokenKind.BLOCK_STRING,
        TokenKind.INT,
        TokenKind.FLOAT,
        TokenKind.NAME,
        TokenKind.DOLLAR,
    }
)


def literal_field(node: ValueNode) -> str | None:
    """The argument or input field whose value ``node`` is (or is an item of), read off the
    document's tokens: a scalar's validation error knows only its literal, and the grammar
    puts ``name :`` before every argument's and input field's value."""
    token: Token | None = node.loc.start_token.prev if node.loc else None
    depth = 0  # lists and objects passed on the way back (earlier items of a list)
    while token is not None:
        if token.kind in (TokenKind.BRACKET_R, TokenKind.BRACE_R):
            depth += 1
        elif token.kind in (TokenKind.BRACKET_L, TokenKind.BRACE_L) and depth > 0:
            depth -= 1
        elif token.kind is TokenKind.BRACKET_L:
            pass  # an item of this list: the list's field is the item's
        elif depth == 0:
            if token.kind is TokenKind.COLON:
                name = token.prev
                return name.value if name is not None and name.kind is TokenKind.NAME else None
            if token.kind not in _LIST_ITEM_TOKENS:
                return None  # a variable's default value: no field to name
        token = token.prev
    return None


def _literal_parser(
    parse_value: Callable[[object], object], name: str, example: str
) -> Callable[..., object]:
    """parse_literal of a string scalar. graphql-core reports a GraphQLError raised here as
    it is, so the error gets the literal's location and field here."""

    def parse_literal(node: ValueNode, _variables: Any = None) -> object:
        field = literal_field(node)
        extensions = None if field is None else {"field": field}
        if not isinstance(node, StringValueNode):
            message = _not_a_string(name, example, print_ast(node))
            raise GraphQLError(message, node, extensions=extensions)
        try:
            return parse_value(node.value)
        except GraphQLError as error:
            raise GraphQLError(error.message, node, extensions=extensions) from None

    return parse_literal


def _strings_only(
    definition: ScalarDefinition,
    parse: Callable[[str], object],
    errors: tuple[type[Exception], ...],
    *,
    example: str,
    **changes: Any,
) -> ScalarDefinition:
    parse_value = _parser(parse, definition.name, example, errors)
    return dataclasses.replace(
        definition,
        parse_value=parse_value,
        parse_literal=_literal_parser(parse_value, definition.name, example),
        **changes,
    )


DATETIME = _strings_only(
    DateTimeDefinition,
    dateutil.parser.isoparse,
    (ValueError, OverflowError),
    example="2030-01-01T00:00:00Z",
    description="ISO 8601 timestamp with offset.",
    serialize=isoformat,
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


DECIMAL = _strings_only(
    DecimalDefinition,
    _plain_decimal,
    (ValueError,),
    example="190.50",
    description='Exact decimal number, serialized as a string such as "187.25"; never a float.'
    " Sent as a string too: a number is refused.",
    serialize=decimal_text,
)

UUID = _strings_only(
    UUIDDefinition,
    uuid.UUID,
    (ValueError,),
    example="00000000-0000-0000-0000-000000000000",
    description="RFC 4122 UUID in its canonical text form.",
)

OVERRIDES: dict[object, ScalarDefinition] = {
    dt.datetime: DATETIME,
    decimal.Decimal: DECIMAL,
    uuid.UUID: UUID,
}
"""Strawberry's scalar_overrides for the schema (graphql/schema.py)."""
