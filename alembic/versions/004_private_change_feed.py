"""Private change feed

Revision ID: 004
Revises: 003
Create Date: 2026-11-29

Live updates no longer travel over LISTEN/NOTIFY. Migration 001 announced
every order change with ``NOTIFY order_changes`` carrying the order's id and
trader id. Any role that can log in may LISTEN on any channel, so every
trader (and anon) learned every order id and trader id, and any role may
NOTIFY, so anyone could make the API re-read orders at will. A transaction
that notifies also takes a database-wide lock at commit, which serialized
every committing writer.

Instead, every audit row gets a feed position: ``execution_logs.seq``, from an
identity, in the same insert as the row (every change of an order writes its
audit row in the same transaction, see migration 001). The API's servers read
new positions (``seq``, ``order_id``, ``trader_id`` only) as ``authenticator``,
the login role they already are, through a column grant and a policy for that
role alone; the application roles (anon, traders, service_role, compliance)
gain nothing. Nothing is sent to any channel, so there is nothing to listen
to and nothing to forge, and commits no longer queue on the notify lock. The
feed is durable: changes committed while a server was away from the database
are read when it is back.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "004"
down_revision: str | None = "003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("004/upgrade.sql")


def downgrade() -> None:
    # Back to the announcements as 002 left them: 002's function, 001's trigger, 002's
    # privileges (one definition of each, in the revision that made it).
    sql_scripts.run(
        "004/downgrade.sql",
        "002/orders_announce_change.sql",
        "001/announce_trigger.sql",
        "004/downgrade_announcements.sql",
    )
