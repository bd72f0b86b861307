-- 001's trigger functions, hardened.
-- search_path: pg_catalog first (built-ins cannot be shadowed), pg_temp explicitly last
-- (a caller's temporary objects are never found), nothing else: every name of ours is
-- qualified. SQLSTATEs as in 001: OA409 an illegal change of an order, OA403 a write to
-- the audit trail.

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
