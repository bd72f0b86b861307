-- Back to exactly 010 (after 008/upgrade.sql, run first, gave submit_order back its 008 body):
-- 007's cancel_order again, its text exactly as 007/upgrade.sql creates it. CREATE OR REPLACE
-- keeps the oid, owner and ACL.
CREATE OR REPLACE FUNCTION order_api_private.cancel_order(
    caller_role text,
    caller_claims text,
    order_id uuid,
    reason text,
    cancellable text[],
    OUT outcome text,
    OUT placed public.orders
)
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM order_api_private.become(caller_role, caller_claims);
    SELECT o.* INTO placed FROM public.orders o WHERE o.id = order_id FOR UPDATE;
    IF NOT FOUND THEN
        -- Row level security hides other traders' orders: the same as a missing one.
        outcome := 'not_found';
        RETURN;
    END IF;
    -- A state is STATUS:approved:routed, as app/orders/lifecycle.py names them.
    IF NOT pg_catalog.format('%s:%s:%s', placed.status, (placed.approved_at IS NOT NULL)::text,
                             (placed.routed_at IS NOT NULL)::text) = ANY (cancellable) THEN
        outcome := 'refused';
        RETURN;
    END IF;
    UPDATE public.orders o SET status = 'CANCELLED', status_reason = reason
     WHERE o.id = order_id RETURNING o.* INTO placed;
    outcome := CASE WHEN FOUND THEN 'cancelled' ELSE 'not_found' END;
END
$$;

DROP FUNCTION order_api_private.cancel_own_order(uuid, text, text[]);
DROP FUNCTION order_api_private.place_order(jsonb);
REVOKE USAGE ON SCHEMA order_api_private FROM authenticated;
