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

Everything is plain SQL so that ``alembic upgrade head --sql`` prints exactly
what runs online. Roles are cluster-wide: they are created when missing and
left in place by the downgrade (other databases of the cluster may use them).
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import context, op
from app.db.scram import scram_sha_256_verifier
from app.settings import Settings

revision: str = "001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
# Marks the auth objects this migration created, so the downgrade removes those
# and leaves Supabase's own auth schema and functions alone.
CREATED_BY = "created by order-api migration 001"
OURS_AUTHENTICATOR = (
    f"shobj_description('authenticator'::regrole, 'pg_authid') IS NOT DISTINCT FROM '{CREATED_BY}'"
)
AUTHENTICATOR_NOT_OURS = (
    "role authenticator exists and was not created by this migration: left unchanged"
    " (no memberships, no password); see README, Deploy on Supabase"
)

# Roles are created only when missing and marked (COMMENT ON ROLE) as ours; a role
# someone else created (on Supabase: anon, authenticated, service_role and the reserved
# authenticator) is never altered, commented on or granted to. Only a login role this
# migration created receives the application roles and AUTHENTICATOR_PASSWORD.
ROLES = f"""
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY{list(APP_ROLES)!r} LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
            EXECUTE format('COMMENT ON ROLE %I IS %L', r, '{CREATED_BY}');
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOSUPERUSER;
        COMMENT ON ROLE authenticator IS '{CREATED_BY}';
    END IF;
    IF {OURS_AUTHENTICATOR} THEN
        GRANT anon, authenticated, service_role, compliance_auditor TO authenticator;
    ELSE
        RAISE NOTICE '{AUTHENTICATOR_NOT_OURS}';
    END IF;
END
$$;
"""

# Supabase's definitions, for plain PostgreSQL. Where an ``auth`` schema already exists
# (Supabase: owned by supabase_auth_admin, and our owner holds no grant option on it) it
# is left exactly as it is: nothing created in it, nothing granted on it. The policies
# of authenticated call auth.uid(); every other read of the claims (the API's viewer)
# reads request.jwt.claims directly, so compliance_auditor needs no access to auth.
AUTH = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        CREATE SCHEMA auth;
        COMMENT ON SCHEMA auth IS '{CREATED_BY}';
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $f$;
        COMMENT ON FUNCTION auth.uid() IS '{CREATED_BY}';
        CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $f$;
        COMMENT ON FUNCTION auth.role() IS '{CREATED_BY}';
        CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $f$;
        COMMENT ON FUNCTION auth.jwt() IS '{CREATED_BY}';
        -- What Supabase grants on its own auth schema.
        GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    END IF;
END
$$;
"""

TABLES = """
CREATE TYPE order_type_enum AS ENUM ('MARKET', 'LIMIT', 'STOP');
CREATE TYPE order_status_enum AS ENUM ('PENDING', 'FILLED', 'PARTIAL', 'REJECTED', 'CANCELLED');
CREATE TYPE action_enum AS ENUM (
    'SUBMITTED', 'APPROVED', 'EXECUTED', 'FILLED', 'REJECTED', 'CANCELLED', 'RECOVERED'
);

CREATE TABLE orders (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    trader_id uuid NOT NULL,
    client_order_id varchar(64),
    symbol varchar(10) NOT NULL,
    side varchar(4) NOT NULL,
    quantity integer NOT NULL,
    order_type order_type_enum NOT NULL,
    price numeric(10, 2),
    stop_loss numeric(10, 2),
    take_profit numeric(10, 2),
    status order_status_enum NOT NULL DEFAULT 'PENDING',
    filled_quantity integer NOT NULL DEFAULT 0,
    average_fill_price numeric(16, 6),
    status_reason text,
    error_code varchar(50),
    retry_attempt integer NOT NULL DEFAULT 0,
    approved_at timestamptz,
    routed_at timestamptz,
    recovered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    CONSTRAINT uq_orders_trader_client_order_id UNIQUE (trader_id, client_order_id),
    CONSTRAINT ck_orders_side CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT ck_orders_symbol CHECK (symbol ~ '^[A-Z0-9.-]{1,10}$'),
    CONSTRAINT ck_orders_client_order_id CHECK (
        client_order_id ~ '^[\\x20-\\x7E]{1,64}$'
    ),
    CONSTRAINT ck_orders_quantity_positive CHECK (quantity > 0),
    CONSTRAINT ck_orders_price_positive CHECK (price > 0),
    CONSTRAINT ck_orders_price_by_type CHECK ((order_type = 'MARKET') = (price IS NULL)),
    CONSTRAINT ck_orders_stop_loss_positive CHECK (stop_loss > 0),
    CONSTRAINT ck_orders_take_profit_positive CHECK (take_profit > 0),
    CONSTRAINT ck_orders_filled_quantity_range CHECK (
        filled_quantity >= 0 AND filled_quantity <= quantity
    ),
    CONSTRAINT ck_orders_average_fill_price_positive CHECK (average_fill_price > 0),
    CONSTRAINT ck_orders_average_fill_price_with_fills CHECK (
        (filled_quantity = 0) = (average_fill_price IS NULL)
    ),
    CONSTRAINT ck_orders_status_matches_fills CHECK (
        (status = 'FILLED') = (filled_quantity = quantity)
        AND (status <> 'PENDING' OR filled_quantity = 0)
        AND (status <> 'PARTIAL' OR filled_quantity > 0)
    ),
    CONSTRAINT ck_orders_retry_attempt CHECK (retry_attempt >= 0),
    CONSTRAINT ck_orders_expires_after_creation CHECK (expires_at > created_at)
);

CREATE TABLE fills (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id uuid NOT NULL REFERENCES orders (id) ON DELETE RESTRICT,
    trader_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    quantity_filled integer NOT NULL,
    price_at_fill numeric(10, 2) NOT NULL,
    venue varchar(50) NOT NULL,
    commission numeric(10, 2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_fills_quantity_filled_positive CHECK (quantity_filled > 0),
    CONSTRAINT ck_fills_price_at_fill_positive CHECK (price_at_fill > 0),
    CONSTRAINT ck_fills_commission_not_negative CHECK (commission >= 0),
    CONSTRAINT ck_fills_venue_not_blank CHECK (btrim(venue) <> '')
);

CREATE TABLE execution_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- RESTRICT: deleting an order must never take its audit trail with it.
    order_id uuid NOT NULL REFERENCES orders (id) ON DELETE RESTRICT,
    trader_id uuid NOT NULL,
    action action_enum NOT NULL,
    status order_status_enum,
    -- clock_timestamp: several rows written in one transaction keep their order.
    "timestamp" timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason text,
    retry_attempt integer,
    error_code varchar(50),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_execution_logs_retry_attempt CHECK (retry_attempt >= 0)
);

CREATE INDEX idx_orders_trader_created ON orders (trader_id, created_at DESC);
CREATE INDEX idx_orders_status ON orders (status);
CREATE INDEX idx_orders_trader_status ON orders (trader_id, status);
CREATE INDEX idx_fills_order ON fills (order_id);
CREATE INDEX idx_fills_timestamp ON fills ("timestamp" DESC);
CREATE INDEX idx_execution_logs_trader_timestamp ON execution_logs (trader_id, "timestamp" DESC);
CREATE INDEX idx_execution_logs_order ON execution_logs (order_id);
CREATE INDEX idx_execution_logs_action ON execution_logs (action);
"""

# SQLSTATEs raised by the triggers, so the API can map them without parsing messages:
#   OA409  an illegal change of an order (lifecycle), OA403  a write to the audit trail.
LIFECYCLE = """
CREATE FUNCTION orders_enforce_lifecycle() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
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
      FROM fills f WHERE f.order_id = OLD.id;
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
                           ELSE 'PARTIAL' END::order_status_enum;
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

-- SECURITY DEFINER: only the owner may insert audit rows, and only from here
-- (see execution_logs_trader_isolation); search_path pinned against hijacking.
CREATE FUNCTION orders_write_audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO execution_logs (order_id, trader_id, action, status)
        VALUES (NEW.id, NEW.trader_id, 'SUBMITTED', NEW.status);
        RETURN NULL;
    END IF;
    IF NEW.approved_at IS DISTINCT FROM OLD.approved_at THEN
        INSERT INTO execution_logs (order_id, trader_id, action, status)
        VALUES (NEW.id, NEW.trader_id, 'APPROVED', NEW.status);
    END IF;
    IF NEW.retry_attempt > OLD.retry_attempt AND NEW.status <> 'REJECTED' THEN
        -- A routing attempt that failed transiently and will be retried.
        INSERT INTO execution_logs (order_id, trader_id, action, status, reason, retry_attempt, error_code)
        VALUES (NEW.id, NEW.trader_id, 'EXECUTED', NEW.status,
                coalesce(NEW.status_reason, 'transient venue error; will retry'),
                NEW.retry_attempt, NEW.error_code);
    END IF;
    IF NEW.routed_at IS DISTINCT FROM OLD.routed_at THEN
        INSERT INTO execution_logs (order_id, trader_id, action, status, reason, retry_attempt)
        VALUES (NEW.id, NEW.trader_id, 'EXECUTED', NEW.status, 'sent to venue', NEW.retry_attempt);
    END IF;
    IF NEW.recovered_at IS DISTINCT FROM OLD.recovered_at THEN
        INSERT INTO execution_logs (order_id, trader_id, action, status, reason)
        VALUES (NEW.id, NEW.trader_id, 'RECOVERED', NEW.status,
                coalesce(NEW.status_reason, 'resumed after an interrupted worker'));
    END IF;
    IF NEW.filled_quantity <> OLD.filled_quantity THEN
        INSERT INTO execution_logs (order_id, trader_id, action, status)
        VALUES (NEW.id, NEW.trader_id, 'FILLED', NEW.status);
    END IF;
    IF NEW.status <> OLD.status AND NEW.status IN ('CANCELLED', 'REJECTED') THEN
        INSERT INTO execution_logs (order_id, trader_id, action, status, reason, retry_attempt, error_code)
        VALUES (NEW.id, NEW.trader_id, NEW.status::text::action_enum, NEW.status,
                NEW.status_reason,
                CASE WHEN NEW.status = 'REJECTED' THEN NEW.retry_attempt END,
                CASE WHEN NEW.status = 'REJECTED' THEN NEW.error_code END);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION fills_apply_to_order() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    owner_id uuid;
BEGIN
    IF TG_WHEN = 'BEFORE' THEN
        -- trader_id is copied from the order so that RLS on fills needs no join.
        SELECT o.trader_id INTO owner_id FROM orders o WHERE o.id = NEW.order_id;
        IF owner_id IS NULL THEN
            RAISE EXCEPTION 'order % does not exist', NEW.order_id USING ERRCODE = '23503';
        END IF;
        NEW.trader_id := owner_id;
        NEW.created_at := now();
        RETURN NEW;
    END IF;
    -- Touching the order makes orders_enforce_lifecycle re-derive its fill state
    -- under the order's row lock, so racing fills are applied one after the other.
    UPDATE orders SET status = status WHERE id = NEW.order_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION execution_logs_refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (the audit trail and the fills it rests on): % refused',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'OA403';
END
$$;

-- Superusers skip policies: this trigger makes "only from orders_write_audit" hold for them too.
-- Depth 1 is a statement's own trigger; orders_write_audit's insert runs at depth 2.
CREATE FUNCTION execution_logs_audit_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'execution_logs rows are written by the database only' USING ERRCODE = 'OA403';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER orders_lifecycle BEFORE INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_enforce_lifecycle();
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_write_audit();
CREATE TRIGGER fills_before_insert BEFORE INSERT ON fills
    FOR EACH ROW EXECUTE FUNCTION fills_apply_to_order();
CREATE TRIGGER fills_after_insert AFTER INSERT ON fills
    FOR EACH ROW EXECUTE FUNCTION fills_apply_to_order();
CREATE TRIGGER execution_logs_immutable_rows BEFORE UPDATE OR DELETE ON execution_logs
    FOR EACH ROW EXECUTE FUNCTION execution_logs_refuse_change();
CREATE TRIGGER execution_logs_written_by_audit BEFORE INSERT ON execution_logs
    FOR EACH ROW EXECUTE FUNCTION execution_logs_audit_only();
CREATE TRIGGER fills_immutable_rows BEFORE UPDATE OR DELETE ON fills
    FOR EACH ROW EXECUTE FUNCTION execution_logs_refuse_change();
CREATE TRIGGER execution_logs_no_truncate BEFORE TRUNCATE ON execution_logs
    FOR EACH STATEMENT EXECUTE FUNCTION execution_logs_refuse_change();
CREATE TRIGGER orders_no_truncate BEFORE TRUNCATE ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION execution_logs_refuse_change();
CREATE TRIGGER fills_no_truncate BEFORE TRUNCATE ON fills
    FOR EACH STATEMENT EXECUTE FUNCTION execution_logs_refuse_change();

REVOKE ALL ON FUNCTION orders_enforce_lifecycle(), orders_write_audit(), fills_apply_to_order(),
    execution_logs_refuse_change(), execution_logs_audit_only() FROM PUBLIC;
"""

# Live updates (GraphQL subscriptions): after every committed insert or update of an
# order, NOTIFY order_changes with identifiers only ({"id", "trader_id", "op"}), never
# order data; the API re-reads the order under each subscriber's own role and claims.
# Fills need nothing more: fills_after_insert updates the order row, which fires this.
# NOTIFY is delivered at commit and dropped on rollback, whoever the writer is.
ANNOUNCE = """
CREATE FUNCTION orders_announce_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
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
REVOKE ALL ON FUNCTION orders_announce_change() FROM PUBLIC;
CREATE TRIGGER orders_announce_change AFTER INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_announce_change();
"""

# One policy per role and command, so that each role's rows are described by
# exactly one expression the planner can use (an OR across roles defeats the
# trader_id indexes), and so that a role with no policy (anon) sees nothing,
# whatever its claims say. (select ...) around the claim makes PostgreSQL read
# it once per statement (an InitPlan), not once per row.
POLICIES = """
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders FORCE ROW LEVEL SECURITY;
ALTER TABLE fills ENABLE ROW LEVEL SECURITY;
ALTER TABLE fills FORCE ROW LEVEL SECURITY;
ALTER TABLE execution_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE execution_logs FORCE ROW LEVEL SECURITY;

-- Traders: their own rows only.
CREATE POLICY orders_trader_isolation ON orders FOR SELECT TO authenticated
    USING (trader_id = (SELECT auth.uid()));
CREATE POLICY orders_trader_submit ON orders FOR INSERT TO authenticated
    WITH CHECK (trader_id = (SELECT auth.uid()) AND status = 'PENDING');
-- A trader's only change is cancelling (the lifecycle trigger checks it is allowed).
CREATE POLICY orders_trader_cancel ON orders FOR UPDATE TO authenticated
    USING (trader_id = (SELECT auth.uid()))
    WITH CHECK (trader_id = (SELECT auth.uid()) AND status = 'CANCELLED');
CREATE POLICY fills_trader_isolation ON fills FOR SELECT TO authenticated
    USING (trader_id = (SELECT auth.uid()));
CREATE POLICY execution_logs_trader_isolation ON execution_logs FOR SELECT TO authenticated
    USING (trader_id = (SELECT auth.uid()));

-- The execution engine and back office: everything, within their grants.
CREATE POLICY orders_service_role ON orders FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY fills_service_role ON fills FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY execution_logs_service_role_read ON execution_logs FOR SELECT TO service_role
    USING (true);

-- Compliance: reads everything, and no policy lets it write.
CREATE POLICY orders_compliance_read ON orders FOR SELECT TO compliance_auditor USING (true);
CREATE POLICY fills_compliance_read ON fills FOR SELECT TO compliance_auditor USING (true);
CREATE POLICY execution_logs_compliance_read ON execution_logs FOR SELECT TO compliance_auditor
    USING (true);

-- Audit rows come only from orders_write_audit, a trigger (see also execution_logs_audit_only).
CREATE POLICY execution_logs_audit_insert ON execution_logs FOR INSERT
    WITH CHECK (pg_trigger_depth() > 0);

-- RESTRICTIVE: AND-ed with every other policy, so no permissive policy can re-open the log.
CREATE POLICY execution_logs_immutable ON execution_logs
    AS RESTRICTIVE FOR UPDATE USING (false) WITH CHECK (false);
CREATE POLICY execution_logs_immutable_delete ON execution_logs
    AS RESTRICTIVE FOR DELETE USING (false);
"""

# Supabase grants everything on new public tables to anon/authenticated/service_role
# by default privileges: start from nothing, then grant exactly what each role needs.
GRANTS = """
REVOKE ALL ON orders, fills, execution_logs
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role, compliance_auditor;
-- anon may ask (the API answers anonymous queries) and RLS shows it nothing.
GRANT SELECT ON orders, fills, execution_logs
    TO anon, authenticated, service_role, compliance_auditor;
GRANT INSERT (id, trader_id, client_order_id, symbol, side, quantity, order_type, price,
              stop_loss, take_profit, expires_at)
    ON orders TO authenticated, service_role;
-- A trader may only cancel: the policy limits the new status to CANCELLED.
GRANT UPDATE (status, status_reason) ON orders TO authenticated;
GRANT UPDATE (status, status_reason, error_code, retry_attempt, approved_at, routed_at,
              recovered_at)
    ON orders TO service_role;
GRANT INSERT (id, order_id, "timestamp", quantity_filled, price_at_fill, venue, commission)
    ON fills TO service_role;
-- Not even the owner keeps the right to rewrite history (the trigger refuses it as well).
REVOKE UPDATE, DELETE, TRUNCATE ON execution_logs FROM CURRENT_USER;
"""

# The API's readiness check compares the applied revision with its own, as the login role
# (a login role of your own gets the same grant by hand: README, Deploy on Supabase).
READINESS = f"""
DO $$
BEGIN
    IF {OURS_AUTHENTICATOR} THEN
        GRANT SELECT ON alembic_version TO authenticator;
    END IF;
END
$$;
"""


def _authenticator_password(verifier: str) -> str:
    """Sets the password of the login role this migration created, from a SCRAM verifier."""
    return f"""
DO $$
BEGIN
    IF {OURS_AUTHENTICATOR} THEN
        ALTER ROLE authenticator LOGIN PASSWORD '{verifier}';
    END IF;
END
$$;
"""


DOWNGRADE = f"""
REVOKE SELECT ON alembic_version FROM authenticator;
DROP TABLE IF EXISTS execution_logs, fills, orders;
DROP FUNCTION IF EXISTS orders_enforce_lifecycle(), orders_write_audit(), fills_apply_to_order(),
    execution_logs_refuse_change(), execution_logs_audit_only(), orders_announce_change();
DROP TYPE IF EXISTS action_enum, order_status_enum, order_type_enum;
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['auth.uid()', 'auth.role()', 'auth.jwt()'] LOOP
        IF to_regprocedure(f) IS NOT NULL
           AND obj_description(to_regprocedure(f), 'pg_proc') = '{CREATED_BY}' THEN
            EXECUTE 'DROP FUNCTION ' || f;
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = 'auth'
               AND obj_description(n.oid, 'pg_namespace') = '{CREATED_BY}') THEN
        DROP SCHEMA auth;
    END IF;
END
$$;
"""


def _statements(block: str) -> list[str]:
    """Split a block into statements (asyncpg runs one per call), keeping $$ bodies whole."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(block):
        ch = block[i]
        if quote is None and ch == "$":
            end = block.find("$", i + 1)
            tag = block[i : end + 1]
            if end != -1 and (tag == "$$" or tag[1:-1].isidentifier()):
                quote = tag
                current.append(tag)
                i = end + 1
                continue
        elif quote is not None and block.startswith(quote, i):
            current.append(quote)
            i += len(quote)
            quote = None
            continue
        elif quote is None and ch == "'":
            end = block.find("'", i + 1)
            current.append(block[i : end + 1])
            i = end + 1
            continue
        elif quote is None and ch == "-" and block.startswith("--", i):
            i = block.find("\n", i)
            continue
        if quote is None and ch == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return [s for s in statements if s]


def _run(block: str) -> None:
    for statement in _statements(block):
        op.execute(statement)


def upgrade() -> None:
    if not context.is_offline_mode():
        _say_when_authenticator_is_not_ours()
    for block in (ROLES, AUTH, TABLES, LIFECYCLE, ANNOUNCE, POLICIES, GRANTS, READINESS):
        _run(block)
    password = Settings.from_env().authenticator_password
    if password:
        # Only a salted SCRAM-SHA-256 verifier, computed here, reaches the server (and the
        # --sql output): never the password, so no server log can show it.
        # (Colons escaped: Alembic runs the text as a SQLAlchemy text(), where ":x" binds.)
        verifier = scram_sha_256_verifier(password).replace(":", "\\:")
        _run(_authenticator_password(verifier))


def _say_when_authenticator_is_not_ours() -> None:
    # The ROLES block's NOTICE reaches psql (--sql scripts), not Alembic's log: say it here.
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
    _run(DOWNGRADE)
