-- 001's live-update announcement, hardened (migration 004 drops it; its downgrade runs this
-- file again).
-- search_path: pg_catalog first (built-ins cannot be shadowed), pg_temp explicitly last
-- (a caller's temporary objects are never found), nothing else: every name of ours is
-- qualified. SQLSTATEs as in 001: OA409 an illegal change of an order, OA403 a write to
-- the audit trail.

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
