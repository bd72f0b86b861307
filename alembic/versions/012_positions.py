"""Positions and P&L

Revision ID: 012
Revises: 011
Create Date: 2026-12-07

Issue 20: a trader's holding in each symbol, derived from the fills of its orders and from
nothing else, for both cost basis methods, read without scanning the fills.

- ``positions``: one row per trader, method (``cost_basis_method``: FIFO, AVERAGE_COST) and
  symbol; signed quantity, the method's average entry price (6 decimals, half-even), the
  exact open cost, realized P&L (before commissions) and commissions. ``position_lots``:
  FIFO's open lots, oldest first (AVERAGE_COST keeps no lots: its average is its state).
- ``fills_update_positions`` (AFTER INSERT on fills, after 001's ``fills_after_insert`` by
  name, so under the order's row lock) calls ``positions_apply_fill(fill)``, which moves
  both methods' rows in the fill's transaction;
  racing fills of other orders queue on the position rows. A fill crossing zero closes the
  whole position at its price and opens the rest on the other side. Late fills on
  cancelled orders are fills like any other. It is SECURITY DEFINER, owned by
  ``order_position_keeper`` (NOLOGIN NOINHERIT, as 002's audit writer), the only role with
  write grants on the two tables: no API role can write a position, not even with plain SQL
  (nor call either function).
- ``market_prices``: the latest price the engine's venue reported per symbol; service_role
  writes it, every role but anon reads it.
- ``round_half_even(value, places)``: the one rounding rule (PostgreSQL's round rounds half
  away from zero). ``position_view`` (security_invoker) shapes the contract's Position with
  it; ``trader_positions(trader_id, method)`` is Query.positions: a trader reads its own
  whatever ``trader_id`` says, service_role and compliance_auditor must name a trader
  (SQLSTATE OA422 with column ``traderId``, the API's BAD_USER_INPUT).

The fills recorded before the upgrade are replayed through ``positions_apply_fill``, in the
order they were recorded (created_at, timestamp, id), by a function that reads them as the
keeper and is dropped again with its grant and policy at once (a NOTICE says how many).

The downgrade gives back exactly 011's state; the role stays (cluster-wide), holding nothing in this database.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "012"
down_revision: str | None = "011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("012/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("012/downgrade.sql")
