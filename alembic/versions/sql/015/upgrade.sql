-- Each trader's order rate (see 015_order_rate_limit.py). NULL: no limit.
ALTER TABLE public.order_limits ADD COLUMN max_orders_per_minute integer
    CONSTRAINT ck_order_limits_max_orders_per_minute CHECK (max_orders_per_minute > 0);

CREATE FUNCTION public.orders_limit_rate() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_per_minute integer;
    oldest_kept timestamptz;
BEGIN
    SELECT l.max_orders_per_minute INTO max_per_minute FROM public.order_limits l;
    IF max_per_minute IS NULL THEN
        RETURN NEW;
    END IF;
    -- A trader's order for another trader: orders_trader_submit's WITH CHECK refuses it
    -- after this trigger, so its lock need not be taken (the error would release it).
    IF current_user = 'authenticated' AND NEW.trader_id IS DISTINCT FROM auth.uid() THEN
        RETURN NEW;
    END IF;
    -- As 010: REPEATABLE READ would count from a snapshot older than the lock.
    IF pg_catalog.current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'order_limits.max_orders_per_minute is enforced under READ COMMITTED '
                        'or SERIALIZABLE isolation: insert orders outside REPEATABLE READ'
            USING ERRCODE = '0A000';
    END IF;
    -- 010's per-trader key ("ocap"): one trader's inserts queue behind each other until
    -- commit, other traders' never; the count below sees every order committed before.
    PERFORM pg_catalog.pg_advisory_xact_lock(1868783984, pg_catalog.hashtext(NEW.trader_id::text));
    -- NEW.created_at is orders_lifecycle's now(), the clock every order's created_at is on.
    -- The limit-th newest order in the window, if there are that many: the new order would
    -- be one too many until it leaves. Newest first through idx_orders_trader_created.
    SELECT o.created_at INTO oldest_kept FROM public.orders o
     WHERE o.trader_id = NEW.trader_id
       AND o.created_at > NEW.created_at - interval '60 seconds'
     ORDER BY o.created_at DESC
    OFFSET max_per_minute - 1 LIMIT 1;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    -- An idempotent repeat writes nothing (its clientOrderId conflicts): let it reach that.
    IF NEW.client_order_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM public.orders o
         WHERE o.trader_id = NEW.trader_id AND o.client_order_id = NEW.client_order_id
    ) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'too many orders: a trader may submit at most % in any 60 seconds '
                    '(order_limits.max_orders_per_minute)', max_per_minute
        -- Whole seconds until the place frees, from now (not the transaction's start).
        USING ERRCODE = 'OA429',
              DETAIL = greatest(1, least(60, pg_catalog.ceil(extract(epoch FROM
                  oldest_kept + interval '60 seconds' - pg_catalog.clock_timestamp()))))::integer::text;
END
$$;

-- BEFORE INSERT triggers fire in name order: after orders_lifecycle, which stamps
-- created_at, and after the order rules (an order they refuse is refused for its own fault).
CREATE TRIGGER orders_limit_rate BEFORE INSERT ON public.orders
    FOR EACH ROW EXECUTE FUNCTION public.orders_limit_rate();

-- Default privileges (Supabase) would let every API role call it directly; a trigger
-- needs no EXECUTE.
REVOKE ALL ON FUNCTION public.orders_limit_rate()
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
