"""The field registry (app/orders/fields.py) agrees with the migrated database and with the
served GraphQL schema, so that everything derived from it (select lists, the compiled path,
row mapping) reads what exists and serves what the schema declares.

A column added by a migration must be registered or listed as deliberately hidden; a field
registered must exist in its table with a compatible type and nullability, and in the GraphQL
type with the same type (the Strawberry annotation mirrors the registry: see graphql/types.py).
"""

from __future__ import annotations

import dataclasses

import asyncpg
from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
)

from app.models.order import OrderSideEnum, OrderStatusEnum, OrderTypeEnum
from app.orders import fields
from app.orders.validation import NewOrder
from tests.api import api_client, api_settings, graphql_endpoint
from tests.conftest import Db

# Python type -> what it may be stored as (pg_type.typname) and served as (GraphQL type).
STORED = {
    "UUID": {"uuid"},
    "str": {"varchar", "text"},
    "int": {"int4", "int8"},
    "Decimal": {"numeric"},
    "datetime": {"timestamptz"},
    "OrderSideEnum": {"varchar"},  # text with a check constraint (ck_orders_side)
    "OrderTypeEnum": {"order_type_enum"},
    "OrderStatusEnum": {"order_status_enum"},
    "ActionEnum": {"action_enum"},
    "TimeInForceEnum": {"time_in_force_enum"},
}
SERVED = {
    "UUID": "UUID",
    "str": "String",
    "int": "Int",
    "Decimal": "Decimal",
    "datetime": "DateTime",
    "OrderSideEnum": "OrderSide",
    "OrderTypeEnum": "OrderType",
    "OrderStatusEnum": "OrderStatus",
    "ActionEnum": "ExecutionAction",
    "TimeInForceEnum": "TimeInForce",
}
TABLES = [entity for entity in fields.ENTITIES if entity.table is not None]


def type_name(field: fields.Field) -> str:
    assert isinstance(field.type, type), field
    return field.type.__name__


def test_every_python_type_of_the_registry_is_mapped() -> None:
    used = {type_name(f) for entity in fields.ENTITIES for f in entity.fields}
    assert used <= set(STORED) == set(SERVED)


async def test_the_registry_agrees_with_the_migrated_database(
    owner_conn: asyncpg.Connection,
) -> None:
    for entity in TABLES:
        rows = await owner_conn.fetch(
            "SELECT a.attname, t.typname, NOT a.attnotnull AS nullable"
            " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = ('public.' || $1)::regclass AND a.attnum > 0"
            " AND NOT a.attisdropped",
            entity.table,
        )
        columns = {row["attname"]: row for row in rows}
        registered = {f.name for f in entity.fields}
        assert not registered & set(entity.hidden), entity.table
        # Every column is served or deliberately hidden; nothing registered is missing.
        assert set(columns) == registered | set(entity.hidden), entity.table
        for field in entity.fields:
            column = columns[field.name]
            assert column["typname"] in STORED[type_name(field)], (entity.table, field.name)
            assert column["nullable"] == field.nullable, (entity.table, field.name)


async def test_the_registry_agrees_with_the_served_graphql_schema(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        schema = graphql_endpoint(client.app).graphql_schema
    for entity in fields.ENTITIES:
        graphql_type = schema.get_type(entity.typename)
        assert isinstance(graphql_type, GraphQLObjectType)
        # Lists of other entities (Order.fills, Order.executionLogs) are resolved, not read.
        served = {
            name: field.type
            for name, field in graphql_type.fields.items()
            if not isinstance(_unwrapped(field.type), GraphQLObjectType)
        }
        assert list(served) == [f.graphql for f in entity.fields], entity.typename
        for field in entity.fields:
            declared = served[field.graphql]
            assert isinstance(declared, GraphQLNonNull) != field.nullable, field.graphql
            named = _unwrapped(declared)
            assert isinstance(named, GraphQLScalarType | GraphQLEnumType)
            assert named.name == SERVED[type_name(field)], field.graphql
    # What a submission writes is what SubmitOrderInput takes, and columns of an order.
    submit_input = schema.get_type("SubmitOrderInput")
    assert submit_input is not None
    submitted = {f.graphql for f in fields.ORDER.fields if f.name in fields.SUBMIT_FIELDS}
    assert submitted == set(submit_input.fields)  # type: ignore[union-attr]
    assert set(fields.SUBMIT_FIELDS) <= {f.name for f in fields.ORDER.fields}
    assert set(fields.SUBMIT_FIELDS) == {f.name for f in dataclasses.fields(NewOrder)}
    assert set(fields.IDEMPOTENCY_FIELDS) == set(fields.SUBMIT_FIELDS) - {"client_order_id"}


def test_enum_fields_are_mapped_to_the_python_enums() -> None:
    row = {f.name: None for f in fields.ORDER.fields} | {
        "side": "BUY",
        "order_type": "LIMIT",
        "status": "PENDING",
    }
    mapped = fields.ORDER.from_row(row)  # type: ignore[arg-type]
    assert mapped["side"] is OrderSideEnum.BUY
    assert mapped["order_type"] is OrderTypeEnum.LIMIT
    assert mapped["status"] is OrderStatusEnum.PENDING
    assert fields.LOG.from_row({f.name: None for f in fields.LOG.fields})["status"] is None  # type: ignore[arg-type]


def _unwrapped(graphql_type: GraphQLOutputType) -> GraphQLOutputType:
    while isinstance(graphql_type, GraphQLNonNull | GraphQLList):
        graphql_type = graphql_type.of_type
    return graphql_type
