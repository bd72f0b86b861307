"""Fills not dated in the future

Revision ID: 017
Revises: 016
Create Date: 2026-12-08

The API refuses a fill whose ``timestamp`` lies in the future (app/orders/validation.py,
BAD_USER_INPUT on ``timestamp``), but the database refused only what lay beyond 009's
horizon, so another writer of fills (service_role through Supabase's Data API, plain SQL)
could date a fill tomorrow: out of order in its order's chain, in positions' FIFO lots and
in the audit trail. 009's ``fills_check_input`` now refuses it too, with the API's message,
SQLSTATE OA422 naming ``timestamp``.

"The future" is the database's clock at the insert (``clock_timestamp()``, not the
transaction's start, which a fill reported during a long transaction may follow) plus five
seconds: the API checks against its own clock, and the engine or the API may run on another
host whose clock is a little ahead of the database's. A refusal there would stop the engine
recording real fills; five seconds is far beyond what NTP lets two servers drift apart, and
far short of any use of a future date.

The downgrade gives back exactly what 016 had: 009's function body (CREATE OR REPLACE keeps
its owner and privileges either way).
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "017"
down_revision: str | None = "016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("017/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("017/downgrade.sql")
