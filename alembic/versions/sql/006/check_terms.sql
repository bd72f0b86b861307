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
