"""Compiled order writes

Revision ID: 007
Revises: 006
Create Date: 2026-11-29

Two functions in a schema of their own, ``order_api_private``, that the API's compiled
mutations (app/graphql/compiled/mutations.py) call as ONE statement in autocommit: the
statement's implicit transaction is the request's transaction, one round trip instead of
BEGIN, the caller's settings, the limits, the insert and COMMIT.

- ``submit_order(role, claims, new_order jsonb)``: inserts the order (the columns are the
  keys of ``new_order``, so a new submit field needs no new function) with ON CONFLICT on the
  idempotency key; returns whether it inserted, and the order (the new one, or the one the
  trader already placed under that clientOrderId).
- ``cancel_order(role, claims, order_id, reason, cancellable text[])``: locks the order,
  cancels it if its state is one of ``cancellable`` (the API's lifecycle table,
  app/orders/lifecycle.py, passed in rather than restated here); returns what happened and
  the order.

Both are SECURITY INVOKER: they run as the login role (``authenticator``), switch to the
caller's role and claims with transaction-local ``set_config`` (the role argument must be one
of the four API roles), and every statement after that runs with the caller's privileges, row
level security, the order rules (003), the audit row and its hash chain (005), exactly as the
resolvers' statements. Privileges are checked per statement, which is why this is a function
and not a CTE (a CTE's tables are checked at executor start, before it could switch roles).

Such a function lets whoever may call it pick a role, so EXECUTE is for ``authenticator``
only: revoked from PUBLIC and from each API role by name (Supabase's default privileges grant
EXECUTE on new functions to anon, authenticated and service_role), in a schema that PostgREST
does not expose and on which only ``authenticator`` has USAGE. ``authenticator`` could set
these roles and claims itself anyway; an API role (after SET ROLE) can neither reach the
schema nor execute the functions.

The downgrade drops the schema and everything in it: exactly 005 again.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "007"
# Written beside 006 (issue 13); re-pointed to "006" when both are merged.
down_revision: str | None = "006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("007/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("007/downgrade.sql")
