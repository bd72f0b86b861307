"""Enforce order rules in the database

Revision ID: 003
Revises: 002
Create Date: 2026-11-29

Every rule the API applies to a new order or a cancel holds in the database too, for
every writer: on Supabase a trader can write ``orders`` through the Data API
(PostgREST), pg_graphql or plain SQL as ``authenticated``, past this API.

- ``order_limits``: one row, the configurable limits (largest quantity, largest order
  value for priced orders, tradable symbols). The one definition: the API's submitOrder,
  this trigger and the engine's pre-trade check all read it. Written by the owner only
  (``UPDATE order_limits SET ...``); the API roles may read it.
- ``orders_check_rules`` (BEFORE INSERT, named to run before ``orders_lifecycle``):
  symbol normalised (trimmed, upper case) then checked, quantity and order value within
  the limits, tradable symbol, prices positive, within numeric(10, 2) and with at most 2
  decimals (the price columns become plain ``numeric`` so that a third decimal reaches
  the check instead of being rounded away), stop loss and take profit on the right side,
  expiry in the future, clientOrderId printable ASCII. Refusals carry SQLSTATE ``OA422``
  and the API's field name as the error's COLUMN.
- ``status_reason`` at most 500 characters: what a cancel (or a rejection) may write.
  Which columns a cancel may touch stays with 001's column grants and lifecycle trigger.

Kept apart from 001's trigger functions, which migration 002 replaces.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "003"
down_revision: str | None = "002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("003/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("003/downgrade.sql")
