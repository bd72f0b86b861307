"""Hash-chained audit trail

Revision ID: 005
Revises: 004
Create Date: 2026-11-29

Makes the audit trail tamper-evident, not only immutable: every
``execution_logs`` row carries ``hash``, the SHA-256 of its canonical
serialization (``public.execution_logs_canonical``, the one definition of it;
app/audit/chain.py mirrors it for the verifier), which includes ``prev_hash``,
the hash of the row before it in its chain. A BEFORE INSERT trigger sets both,
so they are written by the database in the same statement (and transaction) as
the row, whoever inserts it; a value an insert supplies is overwritten.

The chain's scope is one order: a row's predecessor is the previous audit row
of the same order (by ``seq``). Every audit row is written by
``orders_write_audit`` while the transaction holds that order's row lock (the
INSERT or UPDATE of the order that caused it), so finding the predecessor and
appending to the chain needs no lock of its own, and writers of different
orders never wait for each other. A global chain (or one per trader) would need
one lock on the chain head that every writer of the platform (or of a busy
trader, the engine's fills of all its orders) queues on, for the length of its
transaction. A chain per order also never links rows of two traders, so a
trader reading its own rows (hashes included) learns nothing about anyone
else's.

Rows already written (a database at 004) get their hashes here, chain by chain
in ``seq`` order, with the immutability trigger off and row level security not
forced for the length of this migration's transaction (the table is locked
exclusively meanwhile, nobody sees the intermediate state); the owner's UPDATE
right, revoked by 001, is lent for the backfill only.

The downgrade returns to exactly 004: the columns, the trigger, the functions,
the index, the policy and the grants go.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "005"
down_revision: str | None = "004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("005/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("005/downgrade.sql")
