"""Trusted documents

Revision ID: 014
Revises: 013
Create Date: 2026-12-07

Issue 21 (trusted documents): the GraphQL documents a production frontend's build contains,
loaded by ``python -m app documents add`` and read by every server process.

- ``order_api_private.trusted_documents``: one row per document, its id as the manifest
  gave it, its text and that text's SHA-256. The database holds the rules a writer with
  plain SQL could skip: the hash is the text's (a CHECK computing it), an id of the form
  ``sha256:<hex>`` is that hash, and ``roles`` names API roles only.
- ``order_api_private.trusted_documents_version``: one counter, raised by a statement
  trigger on every change of the documents. Servers poll it (a one-row read) and reload
  when it moved: LISTEN would not survive a transaction-mode pooler, which CI runs through.

Who may do what: the owner (the migrating role, which the CLI connects as with
DATABASE_URL) writes; ``authenticator`` (the servers' login role) reads, outside any
request's role; no API role may write either table, nor read them (revoked by name too, for
Supabase's default privileges). RLS is enabled and forced, with a policy per reader.

"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "014"
down_revision: str | None = "013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("014/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("014/downgrade.sql")
