"""Input horizons

Revision ID: 009
Revises: 008
Create Date: 2026-12-01

Issue 18 parts 3 and 6: the database accepts no value a reader cannot decode, and no symbol
the API would read differently.

- ``public.timestamp_horizon()``: ten years (3653 days), the span app/orders/validation.HORIZON
  states for the API; tests/test_input_horizons.py reads both and holds them equal.
- ``public.checked_timestamp(field, value)``: refuses (SQLSTATE OA422, COLUMN = the API's
  field, the API's words) a timestamp that is infinite or more than the horizon from now().
  Before, ``orders_check_terms`` took ``expires_at = 'infinity'`` or ``'50000-01-01'`` from
  plain SQL, and the compiled submitOrder stored "9999-12-31T23:59:59-14:00" as
  10000-01-01 13:59:59+00: rows that every reader (Python's datetime ends with the year 9999)
  then failed on.
- ``orders_check_input`` (BEFORE INSERT OR UPDATE; first by name, before 003's
  orders_check_rules): on INSERT, expires_at within the horizon, and a symbol of ASCII only
  (003 upper-cases it with the database's locale, where glibc makes a dotless i (U+0131) an 'I'; the API
  upper-cases ASCII only); on UPDATE, approved_at, routed_at and recovered_at (the engine's,
  granted to service_role) within the horizon when they change.
- ``fills_check_input`` (BEFORE INSERT): a fill's timestamp within the horizon.
Nothing else a role can write holds a timestamp: created_at, updated_at and the audit rows'
times are the database's own (now(), clock_timestamp()).

Rows already stored beyond the horizon but readable (say, an expiry in 40 years) are left
as they are: the horizon is a rule for new writes, and changing a trader's order in a
migration would rewrite the record. Rows no reader can decode (outside the years 1 to 9999
UTC, 'infinity' included, in those columns) make the upgrade refuse, naming the columns and
counts and changing nothing: they break every page holding them already, and which fix is
right (a nearer expiry, removal) is the operator's decision, not a migration's.

The downgrade drops the two triggers and four functions: exactly 008's state.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "009"
down_revision: str | None = "008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("009/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("009/downgrade.sql")
