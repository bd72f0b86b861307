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
