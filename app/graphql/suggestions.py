"""Suggestions for a misspelt or abbreviated input field, e.g. ``qty`` -> ``quantity``.

graphql-core suggests names within a small edit distance only, so an abbreviation (``qty``,
``tif``) got none. This extension adds the input object's fields whose names the unknown
name abbreviates (its letters in order, from the first) or is close to, to the validation
error of a literal and to the coercion error of a variable alike.

Only with introspection on (``build_schema``): a suggestion names the schema's fields, which
a server that hides its schema must not tell.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from graphql import GraphQLError, GraphQLInputObjectType, GraphQLSchema
from graphql.pyutils import suggestion_list
from strawberry.extensions import SchemaExtension

_UNKNOWN_FIELD = re.compile(
    r"Expected value of type '(?P<type>\w+)!?' not to include unknown field '(?P<field>\w+)'"
)


def _abbreviates(short: str, name: str) -> bool:
    rest = iter(name.lower())
    return short[:1].lower() == name[:1].lower() and all(c in rest for c in short.lower())


def suggestions(schema: GraphQLSchema, type_name: str, field: str) -> list[str]:
    """The fields of input type ``type_name`` that ``field`` may have meant, best first."""
    input_type = schema.get_type(type_name)
    if not isinstance(input_type, GraphQLInputObjectType):
        return []
    names = list(input_type.fields)
    close = suggestion_list(field, names)
    return close + [name for name in names if name not in close and _abbreviates(field, name)]


def with_suggestion(schema: GraphQLSchema, error: GraphQLError) -> GraphQLError:
    """``error`` again with "did you mean ...?" after the unknown field, when there is one."""
    match = _UNKNOWN_FIELD.search(error.message)
    if match is None or "did you mean" in error.message.lower():
        return error
    names = suggestions(schema, match["type"], match["field"])
    if not names:
        return error
    quoted = " or ".join(f"'{name}'" for name in names[:3])
    message = (
        error.message[: match.end()] + f" (did you mean {quoted}?)" + error.message[match.end() :]
    )
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions=error.extensions,
    )


class SuggestInputFields(SchemaExtension):
    def on_validate(self) -> Iterator[None]:
        yield
        errors = self.execution_context.pre_execution_errors
        if errors:
            # In place: Strawberry already holds this list to answer with (and the validation
            # cache keeps it, so a cached error is suggested once, not again).
            errors[:] = [with_suggestion(self._schema, error) for error in errors]

    def on_execute(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if errors:  # a variable's value, coerced as execution starts
            errors[:] = [with_suggestion(self._schema, error) for error in errors]

    @property
    def _schema(self) -> GraphQLSchema:
        schema: GraphQLSchema = self.execution_context.schema._schema
        return schema
