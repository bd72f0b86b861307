"""What an error may say about the schema when introspection is off: only what the document said.

graphql-core's messages help a client by naming the schema: "Cannot query field 'orderz' on
type 'Query'. Did you mean 'order' or 'orders'?", the enum values a misspelled one was close
to, the fields an input type requires, the type a field returns. With introspection off, that
is enough for a tool such as Clairvoyance to rebuild the schema by guessing (issue 18).

So, with introspection off, an error of GraphQL's own (parsing, validation, coercion of
variables and literals) keeps its message but for what the document did not name:
- a "Did you mean ...?" sentence is dropped whole;
- a quoted name, or a scalar's name that starts a coercion message ("Int cannot represent
  ..."), that is a name of the schema (a type, field, argument, input field, enum value or
  directive) and not a name token of the document, is replaced by ``HIDDEN``.

What the client sent is the document's name tokens (not its strings or comments) and the names
in its variables (their keys, and string values that are names): an error may repeat those,
such as a variable's path or its value. Domain errors (orders/errors.py) are the API's own
messages and are left as they are.
"""

from __future__ import annotations

import re
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLSchema,
    is_enum_type,
    is_input_object_type,
    is_interface_type,
    is_object_type,
)
from graphql.language import Lexer, Source, TokenKind

from app.orders.errors import OrderError

HIDDEN = "(hidden)"

_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")
_QUOTED = re.compile(r"'([^']*)'")
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
_LEADING_TYPE = re.compile(r"(?:(?<=^)|(?<=[.;:] ))([_A-Za-z][_0-9A-Za-z]*)(?= cannot represent)")


def schema_names(schema: GraphQLSchema) -> frozenset[str]:
    """Every name of ``schema``: types, fields, arguments, input fields, enum values,
    directives and their arguments."""
    names: set[str] = set()
    for type_ in schema.type_map.values():
        names.add(type_.name)
        if is_object_type(type_) or is_interface_type(type_):
            for field_name, field in type_.fields.items():
                names.add(field_name)
                names.update(field.args)
        elif is_input_object_type(type_):
            names.update(type_.fields)
        elif is_enum_type(type_):
            names.update(type_.values)
    for directive in schema.directives:
        names.add(directive.name)
        names.update(directive.args)
    return frozenset(names)


def document_names(source: Source | None) -> set[str]:
    """The name tokens of the document (not its strings or comments)."""
    names: set[str] = set()
    if source is None:
        return names
    lexer = Lexer(source)
    try:
        while (token := lexer.advance()).kind != TokenKind.EOF:
            if token.kind == TokenKind.NAME and token.value is not None:
                names.add(token.value)
    except GraphQLError:
        pass  # a syntax error: the names before it are the document's
    return names


def variable_names(value: Any, names: set[str]) -> set[str]:
    """``names`` with the keys of ``value``'s objects and its strings that are names."""
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            names.update(key for key in value if isinstance(key, str))
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and _NAME.fullmatch(value):
            names.add(value)
    return names


class SchemaHints:
    """Conceals from errors the schema's names that the document did not contain."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.names = schema_names(schema)

    def conceal(self, message: str, source: Source | None, variables: Any = None) -> str:
        sent = variable_names(variables, document_names(source))

        def hidden(name: str) -> bool:
            return name in self.names and name not in sent

        def quoted(match: re.Match[str]) -> str:
            return HIDDEN if any(hidden(n) for n in _NAME.findall(match[1])) else match[0]

        def leading(match: re.Match[str]) -> str:
            return HIDDEN if hidden(match[1]) else match[0]

        message = _SUGGESTION.sub("", message)
        return _LEADING_TYPE.sub(leading, _QUOTED.sub(quoted, message))

    def concealed(self, error: GraphQLError, variables: Any = None) -> GraphQLError:
        """``error`` with its message concealed, unless it is a domain error."""
        original = error.original_error
        while isinstance(original, GraphQLError) and original.original_error is not None:
            original = original.original_error
        if isinstance(original, OrderError):
            return error
        message = self.conceal(error.message, error.source, variables)
        if message == error.message:
            return error
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=error.original_error,
            extensions=error.extensions,
        )
