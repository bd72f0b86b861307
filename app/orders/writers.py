"""How a trader's submit and cancel reach the database: one SQL writer per operation, two ways
to call it.

Migration 011's ``order_api_private.place_order`` and ``cancel_own_order`` are the writers:
each is one statement that writes as the current role, with its privileges, row level
security, the order rules and the audit chain. orders/service.py runs the use case around
them and takes a ``Writer``, which says where the statement runs:

- ``InTransaction``: inside a request's transaction, whose role and claims db/session.py has
  set (the resolvers, and any document of several fields);
- ``Autocommit``: alone, in autocommit, through 007's outer function of the same operation,
  which becomes the caller first (``Database.autocommit_row``: one round trip, the compiled
  mutations of graphql/compiled/mutations.py).

Both answer the same: the function's row (the order's columns as the field registry serves
them, and the function's own outcome), or ``Refused`` for an order the order rules refuse
(SQLSTATE OA422), after which nothing is written and ``read`` still works. Any other error of
the database is raised as the driver raised it, for ``queries.database_errors``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, Protocol, TypeAlias
from uuid import UUID

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.elements import TextClause

from app.auth.claims import Claims
from app.db.session import Database, Tx
from app.orders import fields
from app.orders.validation import NewOrder

OrderRow: TypeAlias = Any
"""A row of a writer: a RowMapping (in a transaction) or an asyncpg Record (autocommit); both
are read by column name, as ``fields.ORDER.from_row`` reads them."""


class Refused(Exception):
    """The order rules refused the order (SQLSTATE OA422, from any trigger): nothing was
    written. ``message`` and ``column_name`` are the database's, as ``queries.translate``
    reads them from the driver's error."""

    def __init__(self, message: str, column_name: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.column_name = column_name


@dataclass(frozen=True)
class Function:
    """One writer of migration 011: ``inner`` writes as the current role, ``outer`` (007's)
    becomes the role and claims it is given, then calls ``inner``."""

    inner: str
    outer: str
    casts: tuple[str, ...]
    """The SQL type of each argument (the outer function's role and claims come first)."""
    outcome: str
    """What the function's row adds to the order's columns (``s``: the function's row,
    ``o``: its order)."""
    refuses: bool = False
    """Whether ``inner`` returns an OA422 refusal (``refused``, ``refused_field``) rather
    than raising it, so that the caller's transaction survives it."""

    def _select(self, call: str, outcome: str) -> str:
        return (
            f"SELECT {outcome}, {fields.ORDER.columns}"
            f" FROM {call} s, LATERAL (SELECT (s.placed).*) o"
        )

    @cached_property
    def in_transaction(self) -> TextClause:
        arguments = ", ".join(f"CAST(:a{i} AS {cast})" for i, cast in enumerate(self.casts))
        refusal = ", s.refused, s.refused_field" if self.refuses else ""
        return text(self._select(f"{self.inner}({arguments})", self.outcome + refusal))

    @cached_property
    def autocommit(self) -> str:
        arguments = "".join(f", ${i}::{cast}" for i, cast in enumerate(self.casts, start=3))
        return self._select(f"{self.outer}($1, $2{arguments})", self.outcome)


PLACE_ORDER = Function(
    inner="order_api_private.place_order",
    outer="order_api_private.submit_order",
    casts=("jsonb",),
    outcome="s.inserted",
    refuses=True,
)
"""(new order document) -> inserted, the order (new, or the one placed under its
clientOrderId before): see ``new_order_document``."""
CANCEL_OWN_ORDER = Function(
    inner="order_api_private.cancel_own_order",
    outer="order_api_private.cancel_order",
    casts=("uuid", "text", "text[]"),
    # With what the lifecycle looks at (service.state_of), for a refused cancel's message.
    outcome="s.outcome, o.approved_at, o.routed_at",
)
"""(order id, reason, cancellable states) -> outcome (cancelled, refused or not_found), the
order."""


def new_order_document(trader_id: UUID, order: NewOrder) -> str:
    """place_order's argument: trader_id and every submit field (the registry's), as JSON."""
    document = {"trader_id": str(trader_id)} | {
        name: _json_value(getattr(order, name)) for name in fields.SUBMIT_FIELDS
    }
    return json.dumps(document)


def _json_value(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class Writer(Protocol):
    """Where a use case's statement runs (see the module's docstring)."""

    @property
    def claims(self) -> Claims: ...

    async def call(self, function: Function, *args: object) -> OrderRow:
        """The function's row; ``Refused`` for an order the rules refuse."""
        ...

    async def read(self, statement: TextClause) -> RowMapping | None:
        """A read as the caller, where a refusal is phrased: after ``call`` too."""
        ...


class InTransaction:
    """The inner function, in the request's transaction (its role and claims are set)."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx

    @property
    def claims(self) -> Claims:
        return self.tx.claims

    async def call(self, function: Function, *args: object) -> OrderRow:
        row = await self.tx.first(
            function.in_transaction, {f"a{i}": value for i, value in enumerate(args)}
        )
        assert row is not None  # a function with OUT parameters always returns its row
        if function.refuses and row["refused"] is not None:
            raise Refused(row["refused"], row["refused_field"])
        return row

    async def read(self, statement: TextClause) -> RowMapping | None:
        return await self.tx.first(statement)


class Autocommit:
    """The outer function, alone in autocommit: one round trip, its own transaction."""

    def __init__(self, database: Database, claims: Claims) -> None:
        self.database = database
        self._claims = claims

    @property
    def claims(self) -> Claims:
        return self._claims

    async def call(self, function: Function, *args: object) -> OrderRow:
        claims = self._claims
        try:
            return await self.database.autocommit_row(
                function.autocommit, (claims.role, claims.to_json(), *args)
            )
        except asyncpg.PostgresError as error:
            if error.sqlstate == "OA422":
                raise Refused(error.message, error.column_name or None) from error
            raise

    async def read(self, statement: TextClause) -> RowMapping | None:
        # The statement's transaction ended with it: a read-only one of its own, as the caller.
        async with self.database.transaction(self._claims, read_only=True) as tx:
            return await tx.first(statement)
