"""Create order execution tables

Revision ID: 001
Revises:
Create Date: 2026-11-24

Orders, fills and the immutable execution log, isolated per trader by row
level security in the Supabase/PostgREST style: the API sets the role and
``request.jwt.claims`` per transaction and the policies below decide.

What the database itself guarantees, whoever writes (trader, API, engine,
plain SQL as service_role):
- every insert, approval, routing attempt, recovery, fill, cancellation and
  rejection of an order writes its execution_logs row in the same transaction;
- the order lifecycle (see README) cannot be skipped or reversed;
- filled_quantity, average_fill_price and the fill-driven statuses are derived
  from the fills, so they cannot disagree with them;
- execution_logs rows are never updated, deleted or truncated, not even by
  the table owner (policies, privileges and triggers, each on its own);
- every committed change of an order is announced (NOTIFY order_changes, with
  identifiers only) for the API's live updates.

The SQL is in sql/001/, each file run whole (sql_scripts.py), so that
``alembic upgrade head --sql`` prints exactly what runs online; who may do what
is the matrix at the top of sql/001/policies.sql. Roles are cluster-wide: they
are created when missing and left in place by the downgrade (other databases of
the cluster may use them).
"""

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic.util import load_python_file

from alembic import context, op

HERE = Path(__file__).resolve().parent
sql_scripts = load_python_file(HERE.parent, "sql_scripts.py")
scram = load_python_file(HERE.parent, "scram.py")

revision: str = "001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The mark roles.sql puts on the roles it creates (COMMENT ON ROLE).
CREATED_BY = "created by order-api migration 001"
AUTHENTICATOR_NOT_OURS = (
    "role authenticator exists and was not created by this migration: left unchanged"
    " (no memberships, no password); see README, Deploy on Supabase"
)


def upgrade() -> None:
    if not context.is_offline_mode():
        _say_when_authenticator_is_not_ours()
    sql_scripts.run(
        "001/roles.sql",
        "001/auth.sql",
        "001/tables.sql",
        "001/functions.sql",
        "001/triggers.sql",
        "001/announce_trigger.sql",
        "001/policies.sql",
        "001/grants.sql",
        "001/readiness.sql",
    )
    # As the application's settings read it: unset or empty means no password.
    password = os.environ.get("AUTHENTICATOR_PASSWORD") or None
    if password:
        # Only a salted SCRAM-SHA-256 verifier, computed here, reaches the server (and the
        # --sql output): never the password, so no server log can show it.
        verifier = scram.scram_sha_256_verifier(password)
        sql_scripts.execute(sql_scripts.script("001/authenticator_password.sql", verifier=verifier))


def _say_when_authenticator_is_not_ours() -> None:
    # roles.sql's NOTICE reaches psql (--sql scripts), not Alembic's log: say it here.
    comment = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles"
                " WHERE rolname = 'authenticator'"
            )
        )
        .first()
    )
    if comment is not None and comment[0] != CREATED_BY:
        logging.getLogger("alembic.runtime.migration").warning(AUTHENTICATOR_NOT_OURS)


def downgrade() -> None:
    sql_scripts.run("001/downgrade.sql")
