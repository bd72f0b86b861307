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

The downgrade returns to 001: its function definitions are taken from the 001
module itself, not copied here. Revocations from the API roles are kept (on
plain PostgreSQL they are what 001 had anyway; on Supabase re-granting would
re-open the hole). The role ``order_audit_writer`` is cluster-wide and stays,
holding nothing in this database, like 001's roles.
"""

import logging
from collections.abc import Sequence
from types import ModuleType

import sqlalchemy as sa

from alembic import context, op

log = logging.getLogger("alembic.runtime.migration")

revision: str = "002"
down_revision: str | None = "001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT_WRITER = "order_audit_writer"
# Everyone the API can be, and PUBLIC: none of them calls a function of ours directly.
API_ROLES = "PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator"
FUNCTIONS = (
    "public.orders_enforce_lifecycle()",
    "public.orders_write_audit()",
    "public.fills_apply_to_order()",
    "public.execution_logs_refuse_change()",
    "public.execution_logs_audit_only()",
    "public.orders_announce_change()",
)

# A role that may insert audit rows and nothing else; only orders_write_audit runs as it.
# It exists so that the definer function does not run as the migration owner (on a
# default install a superuser, on Supabase the owner of every table).
AUDIT_WRITER_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{AUDIT_WRITER}') THEN
        CREATE ROLE {AUDIT_WRITER} NOLOGIN NOINHERIT;
    ELSIF EXISTS (
        SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{AUDIT_WRITER}'
           AND (rolcanlogin OR rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb
                OR rolreplication OR rolinherit)
    ) THEN
        RAISE EXCEPTION 'role {AUDIT_WRITER} exists with more than NOLOGIN NOINHERIT rights'
            USING HINT = 'it owns the audit trigger function: '
                         'ALTER ROLE {AUDIT_WRITER} NOLOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS '
                         'NOCREATEROLE NOCREATEDB NOREPLICATION, then migrate again';
    END IF;
END
$$;
-- The migrating role must be able to hand the function to it and replace it later.
GRANT {AUDIT_WRITER} TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO {AUDIT_WRITER};
GRANT INSERT (order_id, trader_id, action, status, reason, retry_attempt, error_code)
    ON public.execution_logs TO {AUDIT_WRITER};
"""

# search_path: pg_catalog first (built-ins cannot be shadowed), pg_temp explicitly last
# (a caller's temporary objects are never found), nothing else: every name of ours is
# qualified. SQLSTATEs as in 001: OA409 an illegal change of an order, OA403 a write to
# the audit trail.
FUNCTION_BODIES = """
CREATE OR REPLACE FUNCTION public.orders_enforce_lifecycle() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fill_total integer;
    fill_average numeric;
    late_fill boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- Every order is born PENDING and unfilled, whoever inserts it.
        NEW.status := 'PENDING';
        NEW.filled_quantity := 0;
        NEW.average_fill_price := NULL;
        NEW.error_code := NULL;
        NEW.retry_attempt := 0;
        NEW.approved_at := NULL;
        NEW.routed_at := NULL;
        NEW.recovered_at := NULL;
        NEW.created_at := now();
        NEW.updated_at := NEW.created_at;
        RETURN NEW;
    END IF;

    -- A cancel reaches the venue after the trader asked for it: executions the venue made
    -- meanwhile are facts and must be recorded, so a routed CANCELLED order still takes
    -- fills (and nothing else); they are the only change a terminal order accepts.
    late_fill := OLD.status = 'CANCELLED' AND OLD.routed_at IS NOT NULL
        AND NEW.status = OLD.status
        AND (NEW.status_reason, NEW.error_code, NEW.retry_attempt, NEW.approved_at,
             NEW.routed_at, NEW.recovered_at)
            IS NOT DISTINCT FROM
            (OLD.status_reason, OLD.error_code, OLD.retry_attempt, OLD.approved_at,
             OLD.routed_at, OLD.recovered_at);
    IF OLD.status IN ('FILLED', 'REJECTED', 'CANCELLED') AND NOT late_fill THEN
        RAISE EXCEPTION 'order % is %: it cannot change any more', OLD.id, OLD.status
            USING ERRCODE = 'OA409';
    END IF;
    IF (NEW.id, NEW.trader_id, NEW.client_order_id, NEW.symbol, NEW.side, NEW.quantity,
        NEW.order_type, NEW.price, NEW.stop_loss, NEW.take_profit, NEW.created_at, NEW.expires_at)
       IS DISTINCT FROM
       (OLD.id, OLD.trader_id, OLD.client_order_id, OLD.symbol, OLD.side, OLD.quantity,
        OLD.order_type, OLD.price, OLD.stop_loss, OLD.take_profit, OLD.created_at, OLD.expires_at)
    THEN
        RAISE EXCEPTION 'order %: what was ordered cannot be changed, only its execution', OLD.id
            USING ERRCODE = 'OA409';
    END IF;

    -- Fill-derived state always follows the fills, whatever the writer set.
    SELECT coalesce(sum(f.quantity_filled), 0)::integer,
           round(sum(f.quantity_filled * f.price_at_fill) / nullif(sum(f.quantity_filled), 0), 6)
      INTO fill_total, fill_average
      FROM public.fills f WHERE f.order_id = OLD.id;
    NEW.filled_quantity := fill_total;
    NEW.average_fill_price := fill_average;

    IF NEW.filled_quantity <> OLD.filled_quantity THEN
        IF OLD.approved_at IS NULL THEN
            RAISE EXCEPTION 'order % was not approved: it cannot be filled', OLD.id
                USING ERRCODE = 'OA409';
        END IF;
        IF NEW.filled_quantity > NEW.quantity THEN
            RAISE EXCEPTION 'fills of order % would exceed its quantity (% > %)',
                OLD.id, NEW.filled_quantity, NEW.quantity USING ERRCODE = 'OA409';
        END IF;
        NEW.status := CASE WHEN NEW.filled_quantity = NEW.quantity THEN 'FILLED'
                           WHEN late_fill THEN 'CANCELLED'
                           ELSE 'PARTIAL' END::public.order_status_enum;
    ELSIF late_fill THEN
        -- Nothing new from the fills: a terminal order stays exactly as it is.
        RAISE EXCEPTION 'order % is %: it cannot change any more', OLD.id, OLD.status
            USING ERRCODE = 'OA409';
    ELSIF NEW.status <> OLD.status AND NOT (
            (OLD.status = 'PENDING' AND NEW.status IN ('CANCELLED', 'REJECTED'))
         OR (OLD.status = 'PARTIAL' AND NEW.status = 'CANCELLED')) THEN
        RAISE EXCEPTION 'order %: % -> % is not a legal transition', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'OA409';
    END IF;

    IF NEW.approved_at IS DISTINCT FROM OLD.approved_at THEN
        IF OLD.approved_at IS NOT NULL OR NEW.approved_at IS NULL OR OLD.status <> 'PENDING' THEN
            RAISE EXCEPTION 'order %: approval happens once, while PENDING', OLD.id
                USING ERRCODE = 'OA409';
        END IF;
    END IF;
    IF NEW.routed_at IS DISTINCT FROM OLD.routed_at THEN
        IF OLD.routed_at IS NOT NULL OR NEW.routed_at IS NULL OR NEW.approved_at IS NULL
           OR OLD.status <> 'PENDING' THEN
            RAISE EXCEPTION 'order %: it is routed once, after approval', OLD.id
                USING ERRCODE = 'OA409';
        END IF;
    END IF;
    IF NEW.retry_attempt < OLD.retry_attempt
       OR (NEW.retry_attempt > OLD.retry_attempt AND NEW.approved_at IS NULL) THEN
        RAISE EXCEPTION 'order %: retry attempts only count up, after approval', OLD.id
            USING ERRCODE = 'OA409';
    END IF;
    IF NEW.recovered_at IS DISTINCT FROM OLD.recovered_at
       AND (NEW.recovered_at IS NULL OR NEW.recovered_at < OLD.recovered_at
            OR NEW.approved_at IS NULL) THEN
        RAISE EXCEPTION 'order %: recovery applies to approved orders and only moves forward',
            OLD.id USING ERRCODE = 'OA409';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- SECURITY DEFINER: only order_audit_writer may insert audit rows, and it only runs this.
CREATE OR REPLACE FUNCTION public.orders_write_audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.execution_logs (order_id, trader_id, action, status)
        VALUES (NEW.id, NEW.trader_id, 'SUBMITTED', NEW.status);
        RETURN NULL;
    END IF;
    IF NEW.approved_at IS DISTINCT FROM OLD.approved_at THEN
        INSERT INTO public.execution_logs (order_id, trader_id, action, status)
        VALUES (NEW.id, NEW.trader_id, 'APPROVED', NEW.status);
    END IF;
    IF NEW.retry_attempt > OLD.retry_attempt AND NEW.status <> 'REJECTED' THEN
        -- A routing attempt that failed transiently and will be retried.
        INSERT INTO public.execution_logs
            (order_id, trader_id, action, status, reason, retry_attempt, error_code)
        VALUES (NEW.id, NEW.trader_id, 'EXECUTED', NEW.status,
                coalesce(NEW.status_reason, 'transient venue error; will retry'),
                NEW.retry_attempt, NEW.error_code);
    END IF;
    IF NEW.routed_at IS DISTINCT FROM OLD.routed_at THEN
        INSERT INTO public.execution_logs (order_id, trader_id, action, status, reason, retry_attempt)
        VALUES (NEW.id, NEW.trader_id, 'EXECUTED', NEW.status, 'sent to venue', NEW.retry_attempt);
    END IF;
    IF NEW.recovered_at IS DISTINCT FROM OLD.recovered_at THEN
        INSERT INTO public.execution_logs (order_id, trader_id, action, status, reason)
        VALUES (NEW.id, NEW.trader_id, 'RECOVERED', NEW.status,
                coalesce(NEW.status_reason, 'resumed after an interrupted worker'));
    END IF;
    IF NEW.filled_quantity <> OLD.filled_quantity THEN
        INSERT INTO public.execution_logs (order_id, trader_id, action, status)
        VALUES (NEW.id, NEW.trader_id, 'FILLED', NEW.status);
    END IF;
    IF NEW.status <> OLD.status AND NEW.status IN ('CANCELLED', 'REJECTED') THEN
        INSERT INTO public.execution_logs
            (order_id, trader_id, action, status, reason, retry_attempt, error_code)
        VALUES (NEW.id, NEW.trader_id, NEW.status::text::public.action_enum, NEW.status,
                NEW.status_reason,
                CASE WHEN NEW.status = 'REJECTED' THEN NEW.retry_attempt END,
                CASE WHEN NEW.status = 'REJECTED' THEN NEW.error_code END);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.fills_apply_to_order() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner_id uuid;
BEGIN
    IF TG_WHEN = 'BEFORE' THEN
        -- trader_id is copied from the order so that RLS on fills needs no join.
        SELECT o.trader_id INTO owner_id FROM public.orders o WHERE o.id = NEW.order_id;
        IF owner_id IS NULL THEN
            RAISE EXCEPTION 'order % does not exist', NEW.order_id USING ERRCODE = '23503';
        END IF;
        NEW.trader_id := owner_id;
        NEW.created_at := now();
        RETURN NEW;
    END IF;
    -- Touching the order makes orders_enforce_lifecycle re-derive its fill state
    -- under the order's row lock, so racing fills are applied one after the other.
    UPDATE public.orders SET status = status WHERE id = NEW.order_id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.execution_logs_refuse_change() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (the audit trail and the fills it rests on): % refused',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'OA403';
END
$$;

-- Superusers and BYPASSRLS roles skip policies: this trigger makes "only from
-- orders_write_audit" hold for them too. Depth 1 is a statement's own trigger;
-- orders_write_audit's insert runs at depth 2.
CREATE OR REPLACE FUNCTION public.execution_logs_audit_only() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'execution_logs rows are written by the database only' USING ERRCODE = 'OA403';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION public.orders_announce_change() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A re-derivation that leaves the row as it was is no news.
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify(
        'order_changes',
        json_build_object('id', NEW.id, 'trader_id', NEW.trader_id, 'op', TG_OP)::text
    );
    RETURN NULL;
END
$$;
"""

# ALTER FUNCTION ... OWNER needs the new owner to hold CREATE on the schema at that
# moment (so that it could have created the function itself); it keeps it no longer.
AUDIT_WRITER_OWNS_AUDIT = f"""
GRANT CREATE ON SCHEMA public TO {AUDIT_WRITER};
DO $$
BEGIN
    -- A GRANT without grant option only warns; say what is missing instead.
    IF NOT pg_catalog.has_schema_privilege('{AUDIT_WRITER}', 'public', 'CREATE') THEN
        RAISE EXCEPTION 'cannot hand orders_write_audit to {AUDIT_WRITER}: the migrating role '
                        'may not grant CREATE on schema public'
            USING HINT = 'migrate as the owner of schema public, or have it run: GRANT CREATE '
                         'ON SCHEMA public TO ' || current_user || ' WITH GRANT OPTION';
    END IF;
END
$$;
ALTER FUNCTION public.orders_write_audit() OWNER TO {AUDIT_WRITER};
REVOKE CREATE ON SCHEMA public FROM {AUDIT_WRITER};
"""

EXECUTE_PRIVILEGES = f"""
REVOKE ALL ON FUNCTION {", ".join(FUNCTIONS)} FROM {API_ROLES};
"""

# Nothing in this product creates temporary objects, so nobody needs TEMPORARY. It is
# granted to PUBLIC by default and can only be revoked from PUBLIC, which only the
# database's owner (or a superuser) may do; the owner keeps it through its own grant.
TEMPORARY_REVOKE = """
DO $$
DECLARE
    db_owner regrole := (SELECT datdba::regrole FROM pg_catalog.pg_database
                          WHERE datname = pg_catalog.current_database());
BEGIN
    IF pg_catalog.pg_has_role(current_user, db_owner, 'MEMBER') THEN
        EXECUTE pg_catalog.format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC',
                                  pg_catalog.current_database());
    ELSE
        RAISE NOTICE 'TEMPORARY on database % stays granted to PUBLIC: only its owner % may '
                     'revoke it. The functions'' search_path (pg_temp last) and schema-qualified '
                     'names are the defence against temporary objects on their own.',
                     pg_catalog.current_database(), db_owner;
    END IF;
END
$$;
"""

TEMPORARY_REGRANT = """
DO $$
BEGIN
    IF pg_catalog.pg_has_role(current_user, (SELECT datdba FROM pg_catalog.pg_database
                                              WHERE datname = pg_catalog.current_database()),
                              'MEMBER') THEN
        EXECUTE pg_catalog.format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC',
                                  pg_catalog.current_database());
    END IF;
END
$$;
"""

# Supabase's default privileges grant ALL on new public tables to anon, authenticated and
# service_role, alembic_version included. The migrating role (the table's owner) keeps
# every row; authenticator reads the revision for /readyz.
ALEMBIC_VERSION = f"""
REVOKE ALL ON public.alembic_version FROM {API_ROLES};
GRANT SELECT ON public.alembic_version TO authenticator;
ALTER TABLE public.alembic_version ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.alembic_version FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE pg_catalog.format(
        'CREATE POLICY alembic_version_migrations ON public.alembic_version FOR ALL TO %I '
        'USING (true) WITH CHECK (true)',
        (SELECT relowner::regrole FROM pg_catalog.pg_class
          WHERE oid = 'public.alembic_version'::regclass));
END
$$;
CREATE POLICY alembic_version_readiness ON public.alembic_version FOR SELECT TO authenticator
    USING (true);
"""

# 001 took these from execution_logs; the fills are the audit trail's facts as well.
# (A superuser skips privileges and the owner may grant them back: the triggers stay.)
OWNER_APPEND_ONLY = """
REVOKE UPDATE, DELETE, TRUNCATE ON public.fills FROM CURRENT_USER;
"""

DOWNGRADE_ALEMBIC_VERSION = """
DROP POLICY alembic_version_readiness ON public.alembic_version;
DROP POLICY alembic_version_migrations ON public.alembic_version;
ALTER TABLE public.alembic_version NO FORCE ROW LEVEL SECURITY;
ALTER TABLE public.alembic_version DISABLE ROW LEVEL SECURITY;
"""

DOWNGRADE_OWNERSHIP = f"""
DO $$
BEGIN
    EXECUTE pg_catalog.format(
        'ALTER FUNCTION public.orders_write_audit() OWNER TO %I',
        (SELECT relowner::regrole FROM pg_catalog.pg_class WHERE oid = 'public.orders'::regclass));
END
$$;
REVOKE ALL ON public.execution_logs FROM {AUDIT_WRITER};
REVOKE ALL ON SCHEMA public FROM {AUDIT_WRITER};
GRANT UPDATE, DELETE, TRUNCATE ON public.fills TO CURRENT_USER;
"""


def _revision_001() -> ModuleType:
    script = context.script.get_revision("001")
    if script is None or script.module is None:
        raise RuntimeError("migration 002 needs revision 001's module")
    return script.module


def _function_definitions_of_001() -> str:
    """001's own CREATE FUNCTION statements, as CREATE OR REPLACE (one definition per fact)."""
    m001 = _revision_001()
    statements = m001._statements(m001.LIFECYCLE + m001.ANNOUNCE)
    return ";\n".join(
        s.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
        for s in statements
        if s.startswith("CREATE FUNCTION")
    )


def _run(block: str) -> None:
    for statement in _revision_001()._statements(block):
        op.execute(statement)


def upgrade() -> None:
    for block in (
        AUDIT_WRITER_ROLE,
        FUNCTION_BODIES,
        AUDIT_WRITER_OWNS_AUDIT,
        EXECUTE_PRIVILEGES,
        TEMPORARY_REVOKE,
        ALEMBIC_VERSION,
        OWNER_APPEND_ONLY,
    ):
        _run(block)
    if not context.is_offline_mode():
        # The NOTICE above reaches the server log only; say it where the operator looks.
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
    for block in (
        DOWNGRADE_ALEMBIC_VERSION,
        TEMPORARY_REGRANT,
        DOWNGRADE_OWNERSHIP,
        _function_definitions_of_001(),
    ):
        _run(block)
