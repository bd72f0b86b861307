"""Open order cap

Revision ID: 010
Revises: 009
Create Date: 2026-12-01

Issue 18: nothing limited how many orders one trader kept working, so one trader's
resting orders could fill the engine (and its leases, PostgreSQL's lock table). Like the
other order limits (003), the cap is one value in ``order_limits``, enforced by the
database for every writer:

- ``order_limits.max_open_orders`` (integer, NULL for no cap, else positive): how many
  open (PENDING or PARTIAL) orders each trader may have.
- ``orders_check_working_cap`` (BEFORE INSERT; after 003's ``orders_check_rules`` and 006's
  ``orders_check_terms`` by name, before ``orders_lifecycle``): with a cap set, a new order
  of a trader who already has that many open is refused with SQLSTATE OA422, the order
  rules' code, which the API answers as BAD_USER_INPUT on both paths (the resolvers and the
  compiled mutation) with the message naming ``order_limits.max_open_orders``. It is the
  caller's request that breaks a rule of the order book, the kind of refusal OA422 already
  carries; the fix is the caller's (cancel an order, or wait for one to end). It names no
  input field: the error's field is ``input``.
- A replacement (``replaces_id`` set) is never refused for the cap: it takes the place of
  an open order, which is REPLACED once the engine confirms it. While it waits both are
  open and count against the trader's next new order.
- Two racing inserts of one trader cannot both take the last place: the trigger takes a
  transaction-level advisory lock on the trader (``hashtext`` of the id, in a namespace of
  its own) before counting, so they queue until commit; other traders never wait for it.
  The count needs a snapshot taken after the lock: READ COMMITTED (the API's, PostgREST's)
  has one per statement, SERIALIZABLE fails one of two racing transactions itself, and an
  insert under REPEATABLE READ is refused (SQLSTATE 0A000) while a cap is set, rather than
  enforced from a stale snapshot.
- The count reads at most ``max_open_orders`` rows through ``idx_orders_trader_status``;
  without a cap the trigger reads only ``order_limits``.

The downgrade gives back exactly what 009 had: it drops the trigger, its function and the
column.
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "010"
down_revision: str | None = "009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run("010/upgrade.sql")


def downgrade() -> None:
    sql_scripts.run("010/downgrade.sql")
