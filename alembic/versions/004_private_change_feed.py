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

from alembic import op

revision: str = "004"
down_revision: str | None = "003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
DROP TRIGGER orders_announce_change ON public.orders;
DROP FUNCTION public.orders_announce_change();

-- GENERATED ALWAYS: only the sequence numbers rows; an insert cannot choose its position.
ALTER TABLE public.execution_logs ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX idx_execution_logs_seq ON public.execution_logs (seq);
-- Supabase's default privileges grant ALL on new sequences to its API roles: setval on this
-- one would make every later audit insert collide on idx_execution_logs_seq.
REVOKE ALL ON SEQUENCE public.execution_logs_seq_seq
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;

-- The feed reader is the API's login role; it sees which order changed, never what.
GRANT SELECT (seq, order_id, trader_id) ON public.execution_logs TO authenticator;
CREATE POLICY execution_logs_change_feed ON public.execution_logs FOR SELECT TO authenticator
    USING (true);
"""

DOWNGRADE = """
DROP POLICY execution_logs_change_feed ON public.execution_logs;
REVOKE SELECT (seq, order_id, trader_id) ON public.execution_logs FROM authenticator;
DROP INDEX public.idx_execution_logs_seq;
ALTER TABLE public.execution_logs DROP COLUMN seq;
"""


def upgrade() -> None:
    for statement in UPGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)
    # Back to the announcements as 002 left them: 002's function, 001's trigger, 002's
    # privileges (one definition of each, in the revision that made it).
    script = op.get_context().script
    assert script is not None
    first = script.get_revision("001").module
    second = script.get_revision("002").module
    function = next(
        s
        for s in first._statements(second.FUNCTION_BODIES)
        if "FUNCTION public.orders_announce_change()" in s
    )
    trigger = next(s for s in first._statements(first.ANNOUNCE) if s.startswith("CREATE TRIGGER"))
    op.execute(function)
    op.execute(trigger)
    op.execute(f"REVOKE ALL ON FUNCTION public.orders_announce_change() FROM {second.API_ROLES}")
