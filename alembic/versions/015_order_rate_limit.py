"""Order rate limit

Revision ID: 015
Revises: 014
Create Date: 2026-12-07

Issue 21 (an order rate per trader): nothing limited how fast one trader submitted orders,
so one trader's script could flood the engine's queue. Like the open order cap (010), the
rate is one value in ``order_limits``, enforced by the database for every writer (the API,
Supabase's Data API, plain SQL as ``authenticated`` or ``service_role``):

- ``order_limits.max_orders_per_minute`` (integer, NULL for no limit, else positive): the
  most orders each trader may have inserted in any 60 s. Every insert counts, whatever
  became of the order: a replacement (``replaces_id`` set, 006's replaceOrder) is a new
  order and counts too. The engine's writes (approve, route, fill, cancel, expire) update
  orders or insert fills and are not orders: they are never limited.
- The window is the orders' own clock, ``created_at``, which 006's ``orders_lifecycle``
  sets to the transaction's start (``now()``) for every insert: ``orders_limit_rate`` runs
  after it (BEFORE INSERT triggers fire in name order) and counts the trader's orders with
  ``created_at > NEW.created_at - 60 s``, the new one's own stamp. Stamp and count read the
  same clock, so the rule is exact over what the table records: no 60 s interval holds
  more than the limit of one trader's ``created_at``. The last of any such set to commit
  counted the others (they are committed before its lock was granted, see below). Statement
  time would measure a different clock from the one stored: several inserts in one long
  transaction would all be stamped with its start and, counted from the statement's time,
  miss each other. What transaction time gives up: a plain SQL writer that holds a
  transaction open stamps its orders with the transaction's start, so they leave the
  window early. The API's transactions last milliseconds.
- A refused insert raises SQLSTATE ``OA429`` (the OA codes' HTTP convention: 429 Too Many
  Requests) and writes nothing (the statement fails). Its DETAIL is a whole number of
  seconds from 1 to 60, nothing else: when the oldest order that keeps the window full
  leaves it (its ``created_at`` + 60 s, from the clock at the refusal, rounded up). The API
  answers RATE_LIMITED with HTTP 429, that number as ``extensions.retryAfterSeconds`` and
  as the ``Retry-After`` header. An idempotent repeat (a clientOrderId the trader already
  used) is let through to its conflict: it writes nothing and answers the order placed
  before, as without a limit.
- Traders never wait for each other: with a limit set, the trigger takes the trader's own
  transaction-level advisory lock before counting (010's key: one lock per trader for both
  order counts), so one trader's inserts queue until commit and other traders' do not. A
  trader's insert for another trader (refused by the policy after this trigger) takes no
  lock, so that no one can hold another trader's key. The count reads at most the limit's
  number of entries of 001's ``idx_orders_trader_created`` (trader_id, created_at DESC):
  newest first, stopping at the limit-th. Without a limit the trigger reads only
  ``order_limits``. As for 010, REPEATABLE READ is refused while a limit is set (a stale
  snapshot would count too few).

The downgrade gives back exactly what 011 made: it drops the trigger, its function and the
column.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "015"
down_revision: str | None = "014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("015/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("015/downgrade.sql")
