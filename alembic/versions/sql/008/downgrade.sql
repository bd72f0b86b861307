-- 007's submit_order again, exactly as 007/upgrade.sql creates it (its dynamic INSERT).
-- CREATE OR REPLACE keeps the oid, owner and ACL.
CREATE OR REPLACE FUNCTION order_api_private.submit_order(
    caller_role text,
    caller_claims text,
    new_order jsonb,
    OUT inserted boolean,
    OUT placed public.orders
)
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    columns text;
    written bigint;
BEGIN
    PERFORM order_api_private.become(caller_role, caller_claims);
    -- The keys name the columns (quoted: they are identifiers, never SQL); the caller's
    -- column privileges decide which of them may be written.
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(k), ', ')
      INTO columns FROM pg_catalog.jsonb_object_keys(new_order) AS k;
    EXECUTE pg_catalog.format(
        'INSERT INTO public.orders (%1$s) SELECT %1$s'
        ' FROM pg_catalog.jsonb_populate_record(NULL::public.orders, $1)'
        ' ON CONFLICT (trader_id, client_order_id) DO NOTHING RETURNING *',
        columns)
      INTO placed USING new_order;
    GET DIAGNOSTICS written = ROW_COUNT;
    inserted := written = 1;
    IF NOT inserted THEN
        -- Only the idempotency key can conflict: the trader's order under that key.
        SELECT o.* INTO placed FROM public.orders o
         WHERE o.trader_id = (new_order ->> 'trader_id')::uuid
           AND o.client_order_id = new_order ->> 'client_order_id';
    END IF;
END
$$;
