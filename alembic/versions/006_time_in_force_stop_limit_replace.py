"""Time in force, stop-limit, expiry and replace

Revision ID: 006
Revises: 005
Create Date: 2026-11-29

The database side of issue 13 items 1-4, enforced for every writer like 001 and 003:

- Enum values: ``order_type_enum`` STOP_LIMIT, ``order_status_enum`` EXPIRED and
  REPLACED, ``action_enum`` EXPIRED and REPLACED; a new type ``time_in_force_enum``
  (DAY, GTC, IOC, FOK).
- ``orders`` columns: ``stop_price`` (STOP_LIMIT only, always), ``time_in_force``
  (NOT NULL DEFAULT 'GTC': writers that do not know it keep working),
  ``replaces_id`` and ``replaced_by_id`` (self-references, ON DELETE RESTRICT).
  Check constraints refuse the impossible combinations whoever writes.
- ``trading_session``: one row, the session close (``close_time`` in ``time_zone``,
  default 16:00 America/New_York), like 003's ``order_limits``: the database must
  refuse a DAY order whose expiresAt is after the close for every writer, so it must
  know the close, and a second copy elsewhere (an environment variable) would drift.
  ``public.session_close(moment)`` is the one computation of "the close of the trading
  day a moment belongs to" (Monday to Friday; after the close or on a weekend it rolls
  over to the next trading day's close); the API and the engine call it.
- ``orders_check_terms`` (BEFORE INSERT; after 003's ``orders_check_rules``, which
  normalises the symbol, and before ``orders_lifecycle``, by name): refusals carry
  SQLSTATE OA422 naming the API's field (stopPrice, timeInForce, expiresAt, quantity,
  symbol, side, orderType), as 003's do. A DAY order gets ``expires_at`` = its
  session's close when none is given, so that expiry is one rule for every order:
  a working order whose ``expires_at`` has passed becomes EXPIRED.
- ``orders_enforce_lifecycle`` (002's, extended): EXPIRED and REPLACED are terminal
  like FILLED, REJECTED and CANCELLED; PENDING/PARTIAL -> EXPIRED once ``expires_at``
  has passed; PENDING/PARTIAL -> REPLACED only together with ``replaced_by_id`` (see
  the replace protocol); a routed EXPIRED order still takes late fills, as a routed
  CANCELLED one does; ``stop_price``, ``time_in_force`` and ``replaces_id`` are part of
  what was ordered and never change; a replacement is approved only once confirmed.
- ``orders_write_audit`` (002's, extended): EXPIRED and REPLACED audit rows; the
  SUBMITTED row of a replacement and the REPLACED row of the order it replaces name
  each other. No column is added to execution_logs, so 005's canonical form (v1) and
  hash chain are unchanged.

Replace, step by step (the contract's replaceOrder):
1. The trader (authenticated, or service_role on its behalf) inserts the new order N
   with ``replaces_id`` = O. ``orders_check_terms`` locks O and refuses: O missing or
   another trader's (SQLSTATE 23503, as if missing), O not PENDING/PARTIAL (OA409),
   O itself an unconfirmed replacement (OA409), O already having a replacement
   waiting (OA409; a partial unique index backs it), a different symbol, side or
   order type (OA422), and a quantity not above what is already filled (OA422
   quantity). 003's rules (limits included) judge it first, with the total.
   Quantity semantics: the quantity written is the *total* wanted across O, the orders
   O replaced and N (FIX's OrderQty on a cancel/replace); what is stored as
   N.quantity is what remains to trade: total - fills of O and its predecessors.
   N's fills are N's own. So "copying" O's quantity (for a first replacement: total =
   O.quantity) leaves N with O's unfilled remainder, never more. A total at or below
   what is filled is BAD_USER_INPUT.
2. N stays PENDING, unapproved: it cannot be approved (so neither routed nor filled)
   before it is confirmed. The trader may cancel it (withdrawing the request); the
   engine may reject it. Either frees O for another replacement.
3. The engine (service_role), once the venue confirms, runs
   ``UPDATE orders SET status = 'REPLACED', replaced_by_id = N WHERE id = O``. The
   lifecycle trigger refuses it (OA409) unless O is PENDING/PARTIAL, N replaces O,
   belongs to the same trader, is still PENDING, and O has had no fill since N was
   submitted (an audited FILLED row of O after N's SUBMITTED row by ``seq``: the lock
   of step 1 orders them). O's fills stand; O is terminal and takes no more fills.
4. If O filled first (wholly, or partly after N was submitted, which would make the
   total exceed what the trader asked for) or was cancelled or expired meanwhile, the
   engine rejects N (PENDING -> REJECTED with its error code); O keeps its fills.
5. Confirmed, N is an ordinary working order: approved, routed and filled as any.

Enum values and the single transaction: ``ALTER TYPE ... ADD VALUE`` may run in a
transaction (PG12+), but a value added there cannot be *used* before commit. Nothing
in this revision uses one: the check constraints compare ``order_type::text`` and
``status::text`` with the new labels, and function bodies are only planned when they
run, after commit. So the revision needs no COMMIT in the middle (no autocommit block,
no second revision): it applies atomically, ``upgrade head --sql`` prints a script that
runs in one transaction, and a failure leaves no half-applied enum behind.

The downgrade returns to exactly 005. It refuses (and changes nothing) while any row
uses what 005 cannot represent: STOP_LIMIT, EXPIRED, REPLACED (orders or audit rows),
a replacement link, or IOC/FOK (a DAY order is kept: its expires_at carries its end).
Enum values cannot be dropped: the three types are recreated with 005's labels, which
means recreating the two policies and two check constraints that compare with them
(001's definitions, repeated below). The two trigger functions go back to 002's
definitions, from that revision's own SQL file (as 004's downgrade does).
"""

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

sql_scripts = load_python_file(Path(__file__).resolve().parent.parent, "sql_scripts.py")

revision: str = "006"
down_revision: str | None = "005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sql_scripts.run(
        "006/types_and_columns.sql",
        "006/session.sql",
        "006/check_terms.sql",
        "006/lifecycle.sql",
        "006/grants.sql",
    )


def downgrade() -> None:
    # 002's functions file holds the lifecycle and audit functions as 002-005 had them
    # (the others in it are unchanged since, so running it whole restores exactly 005).
    sql_scripts.run("006/downgrade.sql", "002/functions.sql", "006/downgrade_enums.sql")
