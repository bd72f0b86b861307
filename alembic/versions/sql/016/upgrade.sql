-- The open order cap locks only the caller's own trader (see 016_cap_locks_own_trader.py).
CREATE OR REPLACE FUNCTION public.orders_check_working_cap() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cap integer;
    working integer;
BEGIN
    -- A replacement takes the place of an open order: once confirmed, the order it replaces
    -- is REPLACED. Until then both count against the trader's next new order.
    IF NEW.replaces_id IS NOT NULL THEN
        RETURN NEW;
    END IF;
    SELECT l.max_open_orders INTO cap FROM public.order_limits l;
    IF cap IS NULL THEN
        RETURN NEW;
    END IF;
    -- The count below must see every order of this trader committed before the lock was
    -- granted: READ COMMITTED takes a new snapshot per statement, and SERIALIZABLE fails
    -- one of two racing transactions; REPEATABLE READ would count from an older snapshot
    -- and let two racing inserts both pass, so it is refused rather than half enforced.
    IF pg_catalog.current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'order_limits.max_open_orders is enforced under READ COMMITTED or '
                        'SERIALIZABLE isolation: insert orders outside REPEATABLE READ'
            USING ERRCODE = '0A000';
    END IF;
    -- A trader's order for another trader: orders_trader_submit's WITH CHECK refuses it
    -- after this trigger. Taking that trader's lock first would let the refused
    -- transaction, kept open, stall the other trader's submits (as 015's trigger does).
    IF current_user = 'authenticated' AND NEW.trader_id IS DISTINCT FROM auth.uid() THEN
        RETURN NEW;
    END IF;
    -- One trader's inserts queue behind each other until commit, other traders' never
    -- (two traders whose ids hash alike share a key: they only wait for each other).
    -- 0x6F636170 ("ocap") keeps the key apart from the engine's leases ("oeng").
    PERFORM pg_catalog.pg_advisory_xact_lock(1868783984, pg_catalog.hashtext(NEW.trader_id::text));
    SELECT count(*) INTO working FROM (
        SELECT 1 FROM public.orders o
         WHERE o.trader_id = NEW.trader_id AND o.status IN ('PENDING', 'PARTIAL')
         LIMIT cap
    ) AS counted;
    IF working >= cap THEN
        RAISE EXCEPTION 'too many open orders: a trader may have at most % working '
                        '(order_limits.max_open_orders); cancel one or wait for one to end', cap
            USING ERRCODE = 'OA422';
    END IF;
    RETURN NEW;
END
$$;
