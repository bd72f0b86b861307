"""One order writer

Revision ID: 011
Revises: 010
Create Date: 2026-12-08

Issue 19 (one use case per operation): the API wrote a trader's submit and cancel two ways,
the resolvers with their own statements inside the request transaction, the compiled
mutations through 007's and 008's functions in autocommit. Now every path calls the same
SQL writer, and app/orders/service.py is the one implementation of both use cases:

- ``order_api_private.place_order(new_order jsonb)``: 008's submit_order without the role
  switch: the static INSERT (planned once per connection), the refusal of a key outside
  the submit fields (42501) and of anything but an object (22023), the partial document
  written as 007 wrote it, the re-read of an idempotent repeat. One difference: an order
  the order rules refuse (SQLSTATE OA422, from any trigger: 003's rules and limits, 006's
  terms, 009's horizons, 010's open order cap) is rolled back alone, in the function's
  subtransaction, and returned (``refused``, ``refused_field``) rather than raised, so the
  request transaction that called it stays usable: the API reads the limits in force in
  it to phrase the refusal, and a later field of the same document runs as before.
- ``order_api_private.cancel_own_order(order_id, reason, cancellable)``: 007's cancel_order
  without the role switch.

Both are SECURITY INVOKER and write as the current role, with its privileges, row level
security, the order rules and the audit chain: nothing a trader could not do with plain
SQL. EXECUTE is for ``authenticated`` only (revoked from PUBLIC and each API role by name,
for Supabase's default privileges), which therefore gets USAGE on ``order_api_private``;
``become`` and the outer functions stay the login role's only.

007's ``submit_order`` and ``cancel_order`` (same signatures, oids, owners and ACLs:
CREATE OR REPLACE) become ``become(role, claims)`` and the inner call; submit_order raises
the inner function's refusal as OA422 again with its words and field, as before. Through
them only ``authenticated`` can write now (service_role could submit through 007's, as
with plain SQL; the API never let it).

The downgrade gives back exactly 010's state: 008's submit_order (008/upgrade.sql) and
007's cancel_order, the inner functions dropped, the schema's USAGE revoked.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "011"
down_revision: str | None = "010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("011/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("008/upgrade.sql", "011/downgrade.sql")
