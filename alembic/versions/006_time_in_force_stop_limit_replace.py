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
definitions, taken from that revision's module (as 004's downgrade does).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "006"
down_revision: str | None = "005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

API_ROLES = "PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator"

TYPES_AND_COLUMNS = """
ALTER TYPE public.order_type_enum ADD VALUE 'STOP_LIMIT';
ALTER TYPE public.order_status_enum ADD VALUE 'EXPIRED';
ALTER TYPE public.order_status_enum ADD VALUE 'REPLACED';
ALTER TYPE public.action_enum ADD VALUE 'EXPIRED';
ALTER TYPE public.action_enum ADD VALUE 'REPLACED';
CREATE TYPE public.time_in_force_enum AS ENUM ('DAY', 'GTC', 'IOC', 'FOK');

-- The new labels are compared as text: they cannot be used before this transaction commits.
ALTER TABLE public.orders
    ADD COLUMN stop_price numeric,
    ADD COLUMN time_in_force public.time_in_force_enum NOT NULL DEFAULT 'GTC',
    ADD COLUMN replaces_id uuid REFERENCES public.orders (id) ON DELETE RESTRICT,
    ADD COLUMN replaced_by_id uuid REFERENCES public.orders (id) ON DELETE RESTRICT,
    ADD CONSTRAINT ck_orders_stop_price_by_type CHECK (
        (order_type::text = 'STOP_LIMIT') = (stop_price IS NOT NULL)
    ),
    ADD CONSTRAINT ck_orders_stop_price_money CHECK (
        stop_price > 0 AND stop_price <= 99999999.99 AND scale(stop_price) <= 2
    ),
    -- A stop waits for its trigger price: "at once" makes no sense for it.
    ADD CONSTRAINT ck_orders_time_in_force_by_type CHECK (
        time_in_force NOT IN ('IOC', 'FOK') OR order_type::text NOT IN ('STOP', 'STOP_LIMIT')
    ),
    ADD CONSTRAINT ck_orders_time_in_force_expiry CHECK (
        time_in_force NOT IN ('IOC', 'FOK') OR expires_at IS NULL
    ),
    ADD CONSTRAINT ck_orders_replaces_another CHECK (replaces_id <> id),
    ADD CONSTRAINT ck_orders_replaced_by_another CHECK (replaced_by_id <> id),
    ADD CONSTRAINT ck_orders_replaced_status CHECK (
        (status::text = 'REPLACED') = (replaced_by_id IS NOT NULL)
    );
-- At most one replacement of an order waits for the venue (an unconfirmed one is PENDING).
CREATE UNIQUE INDEX uq_orders_pending_replacement ON public.orders (replaces_id)
    WHERE status = 'PENDING';
"""

SESSION = f"""
CREATE TABLE public.trading_session (
    id boolean PRIMARY KEY DEFAULT true CONSTRAINT ck_trading_session_one_row CHECK (id),
    close_time time NOT NULL DEFAULT '16:00',
    -- A zone PostgreSQL does not know fails here, with its name, instead of at the close.
    time_zone text NOT NULL DEFAULT 'America/New_York'
        CONSTRAINT ck_trading_session_time_zone CHECK (
            (TIMESTAMPTZ '2000-01-01 00:00+00' AT TIME ZONE time_zone) IS NOT NULL
        ),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.trading_session DEFAULT VALUES;

ALTER TABLE public.trading_session ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.trading_session FORCE ROW LEVEL SECURITY;
CREATE POLICY trading_session_read ON public.trading_session FOR SELECT
    TO authenticated, service_role, compliance_auditor USING (true);
CREATE POLICY trading_session_owner ON public.trading_session FOR ALL TO CURRENT_USER
    USING (true) WITH CHECK (true);
-- Supabase's default privileges grant ALL on new public tables to its API roles.
REVOKE ALL ON public.trading_session FROM {API_ROLES};
GRANT SELECT ON public.trading_session TO authenticated, service_role, compliance_auditor;

-- The close of the trading day ``moment`` belongs to: that day's close if it is a weekday
-- and the close is still ahead, else the next weekday's (no holiday calendar).
CREATE FUNCTION public.session_close(moment timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    session public.trading_session;
    trading_day date;
    closing timestamptz;
BEGIN
    SELECT * INTO session FROM public.trading_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'trading_session has no row: the session close is unknown'
            USING ERRCODE = 'OA500';
    END IF;
    trading_day := (moment AT TIME ZONE session.time_zone)::date;
    LOOP
        closing := (trading_day + session.close_time) AT TIME ZONE session.time_zone;
        EXIT WHEN pg_catalog.date_part('isodow', trading_day) < 6 AND closing > moment;
        trading_day := trading_day + 1;
    END LOOP;
    RETURN closing;
END
$$;
"""

CHECK_TERMS = """
CREATE FUNCTION public.orders_check_terms() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    replaced public.orders;
    filled_before integer;
    closing timestamptz;
BEGIN
    IF NEW.replaced_by_id IS NOT NULL THEN
        RAISE EXCEPTION 'a new order is not replaced: replaced_by_id is set when its '
                        'replacement is confirmed' USING ERRCODE = 'OA409';
    END IF;

    IF NEW.order_type = 'STOP_LIMIT' AND NEW.stop_price IS NULL THEN
        RAISE EXCEPTION 'a STOP_LIMIT order needs a stopPrice'
            USING ERRCODE = 'OA422', COLUMN = 'stopPrice';
    ELSIF NEW.order_type <> 'STOP_LIMIT' AND NEW.stop_price IS NOT NULL THEN
        RAISE EXCEPTION 'stopPrice is for STOP_LIMIT orders only, not %', NEW.order_type
            USING ERRCODE = 'OA422', COLUMN = 'stopPrice';
    END IF;
    NEW.stop_price := public.orders_checked_money('stopPrice', NEW.stop_price);

    IF NEW.time_in_force IS NULL THEN
        RAISE EXCEPTION 'timeInForce is required' USING ERRCODE = 'OA422', COLUMN = 'timeInForce';
    END IF;
    IF NEW.time_in_force IN ('IOC', 'FOK') AND NEW.order_type IN ('STOP', 'STOP_LIMIT') THEN
        RAISE EXCEPTION 'a % order waits for its trigger price: it cannot be %',
            NEW.order_type, NEW.time_in_force USING ERRCODE = 'OA422', COLUMN = 'timeInForce';
    END IF;
    IF NEW.time_in_force IN ('IOC', 'FOK') AND NEW.expires_at IS NOT NULL THEN
        RAISE EXCEPTION 'an % order is over at once: it takes no expiresAt', NEW.time_in_force
            USING ERRCODE = 'OA422', COLUMN = 'expiresAt';
    END IF;
    IF NEW.time_in_force = 'DAY' THEN
        closing := public.session_close(now());
        IF NEW.expires_at IS NULL THEN
            NEW.expires_at := closing;
        ELSIF NEW.expires_at > closing THEN
            RAISE EXCEPTION 'a DAY order ends at the session close (%): expiresAt may not be later',
                closing USING ERRCODE = 'OA422', COLUMN = 'expiresAt';
        END IF;
    END IF;

    IF NEW.replaces_id IS NOT NULL THEN
        -- Locked until commit: the order cannot fill, change or get a second replacement
        -- while this one is checked, and its fills after this point are audited after
        -- this order's SUBMITTED row (what the confirmation compares).
        SELECT * INTO replaced FROM public.orders o WHERE o.id = NEW.replaces_id
           FOR NO KEY UPDATE;
        IF NOT FOUND OR replaced.trader_id <> NEW.trader_id THEN
            -- Another trader's order looks missing, as everywhere (RLS hides it from traders).
            RAISE EXCEPTION 'order % does not exist', NEW.replaces_id USING ERRCODE = '23503';
        END IF;
        IF replaced.status NOT IN ('PENDING', 'PARTIAL') THEN
            RAISE EXCEPTION 'order % is %: only a PENDING or PARTIAL order can be replaced',
                replaced.id, replaced.status USING ERRCODE = 'OA409';
        END IF;
        -- An unconfirmed replacement is a request, not yet an order of its own: the order it
        -- would replace may still fill, so nothing can be counted on top of it.
        IF replaced.replaces_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM public.orders p
             WHERE p.id = replaced.replaces_id AND p.replaced_by_id = replaced.id
        ) THEN
            RAISE EXCEPTION 'order % waits for the venue to confirm it replaces order %: it can '
                            'be replaced once confirmed', replaced.id, replaced.replaces_id
                USING ERRCODE = 'OA409';
        END IF;
        IF EXISTS (SELECT 1 FROM public.orders r
                    WHERE r.replaces_id = replaced.id AND r.status = 'PENDING') THEN
            RAISE EXCEPTION 'order % already has a replacement waiting for the venue', replaced.id
                USING ERRCODE = 'OA409';
        END IF;
        IF NEW.symbol <> replaced.symbol THEN
            RAISE EXCEPTION 'a replacement trades the symbol of the order it replaces (%)',
                replaced.symbol USING ERRCODE = 'OA422', COLUMN = 'symbol';
        END IF;
        IF NEW.side <> replaced.side THEN
            RAISE EXCEPTION 'a replacement has the side of the order it replaces (%)',
                replaced.side USING ERRCODE = 'OA422', COLUMN = 'side';
        END IF;
        IF NEW.order_type <> replaced.order_type THEN
            RAISE EXCEPTION 'a replacement has the order type of the order it replaces (%)',
                replaced.order_type USING ERRCODE = 'OA422', COLUMN = 'orderType';
        END IF;
        -- The quantity written is the total across the chain of replacements; stored is what
        -- remains to trade. The orders before this one are REPLACED: their fills are final.
        WITH RECURSIVE chain AS (
            SELECT o.id, o.replaces_id, o.filled_quantity FROM public.orders o
             WHERE o.id = replaced.id
            UNION ALL
            SELECT o.id, o.replaces_id, o.filled_quantity
              FROM public.orders o JOIN chain c ON o.id = c.replaces_id
        )
        SELECT sum(c.filled_quantity)::integer INTO filled_before FROM chain c;
        IF NEW.quantity <= filled_before THEN
            RAISE EXCEPTION 'quantity is the total wanted, fills so far included: it must be '
                            'above the % already filled', filled_before
                USING ERRCODE = 'OA422', COLUMN = 'quantity';
        END IF;
        NEW.quantity := NEW.quantity - filled_before;
    END IF;
    RETURN NEW;
END
$$;

-- BEFORE INSERT triggers fire in name order: after orders_check_rules (003, which
-- normalises the symbol compared above), before orders_lifecycle.
CREATE TRIGGER orders_check_terms BEFORE INSERT ON public.orders
    FOR EACH ROW EXECUTE FUNCTION public.orders_check_terms();
"""

# 002's functions with the new statuses. SQLSTATEs as in 001: OA409 an illegal change.
LIFECYCLE = """
CREATE OR REPLACE FUNCTION public.orders_enforce_lifecycle() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fill_total integer;
    fill_average numeric;
    late_fill boolean;
    replacement public.orders;
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

    -- A cancel (or an expiry) reaches the venue after it was decided: executions the venue
    -- made meanwhile are facts and must be recorded, so a routed CANCELLED or EXPIRED order
    -- still takes fills (and nothing else); they are the only change a terminal order
    -- accepts. A REPLACED order takes none: the venue confirmed the replacement, later
    -- executions belong to the order that replaced it.
    late_fill := OLD.status IN ('CANCELLED', 'EXPIRED') AND OLD.routed_at IS NOT NULL
        AND NEW.status = OLD.status
        AND (NEW.status_reason, NEW.error_code, NEW.retry_attempt, NEW.approved_at,
             NEW.routed_at, NEW.recovered_at, NEW.replaced_by_id)
            IS NOT DISTINCT FROM
            (OLD.status_reason, OLD.error_code, OLD.retry_attempt, OLD.approved_at,
             OLD.routed_at, OLD.recovered_at, OLD.replaced_by_id);
    IF OLD.status IN ('FILLED', 'REJECTED', 'CANCELLED', 'EXPIRED', 'REPLACED') AND NOT late_fill THEN
        RAISE EXCEPTION 'order % is %: it cannot change any more', OLD.id, OLD.status
            USING ERRCODE = 'OA409';
    END IF;
    IF (NEW.id, NEW.trader_id, NEW.client_order_id, NEW.symbol, NEW.side, NEW.quantity,
        NEW.order_type, NEW.price, NEW.stop_loss, NEW.take_profit, NEW.created_at, NEW.expires_at,
        NEW.stop_price, NEW.time_in_force, NEW.replaces_id)
       IS DISTINCT FROM
       (OLD.id, OLD.trader_id, OLD.client_order_id, OLD.symbol, OLD.side, OLD.quantity,
        OLD.order_type, OLD.price, OLD.stop_loss, OLD.take_profit, OLD.created_at, OLD.expires_at,
        OLD.stop_price, OLD.time_in_force, OLD.replaces_id)
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
                           WHEN late_fill THEN OLD.status
                           ELSE 'PARTIAL' END::public.order_status_enum;
    ELSIF late_fill THEN
        -- Nothing new from the fills: a terminal order stays exactly as it is.
        RAISE EXCEPTION 'order % is %: it cannot change any more', OLD.id, OLD.status
            USING ERRCODE = 'OA409';
    ELSIF NEW.status <> OLD.status AND NOT (
            (OLD.status = 'PENDING'
             AND NEW.status IN ('CANCELLED', 'REJECTED', 'EXPIRED', 'REPLACED'))
         OR (OLD.status = 'PARTIAL' AND NEW.status IN ('CANCELLED', 'EXPIRED', 'REPLACED'))) THEN
        RAISE EXCEPTION 'order %: % -> % is not a legal transition', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'OA409';
    END IF;

    IF NEW.status = 'EXPIRED' AND OLD.status <> 'EXPIRED'
       AND (OLD.expires_at IS NULL OR OLD.expires_at > now()) THEN
        RAISE EXCEPTION 'order % has not reached its expiry (%): it cannot expire yet',
            OLD.id, coalesce(OLD.expires_at::text, 'none') USING ERRCODE = 'OA409';
    END IF;
    IF NEW.replaced_by_id IS DISTINCT FROM OLD.replaced_by_id AND NEW.status <> 'REPLACED' THEN
        RAISE EXCEPTION 'order %: replaced_by_id is set by the confirmation of a replacement, '
                        'with status REPLACED', OLD.id USING ERRCODE = 'OA409';
    END IF;
    IF NEW.status = 'REPLACED' AND OLD.status <> 'REPLACED' THEN
        -- The venue confirmed the replacement (see migration 006 for the protocol). Locked:
        -- a cancel of the replacement and its confirmation happen one after the other.
        SELECT * INTO replacement FROM public.orders r WHERE r.id = NEW.replaced_by_id
           FOR NO KEY UPDATE;
        IF NOT FOUND OR replacement.replaces_id IS DISTINCT FROM OLD.id
           OR replacement.trader_id <> OLD.trader_id THEN
            RAISE EXCEPTION 'order % is not replaced by %: that order does not replace it',
                OLD.id, coalesce(NEW.replaced_by_id::text, 'nothing') USING ERRCODE = 'OA409';
        END IF;
        IF replacement.status <> 'PENDING' THEN
            RAISE EXCEPTION 'replacement % of order % is %: it can no longer take its place',
                replacement.id, OLD.id, replacement.status USING ERRCODE = 'OA409';
        END IF;
        IF EXISTS (
            SELECT 1 FROM public.execution_logs l
             WHERE l.order_id = OLD.id AND l.action = 'FILLED'
               AND l.seq > (SELECT min(s.seq) FROM public.execution_logs s
                             WHERE s.order_id = replacement.id)
        ) THEN
            RAISE EXCEPTION 'order % filled after replacement % was requested: its fills stand '
                            'and the replacement must be rejected', OLD.id, replacement.id
                USING ERRCODE = 'OA409';
        END IF;
    END IF;

    IF NEW.approved_at IS DISTINCT FROM OLD.approved_at THEN
        IF OLD.approved_at IS NOT NULL OR NEW.approved_at IS NULL OR OLD.status <> 'PENDING' THEN
            RAISE EXCEPTION 'order %: approval happens once, while PENDING', OLD.id
                USING ERRCODE = 'OA409';
        END IF;
        IF OLD.replaces_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM public.orders o
             WHERE o.id = OLD.replaces_id AND o.replaced_by_id = OLD.id
        ) THEN
            RAISE EXCEPTION 'order % replaces order %, which is not REPLACED by it yet: it is '
                            'approved once the venue confirms', OLD.id, OLD.replaces_id
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
        INSERT INTO public.execution_logs (order_id, trader_id, action, status, reason)
        VALUES (NEW.id, NEW.trader_id, 'SUBMITTED', NEW.status,
                'replaces order ' || NEW.replaces_id::text);
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
    IF NEW.status <> OLD.status
       AND NEW.status IN ('CANCELLED', 'REJECTED', 'EXPIRED', 'REPLACED') THEN
        INSERT INTO public.execution_logs
            (order_id, trader_id, action, status, reason, retry_attempt, error_code)
        VALUES (NEW.id, NEW.trader_id, NEW.status::text::public.action_enum, NEW.status,
                CASE NEW.status
                    WHEN 'REPLACED' THEN 'replaced by order ' || NEW.replaced_by_id::text
                                         || coalesce(': ' || NEW.status_reason, '')
                    WHEN 'EXPIRED' THEN coalesce(NEW.status_reason, 'expired')
                    ELSE NEW.status_reason END,
                CASE WHEN NEW.status = 'REJECTED' THEN NEW.retry_attempt END,
                CASE WHEN NEW.status = 'REJECTED' THEN NEW.error_code END);
    END IF;
    RETURN NULL;
END
$$;
"""

GRANTS = f"""
GRANT INSERT (stop_price, time_in_force, replaces_id) ON public.orders
    TO authenticated, service_role;
-- The confirmation of a replacement is the engine's (service_role) write.
GRANT UPDATE (replaced_by_id) ON public.orders TO service_role;
-- Default privileges (Supabase) would let every API role call these directly. The trigger
-- needs no EXECUTE; session_close runs as the writer of orders (and the API, the engine).
REVOKE ALL ON FUNCTION public.orders_check_terms(), public.session_close(timestamptz)
    FROM {API_ROLES};
GRANT EXECUTE ON FUNCTION public.session_close(timestamptz) TO authenticated, service_role;
"""

# Nothing 005 cannot represent may be lost: refuse the downgrade while it is in use.
DOWNGRADE_GUARD = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.orders
                WHERE order_type::text = 'STOP_LIMIT' OR status::text IN ('EXPIRED', 'REPLACED')
                   OR replaces_id IS NOT NULL OR time_in_force IN ('IOC', 'FOK'))
       OR EXISTS (SELECT 1 FROM public.execution_logs
                   WHERE action::text IN ('EXPIRED', 'REPLACED')
                      OR status::text IN ('EXPIRED', 'REPLACED')) THEN
        RAISE EXCEPTION 'orders or audit rows use STOP_LIMIT, EXPIRED, REPLACED, a replacement '
                        'or IOC/FOK, which revision 005 cannot represent: downgrade refused';
    END IF;
END
$$;
"""

DOWNGRADE_OBJECTS = """
DROP TRIGGER orders_check_terms ON public.orders;
DROP FUNCTION public.orders_check_terms();
REVOKE INSERT (stop_price, time_in_force, replaces_id) ON public.orders
    FROM authenticated, service_role;
REVOKE UPDATE (replaced_by_id) ON public.orders FROM service_role;
DROP INDEX public.uq_orders_pending_replacement;
ALTER TABLE public.orders
    DROP COLUMN stop_price, DROP COLUMN time_in_force,
    DROP COLUMN replaces_id, DROP COLUMN replaced_by_id;
DROP TYPE public.time_in_force_enum;
DROP FUNCTION public.session_close(timestamptz);
DROP TABLE public.trading_session;
"""

# Enum values cannot be dropped: each type is recreated with 005's labels. What compares a
# column with a label is bound to the old type and goes first, then comes back as 001 made it.
DOWNGRADE_ENUMS = """
DROP POLICY orders_trader_submit ON public.orders;
DROP POLICY orders_trader_cancel ON public.orders;
ALTER TABLE public.orders
    DROP CONSTRAINT ck_orders_price_by_type,
    DROP CONSTRAINT ck_orders_status_matches_fills,
    ALTER COLUMN status DROP DEFAULT;
ALTER TYPE public.order_type_enum RENAME TO order_type_enum_006;
ALTER TYPE public.order_status_enum RENAME TO order_status_enum_006;
ALTER TYPE public.action_enum RENAME TO action_enum_006;
CREATE TYPE public.order_type_enum AS ENUM ('MARKET', 'LIMIT', 'STOP');
CREATE TYPE public.order_status_enum AS ENUM ('PENDING', 'FILLED', 'PARTIAL', 'REJECTED', 'CANCELLED');
CREATE TYPE public.action_enum AS ENUM (
    'SUBMITTED', 'APPROVED', 'EXECUTED', 'FILLED', 'REJECTED', 'CANCELLED', 'RECOVERED'
);
ALTER TABLE public.orders
    ALTER COLUMN order_type TYPE public.order_type_enum
        USING order_type::text::public.order_type_enum,
    ALTER COLUMN status TYPE public.order_status_enum USING status::text::public.order_status_enum;
ALTER TABLE public.execution_logs
    ALTER COLUMN action TYPE public.action_enum USING action::text::public.action_enum,
    ALTER COLUMN status TYPE public.order_status_enum USING status::text::public.order_status_enum;
DROP TYPE public.order_type_enum_006, public.order_status_enum_006, public.action_enum_006;
ALTER TABLE public.orders
    ALTER COLUMN status SET DEFAULT 'PENDING',
    ADD CONSTRAINT ck_orders_price_by_type CHECK ((order_type = 'MARKET') = (price IS NULL)),
    ADD CONSTRAINT ck_orders_status_matches_fills CHECK (
        (status = 'FILLED') = (filled_quantity = quantity)
        AND (status <> 'PENDING' OR filled_quantity = 0)
        AND (status <> 'PARTIAL' OR filled_quantity > 0)
    );
CREATE POLICY orders_trader_submit ON public.orders FOR INSERT TO authenticated
    WITH CHECK (trader_id = (SELECT auth.uid()) AND status = 'PENDING');
CREATE POLICY orders_trader_cancel ON public.orders FOR UPDATE TO authenticated
    USING (trader_id = (SELECT auth.uid()))
    WITH CHECK (trader_id = (SELECT auth.uid()) AND status = 'CANCELLED');
"""


def _statements(block: str) -> list[str]:
    # One statement per call (asyncpg), split by 001's splitter ($$ bodies kept whole).
    script = op.get_context().script
    assert script is not None
    return list(script.get_revision("001").module._statements(block))


def _functions_of_002() -> list[str]:
    """002's lifecycle and audit functions, from that revision (one definition of each)."""
    script = op.get_context().script
    assert script is not None
    bodies = script.get_revision("002").module.FUNCTION_BODIES
    wanted = ("FUNCTION public.orders_enforce_lifecycle()", "FUNCTION public.orders_write_audit()")
    return [s for s in _statements(bodies) if any(name in s for name in wanted)]


def upgrade() -> None:
    for block in (TYPES_AND_COLUMNS, SESSION, CHECK_TERMS, LIFECYCLE, GRANTS):
        for statement in _statements(block):
            op.execute(statement)


def downgrade() -> None:
    statements = _statements(DOWNGRADE_GUARD + DOWNGRADE_OBJECTS)
    statements += _functions_of_002()
    statements += _statements(DOWNGRADE_ENUMS)
    for statement in statements:
        op.execute(statement)
