"""Compiled mutations: a learned submitOrder or cancelOrder document without Strawberry.

A mutation through the resolvers costs Strawberry's and SQLAlchemy's CPU and a transaction's
round trips (BEGIN, the caller's settings, the write, COMMIT). A learned document (it went
through the resolvers once without errors, the rule of the compiled reads) whose selection is
plain Order fields is compiled into a plan; per request the plan

1. coerces the variables with graphql-core and checks their text (graphql/inputs.py): any
   problem there is the resolvers' to report (``declined``, as for reads);
2. runs the use case, orders/service.py's submit_order or cancel_order, the resolvers' own,
   with the autocommit writer (orders/writers.py): its one statement, on a pooled asyncpg
   connection, becomes the caller and calls the same SQL writer as the resolvers;
3. builds the response from the returned row through the field registry and the schema's own
   serializers.

Errors are the resolvers': the same OrderError raised by the same use case, shaped at the same
path and location by graphql/errors.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_named_type,
)
from graphql.execution.values import get_argument_values, get_variable_values

from app import telemetry
from app.auth.claims import Claims
from app.db.session import Database
from app.graphql import inputs
from app.graphql.compiled.compiler import sole_operation
from app.orders import fields, service, writers
from app.orders.errors import OrderError

SUBMIT = "submitOrder"
CANCEL = "cancelOrder"


class NotCompilable(Exception):
    """The document is not one this module translates; it stays on the normal path."""


class Declined(Exception):
    """The variables or arguments need the normal path's error (graphql-core's own)."""


@dataclass(frozen=True)
class Answer:
    """The response's ``data`` (None on an error), or the error raised by the rule that
    refused, to be shaped at the field's path like the resolvers'."""

    data: dict[str, Any] | None
    error: GraphQLError | None = None


@dataclass(frozen=True)
class CompiledMutation:
    document: DocumentNode
    operation: OperationDefinitionNode
    root: FieldNode
    selection: tuple[tuple[str, str], ...]
    """(response key, Order field or __typename), in the document's order."""

    @property
    def name(self) -> str:
        return self.root.name.value

    @functools.cached_property
    def label(self) -> str:
        """The operation as logs and metrics name it (telemetry.operation_label), once."""
        return telemetry.operation_label(self.operation)

    def arguments(self, schema: GraphQLSchema, variables: dict[str, Any] | None) -> dict[str, Any]:
        """The root field's arguments as graphql-core coerces them, or Declined."""
        raw = variables or {}
        if inputs.variable_errors(self.document, raw):
            raise Declined
        coerced = get_variable_values(schema, self.operation.variable_definitions or (), raw)
        if isinstance(coerced, list):
            raise Declined
        mutation_type = schema.mutation_type
        assert mutation_type is not None
        try:
            return get_argument_values(mutation_type.fields[self.name], self.root, coerced)
        except GraphQLError:
            raise Declined from None

    async def run(
        self, database: Database, schema: GraphQLSchema, arguments: dict[str, Any], claims: Claims
    ) -> Answer:
        writer = writers.Autocommit(database, claims)
        try:
            if self.name == SUBMIT:
                row = await service.submit_order(writer, **_input_values(arguments["input"]))
            else:
                row = await service.cancel_order(
                    writer, order_id=arguments["id"], reason=arguments.get("reason")
                )
        except OrderError as refused:
            error = GraphQLError(
                refused.message, nodes=[self.root], path=[self.key], original_error=refused
            )
            return Answer(None, error)
        return Answer({self.key: self.respond(schema, row)})

    @property
    def key(self) -> str:
        return self.root.alias.value if self.root.alias else self.name

    def respond(self, schema: GraphQLSchema, row: Any) -> dict[str, Any]:
        """The Order as the resolvers serialize it: the registry's values, the schema's
        serializers (enums, UUID, Decimal, DateTime)."""
        values = fields.ORDER.from_row(row)
        serializers = _serializers(schema)
        out: dict[str, Any] = {}
        for key, name in self.selection:
            if name == "__typename":
                out[key] = fields.ORDER.typename
            else:
                value = values[_attribute(name)]
                out[key] = None if value is None else serializers[name](value)
        return out


@functools.cache
def _attribute(graphql_name: str) -> str:
    [field] = [f for f in fields.ORDER.fields if f.graphql == graphql_name]
    return field.name


@functools.cache  # one schema per app
def _serializers(schema: GraphQLSchema) -> dict[str, Any]:
    order = schema.type_map[fields.ORDER.typename]
    assert isinstance(order, GraphQLObjectType)
    leaves = {name: get_named_type(field.type) for name, field in order.fields.items()}
    return {
        name: leaf.serialize
        for name, leaf in leaves.items()
        if isinstance(leaf, GraphQLScalarType | GraphQLEnumType)
    }


# Each submit field with its GraphQL input name, once at import rather than per request.
_SUBMIT_INPUTS = tuple((name, fields.camel(name)) for name in fields.SUBMIT_FIELDS)


def _input_values(data: Any) -> dict[str, Any]:
    """service.submit_order's keywords, from the submit fields of the registry: a new field
    arrives through SUBMIT_FIELDS and the keyword of the same name."""
    # graphql-core hands over the input as a dict of GraphQL names (Strawberry's camelCase).
    if isinstance(data, dict):
        return {name: data.get(graphql) for name, graphql in _SUBMIT_INPUTS}
    return {name: getattr(data, name) for name, _ in _SUBMIT_INPUTS}


# --- the compiler -----------------------------------------------------------------------------


def _selection(node: FieldNode) -> tuple[tuple[str, str], ...]:
    served = fields.ORDER.json()
    out: list[tuple[str, str]] = []
    keys: set[str] = set()
    if node.selection_set is None:
        raise NotCompilable("no selection")
    for selection in node.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives or selection.arguments:
            raise NotCompilable("fragments, directives or arguments")
        name = selection.name.value
        if selection.selection_set is not None or (name not in served and name != "__typename"):
            raise NotCompilable(f"Order.{name}")
        key = selection.alias.value if selection.alias else name
        if key in keys:
            raise NotCompilable("a response key selected twice")
        keys.add(key)
        out.append((key, name))
    return tuple(out)


@functools.lru_cache(maxsize=512)
def compile_mutation(document_text: str, operation_name: str | None) -> CompiledMutation | None:
    """The plan of a submitOrder or cancelOrder document selecting plain Order fields; None for
    any other document (it stays on the normal path)."""
    found = sole_operation(document_text, operation_name, OperationType.MUTATION)
    if found is None:
        return None
    document, operation = found
    if len(operation.selection_set.selections) != 1:
        return None
    [root] = operation.selection_set.selections
    if (
        not isinstance(root, FieldNode)
        or root.directives
        or root.name.value not in (SUBMIT, CANCEL)
    ):
        return None
    try:
        return CompiledMutation(document, operation, root, _selection(root))
    except NotCompilable:
        return None
