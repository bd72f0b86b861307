"""Order event positions

Revision ID: 013
Revises: 012
Create Date: 2026-12-07

Issue 20's order events (``Subscription.orderEvents``, app/events/): every audit row gets
a place in commit order, so that a stream can deliver each row exactly once, none skipped,
although ``seq`` is taken at insert and transactions commit out of ``seq`` order.

- ``xact``: the inserting top-level transaction's id (``pg_current_xact_id()``, xid8).
- ``stream_key``: ``greatest(xact, stream_key of the order's previous row)``.

Both are set by 005's chain trigger, which already reads the order's previous row under
the order's row lock; neither is part of the canonical form, so hashes stay as they were.

Why the order ``(stream_key, seq)`` is exact. Let ``m = pg_snapshot_xmin`` of a reader's
snapshot: every transaction with an id below ``m`` has ended, and every transaction that
has not ended, or has not started, has an id ``>= m``. A row's key is at least its own
transaction's id, so a row with ``stream_key < m`` belongs to an ended transaction, and
any row written later has ``stream_key >= m``. The visible rows with ``stream_key < m``
("settled") are therefore final: no later snapshot sees one more or one less. A reader
delivers settled rows in ``(stream_key, seq)`` order after its cursor; the next read's
``m`` is no smaller, and every row it may add has a key ``>= m``, after everything
delivered. So each row is delivered once and none is skipped.

Chain order: an order's rows are written one after another under its row lock (005), so
a later row has a larger ``seq``, and the ``greatest`` makes ``stream_key`` never decrease
along the chain, also when a transaction took its id (a row lock elsewhere) before waiting
for the one that wrote the previous row and committed first. ``(stream_key, seq)`` order is
therefore chain order within each order.

The cost: a transaction that stays open with an id holds ``m`` back, and every row after
its id waits for it to end (docs/order-events.md measures the common case).

Rows written before this revision have ``stream_key = xact = 0`` (all committed: the ALTER
waits for their writers), first and in ``seq`` order; set through a catalog default, so
no row is rewritten.

``order_api_private.event_cursor_key`` holds the key of the cursors' MACs, random per
database, readable by the login role only.

The downgrade returns to exactly 012.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "013"
down_revision: str | None = "012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("013/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("013/downgrade.sql")
