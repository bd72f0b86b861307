"""The field registry (app/orders/fields.py) agrees with the migrated database and with the
served GraphQL schema, so that everything derived from it (select lists, the compiled path,
row mapping) reads what exists and serves what the schema declares.

A column added by a migration must be registered or listed as deliberately hidden; a field
registered must exist in its table with a compatible type and nullability, and in the GraphQL
type with the same type (the Strawberry annotation mirrors the registry: see graphql/types.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from datetime import datetime
from decimal import Decimal

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

# What every submitOrder calls (migration 011, from 008): its INSERT is a static statement
# over the columns the API's document holds, trader_id and SUBMIT_FIELDS.
SUBMIT_ORDER = "order_api_private.place_order(jsonb)"
SUBMITTED = ("trader_id", *fields.SUBMIT_FIELDS)


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
            if field.sql is None:
                # A field served through an expression (hash: bytea as hex text) has the
                # expression's type; the served-schema test below checks that one.
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


async def test_submit_order_writes_exactly_the_submit_fields(
    owner_conn: asyncpg.Connection,
) -> None:
    """The function's key list, its static INSERT's columns and the values it reads for them
    are trader_id and SUBMIT_FIELDS: a field added on one side only fails here (the API's
    documents would be refused, or take the slow statement of a partial document)."""
    definition = await owner_conn.fetchval(
        "SELECT pg_get_functiondef($1::regprocedure)", SUBMIT_ORDER
    )
    listed = re.search(r"submitted CONSTANT text\[\] := ARRAY\[([^\]]*)\]", definition)
    static = re.search(r"INSERT INTO public\.orders \(([^)]*)\)\s+VALUES \(([^)]*)\)", definition)
    assert listed is not None, definition
    assert static is not None, definition
    keys = [key.strip().strip("'") for key in listed.group(1).split(",")]
    columns = [column.strip() for column in static.group(1).split(",")]
    values = [value.strip() for value in static.group(2).split(",")]
    assert sorted(keys) == sorted(columns) == sorted(SUBMITTED)
    assert values == [f"r.{column}" for column in columns]


# Every submit field with a value other than its column's default, over two valid orders
# (a STOP_LIMIT order cannot be IOC).
EVERY_FIELD = [
    {
        "symbol": "MSFT",
        "side": "SELL",
        "quantity": 3,
        "order_type": "STOP_LIMIT",
        "price": Decimal("20.50"),
        "stop_loss": Decimal("25.00"),
        "take_profit": Decimal("15.00"),
        "expires_at": datetime.fromisoformat("2031-02-03T04:05:06+00:00"),
        "stop_price": Decimal("21.00"),
        "time_in_force": "GTC",
        "client_order_id": "k-1",
    },
    {
        "symbol": "ACME",
        "side": "BUY",
        "quantity": 1,
        "order_type": "LIMIT",
        "price": Decimal("10.00"),
        "stop_loss": None,
        "take_profit": None,
        "expires_at": None,
        "stop_price": None,
        "time_in_force": "IOC",
        "client_order_id": None,
    },
]


async def test_every_submit_field_reaches_the_order(
    authenticator_conn: asyncpg.Connection,
) -> None:
    """The database, asked with the API's document (every key of SUBMITTED), stores each
    field's value; a key the function does not write is refused, never dropped."""
    trader = uuid.uuid4()
    claims = json.dumps({"role": "authenticated", "sub": str(trader)})
    for order in EVERY_FIELD:
        assert set(order) == set(fields.SUBMIT_FIELDS)
        document = {"trader_id": str(trader)} | {
            name: value if value is None or isinstance(value, int) else str(value)
            for name, value in order.items()
        }
        row = await authenticator_conn.fetchrow(
            "SELECT inserted, (placed).* FROM order_api_private.submit_order($1, $2, $3::jsonb)",
            "authenticated",
            claims,
            json.dumps(document),
        )
        assert row["inserted"]
        stored = {name: row[name] for name in SUBMITTED}
        assert stored == {"trader_id": trader} | order


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
