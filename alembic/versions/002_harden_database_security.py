"""Harden database security

Revision ID: 002
Revises: 001
Create Date: 2026-11-29

Closes the escalation through the audit trigger and every hole of its kind:

- Every trigger function of 001 names each table and type with its schema and
  runs with ``search_path = pg_catalog, pg_temp``. A search_path that does not
  name ``pg_temp`` searches the caller's temporary schema *first*, so under
  001's ``pg_catalog, public`` a temporary table called ``execution_logs`` or
  ``fills`` took the place of the real one (and, in the SECURITY DEFINER audit
  function, ran the caller's trigger as the migration owner). With pg_temp
  last and every name qualified, nothing a caller creates is ever looked up.
- ``orders_write_audit`` stays SECURITY DEFINER (no API role may insert audit
  rows) but is owned by ``order_audit_writer``, a NOLOGIN role that may only
  insert audit rows, instead of the migration owner. The other trigger
  functions need no rights of their own and run as the caller (INVOKER).
- EXECUTE on those functions is revoked from PUBLIC and, explicitly, from every
  API role: Supabase's default privileges grant it to anon, authenticated and
  service_role directly, so revoking it from PUBLIC alone is not enough.
- TEMPORARY on the database is revoked from PUBLIC where the migrating role
  may (it owns the database): nothing in this product uses temporary objects.
  On Supabase the database belongs to the platform and the privilege stays;
  a NOTICE says so, and the search_path above is the defence on its own.
- ``alembic_version``: no API role may write it whatever the default
  privileges granted; row level security is on and forced like on every
  table in ``public``; ``authenticator`` keeps SELECT (``/readyz``).
- The audit trail's and the fills' immutability does not rest on policies
  (BYPASSRLS roles skip those): the owner's UPDATE/DELETE/TRUNCATE on fills
  is revoked as 001 did for execution_logs, and the triggers refuse the rest.

The SQL is in sql/002/, each file run whole. The downgrade returns to 001: it
runs 001's sql/001/functions.sql again, not a copy. Revocations from the API roles are kept (on
plain PostgreSQL they are what 001 had anyway; on Supabase re-granting would
re-open the hole). The role ``order_audit_writer`` is cluster-wide and stays,
holding nothing in this database, like 001's roles.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic.util import load_python_file

from alembic import context, op

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")
log = logging.getLogger("alembic.runtime.migration")

revision: str = "002"
down_revision: str | None = "001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run(
        "002/audit_writer_role.sql",
        "002/functions.sql",
        "002/orders_announce_change.sql",
        "002/audit_writer_owns_audit.sql",
        "002/execute_privileges.sql",
        "002/temporary_revoke.sql",
        "002/alembic_version.sql",
        "002/owner_append_only.sql",
    )
    if not context.is_offline_mode():
        # temporary_revoke.sql's NOTICE reaches the server log only; say it where the
        # operator looks.
        kept = op.get_bind().execute(
            sa.text("SELECT has_database_privilege('public', current_database(), 'TEMPORARY')")
        )
        if kept.scalar():
            log.warning(
                "TEMPORARY on this database stays granted to PUBLIC: the migrating role does"
                " not own the database (as on Supabase). Our functions name every object with its"
                " schema and search pg_temp last, so temporary objects cannot stand in for them;"
                " see README, Security model."
            )


def downgrade() -> None:
    sql_scripts.run("002/downgrade.sql", "001/functions.sql")
