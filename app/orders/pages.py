"""Lists of the API: page sizes, ordering and the cursor, for the resolvers and the compiled path.

Both paths answer the same list the same way only if they share these facts, so each is
written once here: the resolvers' SQL (orders/queries.py) and the compiled statement
(graphql/compiled/) are built from them, and the cursor's Python encoding has its SQL twin
beside it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy.engine import RowMapping

from app.db.timestamps import isoformat
from app.orders import fields
from app.orders.errors import InvalidInput

MAX_PAGE = 100


def first_or_default(first: int | None, default: int) -> int:
    """The page size asked for. The contract declares ``first: Int = 20`` (nullable with a
    default): an explicit null means the default, like an omitted argument."""
    if first is None:
        return default
    if not 1 <= first <= MAX_PAGE:
        raise InvalidInput("first", f"first must be between 1 and {MAX_PAGE}")
    return first


@dataclass(frozen=True)
class Listing:
    """A paged root list: newest first by ``at``, then id; the cursor is (at, id)."""

    entity: fields.Entity
    at: str
    """The column the list is ordered by (as SQL, quoted where needed)."""
    default_first: int

    @property
    def table(self) -> str:
        assert self.entity.table is not None
        return self.entity.table

    @property
    def at_key(self) -> str:
        """``at`` as a row's key."""
        return self.at.strip('"')

    def order_by(self, alias: str = "") -> str:
        a = f"{alias}." if alias else ""
        return f"{a}{self.at} DESC, {a}id DESC"

    def cursor_of(self, row: RowMapping) -> str:
        return Cursor(row[self.at_key], row["id"]).encode()


ORDERS = Listing(fields.ORDER, at="created_at", default_first=20)
LOGS = Listing(fields.LOG, at='"timestamp"', default_first=50)


@dataclass(frozen=True)
class NestedList:
    """A list under each order (Order.fills, Order.executionLogs): all of it, oldest first."""

    entity: fields.Entity
    order: str
    """ORDER BY over the table's columns."""

    def order_by(self, alias: str) -> str:
        return ", ".join(f"{alias}.{column.strip()}" for column in self.order.split(","))


FILLS_OF_ORDER = NestedList(fields.FILL, '"timestamp", created_at, id')
LOGS_OF_ORDER = NestedList(fields.LOG, '"timestamp", id')
OF_ORDER = {"fills": FILLS_OF_ORDER, "executionLogs": LOGS_OF_ORDER}
"""GraphQL field of Order -> its nested list."""


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: urlsafe base64 of "<iso timestamp>|<uuid>", unpadded."""

    at: datetime
    id: UUID

    def encode(self) -> str:
        raw = f"{isoformat(self.at)}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def sql(at: str, ident: str) -> str:
        """``encode`` as SQL over two expressions (to_json writes timestamps as isoformat)."""
        return (
            "rtrim(translate(replace(encode(convert_to("
            f"(to_json({at}) #>> '{{}}') || '|' || {ident}::text, 'UTF8'), 'base64'),"
            " E'\\n', ''), '+/', '-_'), '=')"
        )

    @classmethod
    def decode(cls, value: str, field: str = "after") -> Cursor:
        try:
            padded = value + "=" * (-len(value) % 4)
            at, _, ident = base64.urlsafe_b64decode(padded).decode().partition("|")
            cursor = cls(datetime.fromisoformat(at), UUID(ident))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidInput(field, f"{field} is not a cursor this API issued") from None
        if cursor.at.tzinfo is None:
            raise InvalidInput(field, f"{field} is not a cursor this API issued")
        try:
            # In UTC, as the database compares it: an offset may carry it out of the years
            # 1 to 9999 ("0001-01-01T00:00:00+14:00"), which asyncpg cannot send.
            return cls(cursor.at.astimezone(UTC), cursor.id)
        except OverflowError:
            raise InvalidInput(field, f"{field} is not a cursor this API issued") from None


@dataclass(frozen=True)
class Page:
    rows: Sequence[RowMapping]
    has_next: bool

    @classmethod
    def of(cls, rows: Sequence[RowMapping], first: int) -> Page:
        """From ``first + 1`` rows asked for: the extra one only says that more follow."""
        return cls(rows=rows[:first], has_next=len(rows) > first)
