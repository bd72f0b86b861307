"""What the API serves of each entity, one row per field: everything else is derived from here.

Each ``Field`` names the GraphQL field, the column it reads, the SQL expression the compiled
path puts into its JSON, and the Python type the GraphQL type declares. From these rows come
the resolvers' SQL select lists (orders/queries.py), the compiled path's field maps
(graphql/compiled/), and the GraphQL types' row mapping (``from_row`` in graphql/types.py).
Adding a field to an order is one line in ``ORDER`` plus the migration (and the mirrors that
a test holds to it: the model in app/models/ and the Strawberry annotation, see
tests/test_field_registry.py).

Paging (sizes, ordering, the cursor) is in orders/pages.py, derived from the same entities.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, Union, get_args, get_origin
from uuid import UUID

from sqlalchemy.engine import RowMapping

from app.db.decimals import DECIMAL_SQL
from app.models.order import (
    ActionEnum,
    OrderSideEnum,
    OrderStatusEnum,
    OrderTypeEnum,
    TimeInForceEnum,
)

# The caller's sub as the database sees it, read from the claims the transaction carries
# rather than through auth.uid(): on Supabase only anon, authenticated and service_role
# may use the auth schema, and compliance_auditor must read its viewer too.
CLAIMED_SUB = "(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid"


def camel(snake: str) -> str:
    """The GraphQL name of a Python one (Strawberry's rule)."""
    head, *rest = snake.split("_")
    return head + "".join(word.title() for word in rest)


def _quoted(column: str) -> str:
    # "timestamp" is a keyword; the others are quoted only where PostgreSQL needs it.
    return f'"{column}"' if column == "timestamp" else column


def _plain(py: object) -> object:
    """``X`` of ``X | None``."""
    if get_origin(py) in (Union, types.UnionType):
        [inner] = [arg for arg in get_args(py) if arg is not type(None)]
        return inner
    return py


@dataclass(frozen=True)
class Field:
    """One served field. ``name`` is the Python attribute and the column (or the name of
    ``sql``'s value); the GraphQL name is its camelCase (Strawberry's rule). The derived
    properties are cached: from_row runs them for every row the resolvers map."""

    name: str
    py: object
    sql: str | None = None
    """The value as SQL over the row alias ``{t}``, when it is not simply the column."""

    @cached_property
    def graphql(self) -> str:
        return camel(self.name)

    @cached_property
    def nullable(self) -> bool:
        return _plain(self.py) is not self.py

    @cached_property
    def type(self) -> object:
        """``py`` without ``| None``."""
        return _plain(self.py)

    @cached_property
    def column(self) -> str:
        return _quoted(self.name)

    @cached_property
    def json(self) -> str:
        """The compiled path's expression over ``{t}``. Numerics as text, written as the
        resolvers write them (db/decimals.py): the contract's Decimal is a string, never a
        float. Timestamps as they are: json_build_object writes them with to_json, the format
        of graphql/scalars.py."""
        if self.sql is not None:
            return self.sql
        value = f"{{t}}.{self.column}"
        return DECIMAL_SQL.format(v=value) if self.type is Decimal else value

    @cached_property
    def load(self) -> Callable[[Any], Any] | None:
        """Row value -> the GraphQL type's value, where they differ: the database's enums
        arrive as text."""
        plain = self.type
        if isinstance(plain, type) and issubclass(plain, enum.Enum):
            return lambda value: None if value is None else plain(value)
        return None


@dataclass(frozen=True)
class Entity:
    typename: str
    """The GraphQL type."""
    table: str | None
    fields: tuple[Field, ...]
    hidden: Mapping[str, str]
    """Columns of ``table`` deliberately not served, and why (checked against the database)."""

    @property
    def columns(self) -> str:
        """The resolvers' select list: every served field, under its own name."""
        return ", ".join(
            f.column if f.sql is None else f"{f.sql.format(t=self.table)} AS {f.column}"
            for f in self.fields
        )

    def json(self) -> dict[str, str]:
        """GraphQL field -> the compiled path's SQL expression over ``{t}``."""
        return {f.graphql: f.json for f in self.fields}

    def from_row(self, row: RowMapping) -> dict[str, Any]:
        """Keyword arguments of the GraphQL type, from a row of ``columns``."""
        return {name: row[name] if load is None else load(row[name]) for name, load in self._loads}

    @cached_property
    def _loads(self) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
        return tuple((f.name, f.load) for f in self.fields)


ORDER = Entity(
    "Order",
    "orders",
    (
        Field("id", UUID),
        Field("trader_id", UUID),
        Field("client_order_id", str | None),
        Field("symbol", str),
        Field("side", OrderSideEnum),
        Field("quantity", int),
        Field("order_type", OrderTypeEnum),
        Field("price", Decimal | None),
        Field("stop_price", Decimal | None),
        Field("time_in_force", TimeInForceEnum),
        Field("replaces_id", UUID | None),
        Field("replaced_by_id", UUID | None),
        Field("stop_loss", Decimal | None),
        Field("take_profit", Decimal | None),
        Field("status", OrderStatusEnum),
        Field("filled_quantity", int),
        Field("average_fill_price", Decimal | None),
        Field("created_at", datetime),
        Field("updated_at", datetime),
        Field("expires_at", datetime | None),
    ),
    hidden={
        "status_reason": "the audit trail carries reasons (ExecutionLog.reason)",
        "error_code": "the audit trail carries codes (ExecutionLog.errorCode)",
        "retry_attempt": "the engine's bookkeeping",
        "approved_at": "the engine's bookkeeping",
        "routed_at": "the engine's bookkeeping",
        "recovered_at": "the engine's bookkeeping",
    },
)

FILL = Entity(
    "Fill",
    "fills",
    (
        Field("id", UUID),
        Field("order_id", UUID),
        Field("timestamp", datetime),
        Field("quantity_filled", int),
        Field("price_at_fill", Decimal),
        Field("venue", str),
        Field("commission", Decimal),
    ),
    hidden={
        "trader_id": "the order's trader, for row level security; the order says it",
        "created_at": "insertion time, a tie-breaker of the order of fills",
    },
)

LOG = Entity(
    "ExecutionLog",
    "execution_logs",
    (
        Field("id", UUID),
        Field("order_id", UUID),
        Field("trader_id", UUID),
        Field("action", ActionEnum),
        Field("status", OrderStatusEnum | None),
        Field("timestamp", datetime),
        Field("reason", str | None),
        Field("retry_attempt", int | None),
        Field("error_code", str | None),
        # The audit chain (migration 005) in lowercase hex, as `python -m app audit` exports it.
        Field("hash", str, sql="encode({t}.hash, 'hex')"),
        Field("prev_hash", str | None, sql="encode({t}.prev_hash, 'hex')"),
    ),
    hidden={
        "created_at": "insertion time; timestamp is the event's",
        "seq": "the change feed's position (migration 004), internal",
        "xact": "the order events' commit order (migration 013); OrderEvent.cursor carries it",
        "stream_key": "the order events' commit order (migration 013); OrderEvent.cursor carries it",
    },
)

# Not a table: who the database thinks is calling, asked of PostgreSQL itself.
VIEWER = Entity(
    "Viewer",
    None,
    (
        Field("trader_id", UUID | None, sql=CLAIMED_SUB),
        Field("role", str, sql="current_user"),
    ),
    hidden={},
)

# Migration 012's position_view: a view (its columns are all nullable to the catalog, so the
# registry test checks it by name: tests/test_positions_api.py), one row per trader, method
# and symbol, its money already rounded by the database.
POSITION = Entity(
    "Position",
    None,
    (
        Field("trader_id", UUID),
        Field("symbol", str),
        Field("quantity", int),
        Field("average_entry_price", Decimal | None),
        Field("cost_basis", Decimal),
        Field("realized_pnl", Decimal),
        Field("commissions", Decimal),
        Field("market_price", Decimal | None),
        Field("market_value", Decimal | None),
        Field("unrealized_pnl", Decimal | None),
        Field("updated_at", datetime),
    ),
    hidden={
        "method": "an argument (CostBasisMethod), not a field",
        "fills": "how many fills moved it: positionUpdates sends a position when it grows",
    },
)

ENTITIES = (ORDER, FILL, LOG, VIEWER, POSITION)

# What a submission writes, and what must match for a repeated clientOrderId to be the same
# order (orders/service.py, orders/validation.NewOrder, the insert in orders/ledger.py).
IDEMPOTENCY_FIELDS = (
    "symbol",
    "side",
    "quantity",
    "order_type",
    "price",
    "stop_loss",
    "take_profit",
    "expires_at",
    "stop_price",
    "time_in_force",
)
SUBMIT_FIELDS = (*IDEMPOTENCY_FIELDS, "client_order_id")
