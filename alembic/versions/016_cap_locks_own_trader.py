"""The open order cap locks only the caller's own trader

Revision ID: 016
Revises: 015
Create Date: 2026-12-07

010's ``orders_check_working_cap`` takes the inserted trader's advisory lock before the
row level policy ``orders_trader_submit`` (which runs after BEFORE triggers) refuses an
order a trader writes for someone else. With a cap set, a trader could insert an order
naming another trader, keep the refused (aborted) transaction open, and so stall every
submit of that other trader until it ended: one trader stalling another. The trigger now
returns early for an ``authenticated`` caller inserting for another trader, as 015's order
rate trigger does: the policy refuses that insert anyway, and no lock is taken for it.
Nothing else changes: service_role still takes the trader's lock (it may write for any
trader), and the cap is counted exactly as before.

The downgrade gives back 010's function exactly.
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
