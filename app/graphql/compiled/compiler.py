"""The compiler: a validated document -> one SQL statement whose JSON is the response's data.

What it translates and why each shortcut is safe: see the package's docstring (__init__.py).
Field maps, ordering and the cursor come from orders/fields.py and orders/pages.py, so this
module knows no column by name.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
    parse,
)
from graphql.execution.values import get_argument_values, get_variable_values
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from app import telemetry
from app.auth.claims import Claims
from app.orders import fields, pages, queries, validation
from app.orders.errors import InvalidInput

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]

# GraphQL field -> SQL expression, from the field registry (no row alias: not a table).
VIEWER_FIELDS = fields.VIEWER.json()


class NotCompilable(Exception):
    """The document uses something this module does not translate; use the normal path."""


def _fields(node: FieldNode) -> list[FieldNode]:
    if node.selection_set is None:
        return []
    fields: list[FieldNode] = []
    keys: set[str] = set()
    for selection in node.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives:
            raise NotCompilable("fragments and directives")
        key = selection.alias.value if selection.alias else selection.name.value
        if key in keys:
            raise NotCompilable("a response key selected twice")
        keys.add(key)
        fields.append(selection)
    return fields


def _key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _object(pairs: list[tuple[str, str]]) -> str:
    if len(pairs) > 50:  # json_build_object takes at most 100 arguments
        raise NotCompilable("too many fields in one object")
    return "json_build_object(" + ", ".join(f"{_literal(k)}, {v}" for k, v in pairs) + ")"


def _nested_sql(node: FieldNode, nested: pages.NestedList, order_alias: str) -> str:
    entity = nested.entity
    obj = _row_object(node, entity, "n")
    return (
        f"coalesce((SELECT json_agg({obj} ORDER BY {nested.order_by('n')})"
        f" FROM {entity.table} n WHERE n.order_id = {order_alias}.id), '[]'::json)"
    )


def _row_object(node: FieldNode, entity: fields.Entity, alias: str) -> str:
    columns = entity.json()
    pairs: list[tuple[str, str]] = []
    for field in _fields(node):
        name = field.name.value
        if field.arguments:
            raise NotCompilable("arguments on a nested field")
        if name == "__typename":
            pairs.append((_key(field), _literal(entity.typename)))
        elif name in columns and field.selection_set is None:
            pairs.append((_key(field), columns[name].format(t=alias)))
        elif entity is fields.ORDER and name in pages.OF_ORDER:
            pairs.append((_key(field), _nested_sql(field, pages.OF_ORDER[name], alias)))
        else:
            raise NotCompilable(f"{entity.typename}.{name}")
    return _object(pairs)


def _page_info(node: FieldNode, page: str, first_param: str, end_cursor: str) -> str:
    pairs: list[tuple[str, str]] = []
    for field in _fields(node):
        name = field.name.value
        if name == "hasNextPage":
            pairs.append((_key(field), f"(SELECT count(*) FROM {page}) > :{first_param}"))
        elif name == "endCursor":
            pairs.append((_key(field), end_cursor))
        elif name == "__typename":
            pairs.append((_key(field), _literal("PageInfo")))
        else:
            raise NotCompilable(f"PageInfo.{name}")
    return _object(pairs)


@dataclass(frozen=True)
class _Root:
    key: str
    ctes: list[str]
    value: str
    params: Callable[[dict[str, Any], Claims], dict[str, Any]]


def _connection(
    node: FieldNode,
    index: int,
    listing: pages.Listing,
    where: Callable[[dict[str, Any], Claims, str], tuple[list[str], dict[str, Any]]],
) -> _Root:
    typename, order_at = listing.entity.typename, listing.at
    page = f"page{index}"
    rows = f"rows{index}"
    first = f"r{index}_first"
    edge_pairs: list[tuple[str, str]] = []
    page_info: str | None = None
    pairs: list[tuple[str, str]] = []
    for field in _fields(node):
        name = field.name.value
        if name == "edges":
            for edge_field in _fields(field):
                edge_name = edge_field.name.value
                if edge_name == "cursor":
                    edge_pairs.append((_key(edge_field), pages.Cursor.sql(f"e.{order_at}", "e.id")))
                elif edge_name == "node":
                    edge_pairs.append(
                        (_key(edge_field), _row_object(edge_field, listing.entity, "e"))
                    )
                elif edge_name == "__typename":
                    edge_pairs.append((_key(edge_field), _literal(f"{typename}Edge")))
                else:
                    raise NotCompilable(f"{typename}Edge.{edge_name}")
            pairs.append(
                (
                    _key(field),
                    f"coalesce((SELECT json_agg({_object(edge_pairs)}"
                    f" ORDER BY {listing.order_by('e')}) FROM {rows} e), '[]'::json)",
                )
            )
        elif name == "pageInfo":
            end_cursor = (
                f"(SELECT {pages.Cursor.sql(f'x.{order_at}', 'x.id')} FROM {rows} x"
                f" ORDER BY x.{order_at}, x.id LIMIT 1)"
            )
            page_info = _page_info(field, page, first, end_cursor)
            pairs.append((_key(field), page_info))
        elif name == "__typename":
            pairs.append((_key(field), _literal(f"{typename}Connection")))
        else:
            raise NotCompilable(f"{typename}Connection.{name}")

    def params(args: dict[str, Any], claims: Claims) -> dict[str, Any]:
        count = args.get("first")
        if count is not None and not isinstance(count, int):
            raise InvalidInput("first", "not a number")
        count = pages.first_or_default(count, listing.default_first)
        conditions, values = where(args, claims, f"r{index}_")
        sql_where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        values[first] = count
        values[f"r{index}_limit"] = count + 1
        values[f"r{index}_where"] = sql_where
        return values

    # The WHERE clause depends on which filters are given: it is spliced in per request
    # from a fixed set of fragments (never from input), see _render.
    ctes = [
        f"{page} AS (SELECT * FROM {listing.table} {{r{index}_where}}"
        f" ORDER BY {listing.order_by()} LIMIT :r{index}_limit)",
        f"{rows} AS (SELECT * FROM {page} ORDER BY {listing.order_by()} LIMIT :{first})",
    ]
    return _Root(_key(node), ctes, _object(pairs), params)


def _cursor(args: dict[str, Any]) -> pages.Cursor | None:
    after = args.get("after")
    return pages.Cursor.decode(after) if after is not None else None


def _orders_where(args: dict[str, Any], claims: Claims, p: str) -> queries.Conditions:
    flt = args.get("filter")

    def get(name: str) -> Any:
        # graphql-core hands over Strawberry's OrderFilter object (or a dict without it).
        if flt is None:
            return None
        return flt.get(name) if isinstance(flt, dict) else getattr(flt, _snake(name), None)

    symbol, side, statuses = get("symbol"), get("side"), get("status")
    return queries.order_conditions(
        claims,
        after=_cursor(args),
        trader_id=get("traderId"),
        statuses=[_enum_value(s) for s in statuses] if statuses else None,
        symbol=validation.normalized(str(symbol)) if symbol is not None else None,
        side=_enum_value(side) if side is not None else None,
        prefix=p,
    )


def _logs_where(args: dict[str, Any], claims: Claims, p: str) -> queries.Conditions:
    action = args.get("action")
    return queries.log_conditions(
        claims,
        after=_cursor(args),
        order_id=args.get("orderId"),
        action=_enum_value(action) if action is not None else None,
        prefix=p,
    )


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def _order_root(node: FieldNode, index: int) -> _Root:
    obj = _row_object(node, fields.ORDER, "o")
    cte = f"one{index} AS (SELECT * FROM orders WHERE id = :r{index}_id)"

    def params(args: dict[str, Any], claims: Claims) -> dict[str, Any]:
        return {f"r{index}_id": args["id"]}

    return _Root(_key(node), [cte], f"(SELECT {obj} FROM one{index} o)", params)


def _viewer_root(node: FieldNode) -> _Root:
    pairs: list[tuple[str, str]] = []
    for field in _fields(node):
        name = field.name.value
        if name in VIEWER_FIELDS:
            pairs.append((_key(field), VIEWER_FIELDS[name]))
        elif name == "__typename":
            pairs.append((_key(field), _literal(fields.VIEWER.typename)))
        else:
            raise NotCompilable(f"Viewer.{name}")
    return _Root(_key(node), [], _object(pairs), lambda args, claims: {})


@dataclass(frozen=True)
class Statement:
    """SQL with asyncpg's $n placeholders, and the parameter names in their order."""

    sql: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class CompiledQuery:
    operation: OperationDefinitionNode
    roots: list[tuple[_Root, FieldNode]]
    template: str
    # One statement per combination of filters a request uses (a handful at most).
    _statements: dict[tuple[tuple[str, str], ...], Statement] = dataclasses.field(
        default_factory=dict
    )
    _literal_arguments: dict[GraphQLSchema, list[dict[str, Any]]] = dataclasses.field(
        default_factory=dict
    )
    """Each root's arguments, for an operation without variables: its literals, coerced once."""

    @functools.cached_property
    def label(self) -> str:
        """The operation as logs and metrics name it (telemetry.operation_label), once."""
        return telemetry.operation_label(self.operation)

    def _arguments(
        self, schema: GraphQLSchema, variables: dict[str, Any] | None
    ) -> list[dict[str, Any]] | None:
        """Each root's arguments as graphql-core coerces them; None for variables it refuses."""
        definitions = self.operation.variable_definitions
        if not definitions and schema in self._literal_arguments:
            return self._literal_arguments[schema]
        coerced = get_variable_values(schema, definitions or (), variables or {})
        if isinstance(coerced, list):
            return None
        query_type = schema.query_type
        assert query_type is not None
        arguments = [
            get_argument_values(query_type.fields[node.name.value], node, coerced)
            for _, node in self.roots
        ]
        if not definitions:
            self._literal_arguments[schema] = arguments
        return arguments

    def bind(
        self, schema: GraphQLSchema, variables: dict[str, Any] | None, claims: Claims
    ) -> tuple[str, list[Any]] | None:
        """The statement and its arguments, or None to let the resolvers answer."""
        params: dict[str, Any] = {}
        try:
            arguments = self._arguments(schema, variables)
            if arguments is None:
                return None
            for (root, _), args in zip(self.roots, arguments, strict=True):
                params.update(root.params(args, claims))
        except (InvalidInput, GraphQLError, KeyError, TypeError, ValueError):
            return None
        splices = tuple(sorted((k, params.pop(k)) for k in list(params) if k.endswith("_where")))
        statement = self._statements.get(splices)
        if statement is None:
            compiled = text(self.template.format(**dict(splices))).compile(dialect=_DIALECT)
            statement = Statement(compiled.string, tuple(compiled.positiontup or ()))
            if len(self._statements) < 64:
                self._statements[splices] = statement
        return statement.sql, [params[name] for name in statement.names]


# Cached, verdicts included: the endpoint asks for every document that has no plan yet
# after running it, and a document that never compiles (every mutation) was parsed again
# on each request, inside its transaction (~0.7 ms of submitOrder's ~8 ms under cProfile).
# Exceptions are not cached: a compiler bug still fails each time in strict mode.
@functools.lru_cache(maxsize=512)  # both compilers ask, for the same document
def _parsed(
    document_text: str, operation_name: str | None
) -> tuple[DocumentNode, OperationDefinitionNode | None] | None:
    try:
        document = parse(document_text)
        return document, get_operation_ast(document, operation_name)
    except GraphQLError:
        return None


def sole_operation(
    document_text: str, operation_name: str | None, kind: OperationType
) -> tuple[DocumentNode, OperationDefinitionNode] | None:
    """The document and its one operation, of ``kind`` and without directives; None for any
    other document (the compilers' first question)."""
    found = _parsed(document_text, operation_name)
    if found is None:
        return None
    document, operation = found
    if (
        operation is None
        or operation.operation is not kind
        or len(document.definitions) != 1
        or operation.directives
    ):
        return None
    return document, operation


@functools.lru_cache(maxsize=512)
def compile_query(document_text: str, operation_name: str | None) -> CompiledQuery | None:
    found = sole_operation(document_text, operation_name, OperationType.QUERY)
    if found is None:
        return None
    _, operation = found
    roots: list[tuple[_Root, FieldNode]] = []
    try:
        for index, selection in enumerate(operation.selection_set.selections):
            if not isinstance(selection, FieldNode) or selection.directives:
                return None
            name = selection.name.value
            if name == "orders":
                root = _connection(selection, index, pages.ORDERS, _orders_where)
            elif name == "executionLogs":
                root = _connection(selection, index, pages.LOGS, _logs_where)
            elif name == "order":
                root = _order_root(selection, index)
            elif name == "viewer":
                root = _viewer_root(selection)
            else:
                return None
            roots.append((root, selection))
        keys = [root.key for root, _ in roots]
        if len(set(keys)) != len(keys):
            return None
    except NotCompilable:
        return None
    ctes = [cte for root, _ in roots for cte in root.ctes]
    data = _object([(root.key, root.value) for root, _ in roots])
    with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
    # Literal braces of the SQL are doubled for str.format; only {rN_where} is a splice.
    # ::text: the JSON goes to the client as PostgreSQL wrote it (no decode, no re-encode).
    template = (
        (with_clause + f"SELECT ({data})::text AS data").replace("{", "{{").replace("}", "}}")
    )
    for index in range(len(roots)):
        template = template.replace(f"{{{{r{index}_where}}}}", f"{{r{index}_where}}")
    return CompiledQuery(operation=operation, roots=roots, template=template)
