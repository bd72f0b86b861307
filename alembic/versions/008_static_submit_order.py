"""Static submit_order

Revision ID: 008
Revises: 007
Create Date: 2026-11-29

007's ``order_api_private.submit_order`` built its INSERT from the document's keys with
``EXECUTE format(...)``, so every call parsed, analyzed and planned the INSERT again and
re-read the table's check constraints (perf on the database: SPI_execute_extended,
base_yyparse, stringToNode). This revision replaces the function (same signature, owner,
EXECUTE for ``authenticator`` only, SECURITY INVOKER, the same ``become``) with one whose
INSERT is a static statement over the columns a submission writes, ``trader_id`` and
app/orders/fields.SUBMIT_FIELDS, read from ``jsonb_populate_record(NULL::public.orders, ...)``:
PL/pgSQL plans it once per connection. Measured by pgbench on 1,000,000 orders, c=10:
1,564 and 1,678 tps before, 2,234 and 2,138 after.

The document the API sends has exactly those keys, and is written as 007 wrote it: the same
statement, so the same column privileges, row level security, order rules, audit row and
hash chain (they are the table's), then the same re-read of an idempotent repeat. Others:

- a key outside the list is refused (SQLSTATE 42501, naming it), never dropped: 007 refused
  the columns a trader may not write (status, filled_quantity, ...) with the same SQLSTATE,
  and a key the static statement silently left out would be a lost field;
- a document missing some of the keys (only a SQL caller sends one) is written as 007
  wrote it, through 007's dynamic statement over the keys present: the missing columns
  take their defaults (time_in_force's is GTC, not NULL);
- anything but a JSON object is refused with 22023.

A field added to SUBMIT_FIELDS therefore needs a revision that adds it here: until then the
API's submissions are refused, and tests/test_field_registry.py fails.

The downgrade puts back 007's function exactly (CREATE OR REPLACE: the same oid and ACL).
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "008"
down_revision: str | None = "007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("008/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("008/downgrade.sql")
