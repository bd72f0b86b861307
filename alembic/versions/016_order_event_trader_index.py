"""Order events: a trader's audit rows indexed in the stream's order

Revision ID: 016
Revises: 015
Create Date: 2026-12-08

Issue 20 (a replay of 10,000 events in under 1 s): a trader's ``orderEvents`` read
(app/events/stream.py) asks for the rows after its cursor in ``(stream_key, seq)`` order,
500 at a time, and row level security adds ``trader_id = (SELECT auth.uid())``. No index
served both: PostgreSQL found the trader's rows through 001's ``(trader_id, timestamp)``
index and sorted every one of them after the cursor for each batch, so a batch cost grew
with the trader's history (10 to 16 ms per 500-row batch of a 10,000-row history measured
alone; 20 to 60 ms on the loaded machine) and a replay with the square of its length.

``idx_execution_logs_trader_stream`` on ``(trader_id, stream_key, seq)`` makes that read one
index range that stops after 500 rows (1.8 ms for the same batch). Roles that see every
row (service_role, compliance_auditor) keep 013's ``(stream_key, seq)`` index; one order's
stream keeps 005's ``(order_id, seq)``. The stream's read turns bitmap scans off
(app/events/stream.py says why): the planner cannot know how many rows the policy's
``(SELECT auth.uid())`` matches and otherwise chose a bitmap scan of this index and a sort.

The price is one more index entry per audit row, on every write of an order: +411 bytes
of WAL (+6.4 %) per submit-and-fill transaction (five audit rows); pgbench's submit-and-fill
was -2.6 % and -6.1 % (medians of 6 runs each way) with run-to-run spreads of 30 % and
more, so no slowdown was measurable on the shared machine (bench/figures/order-events.md).

Nothing about who may read what changes: no grant, policy or function. The downgrade
drops the index.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "016"
down_revision: str | None = "015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("016/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("016/downgrade.sql")
