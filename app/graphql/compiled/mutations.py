"""Compiled mutations: submitOrder and cancelOrder in ONE statement, in autocommit.

A mutation through the resolvers costs five round trips (BEGIN, the caller's settings, the
limits, the write, COMMIT) and Strawberry's and SQLAlchemy's CPU. A learned document (it went
through the resolvers once without errors, the rule of the compiled reads) whose selection is
plain Order fields is compiled into a plan; per request the plan

1. coerces the variables with graphql-core and checks their text (graphql/inputs.py): any
   problem there is the resolvers' to report (``declined``, as for reads);
2. applies the service's own rules (orders/service.py, orders/validation.py): the role, then
   the order's validation, first with the limits left open (every limit only ever adds a
   refusal), so that only a failing order costs a read of the real limits;
3. calls ``order_api_private.submit_order`` or ``cancel_order`` (migration 007) on a pooled
   asyncpg connection: the function takes the caller's role and claims transaction-locally,
   so row level security, grants, the order rules, the audit row and its hash chain apply to
   its statements exactly as to the resolvers';
4. builds the response from the returned row through the field registry and the schema's own
   serializers.

Errors are the resolvers': the same OrderError raised by the same rule, shaped at the same
path and location by graphql/errors.py. A limit the order breaks (the database's trigger
refuses it, SQLSTATE OA422) is phrased by validating again with the limits read then.
"""

from __future__ import annotations

import enum
import functools
import itertools
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg  # type: ignore[import-untyped]  # ships no type information
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

from app.auth.claims import Claims
from app.db.session import Database
from app.graphql import inputs
from app.graphql.compiled.compiler import sole_operation
from app.models.order import OrderStatusEnum
from app.orders import fields, lifecycle, limits, queries, service, validation
from app.orders.errors import Conflict, IdempotencyConflict, OrderError, OrderNotFound
from app.orders.lifecycle import Change, State
from app.orders.limits import OrderLimits

SUBMIT = "submitOrder"
CANCEL = "cancelOrder"

# Every limit left open: a limit only ever adds a refusal, so an order this lets through
# may still break one (the trigger then refuses it), and one it refuses breaks a rule anyway.
OPEN_LIMITS = OrderLimits.of(max_quantity=sys.maxsize, max_notional=None)
# Likewise the session close a DAY order's expiresAt is held to: checked by the database's
# trigger (migration 006), and read only for an order it refused, for the service's words.
OPEN_CLOSE = datetime.max.replace(tzinfo=UTC)

# The order as the registry serves it, from the function's OUT row.
_ORDER_OF = (
    f"SELECT s.{{flag}}, {fields.ORDER.columns} FROM {{call}} s, LATERAL (SELECT (s.placed).*) o"
)
SUBMIT_SQL = _ORDER_OF.format(
    flag="inserted", call="order_api_private.submit_order($1, $2, $3::jsonb)"
)
# With what the lifecycle looks at (service.state_of), for a refused cancel's message.
_CANCEL_SQL = _ORDER_OF.format(
    flag="outcome, o.approved_at, o.routed_at",
    call="order_api_private.cancel_order($1, $2, $3, $4, $5)",
)

# The lifecycle's cancellable states as cancel_order compares them (STATUS:approved:routed),
# from app/orders/lifecycle.py: the one definition, not restated in SQL.
CANCELLABLE = sorted(
    f"{status.value}:{str(approved).lower()}:{str(routed).lower()}"
    for status, approved, routed in itertools.product(OrderStatusEnum, (False, True), (False, True))
    if lifecycle.allows(State(status, approved=approved, routed=routed), Change.CANCEL)
)


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
        try:
            if self.name == SUBMIT:
                row = await _submit(database, claims, arguments["input"])
            else:
                row = await _cancel(database, claims, arguments["id"], arguments.get("reason"))
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


# --- the use cases, as orders/service.py runs them --------------------------------------------


# Each submit field with its GraphQL input name, once at import rather than per request.
_SUBMIT_INPUTS = tuple((name, fields.camel(name)) for name in fields.SUBMIT_FIELDS)


def _input_values(data: Any) -> dict[str, Any]:
    # graphql-core hands over the input as a dict of GraphQL names (Strawberry's camelCase).
    if isinstance(data, dict):
        return {name: data.get(graphql) for name, graphql in _SUBMIT_INPUTS}
    return {name: getattr(data, name) for name, _ in _SUBMIT_INPUTS}


def _new_order(
    data: Any, limits: OrderLimits, now: datetime, session_close: datetime | None
) -> validation.NewOrder:
    """validation.new_order over the submit fields of the registry: a new field arrives
    through SUBMIT_FIELDS and new_order's keyword of the same name."""
    return validation.new_order(
        **_input_values(data), now=now, limits=limits, session_close=session_close
    )


async def _submit(database: Database, claims: Claims, data: Any) -> Any:
    service.require_role(claims, "authenticated")
    trader_id = claims.sub
    assert trader_id is not None  # token verification requires a sub for authenticated
    now = datetime.now(UTC)
    try:
        order = _new_order(data, OPEN_LIMITS, now, OPEN_CLOSE)
    except OrderError:
        raise await _refusal(database, claims, data, now) from None
    document = {"trader_id": str(trader_id)} | {
        name: _json_value(getattr(order, name)) for name in fields.SUBMIT_FIELDS
    }
    try:
        row = await database.autocommit_row(
            SUBMIT_SQL, (claims.role, claims.to_json(), json.dumps(document))
        )
    except asyncpg.PostgresError as error:
        if error.sqlstate == "OA422":
            # A limit (or a rule Python and the trigger word differently): the service's
            # validation against the limits in force says which, as the resolvers would.
            raise await _refusal(database, claims, data, now, error) from None
        raise _translated(error, None) from error
    assert row is not None
    if row["inserted"]:
        return row
    if row["id"] is None:  # pragma: no cover - the conflicting row is committed and visible
        raise Conflict("the order could not be written; retry")
    if not service.same_content(row, order):
        assert order.client_order_id is not None
        raise IdempotencyConflict(order.client_order_id)
    return row


async def _refusal(
    database: Database,
    claims: Claims,
    data: Any,
    now: datetime,
    database_error: asyncpg.PostgresError | None = None,
) -> Exception:
    """The error the service gives this order: its validation against the limits in force,
    read as the caller in a transaction of the normal path (a refused order's extra trip)."""
    async with database.transaction(claims, read_only=True) as tx:
        in_force = OrderLimits.from_row(await tx.first(limits.READ))
        closing = await queries.session_close(tx)
    try:
        _new_order(data, in_force, now, closing)
    except OrderError as refused:
        return refused
    if database_error is not None:
        return _translated(database_error, None)
    raise AssertionError("an order refused with open limits and close passed with the real ones")


def _translated(error: asyncpg.PostgresError, order_id: UUID | None) -> Exception:
    translated = queries.translate(error.sqlstate, order_id, error)
    return translated if translated is not None else error


def _json_value(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def _cancel(database: Database, claims: Claims, order_id: UUID, reason: str | None) -> Any:
    service.require_role(claims, "authenticated")
    reason = validation.bounded_text("reason", reason, validation.MAX_REASON_LENGTH)
    try:
        row = await database.autocommit_row(
            _CANCEL_SQL,
            (
                claims.role,
                claims.to_json(),
                order_id,
                reason or service.CANCEL_REASON,
                CANCELLABLE,
            ),
        )
    except asyncpg.PostgresError as error:
        raise _translated(error, order_id) from error
    assert row is not None
    if row["outcome"] == "not_found":
        raise OrderNotFound(order_id)
    if row["outcome"] == "refused":
        raise service.cannot_cancel(service.state_of(row))
    return row


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
