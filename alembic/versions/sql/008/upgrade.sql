-- submit_order with a static INSERT (see 008_static_submit_order.py). CREATE OR REPLACE keeps
-- the function's oid, owner and ACL (EXECUTE for authenticator only, as 007 set it).
CREATE OR REPLACE FUNCTION order_api_private.submit_order(
    caller_role text,
    caller_claims text,
    new_order jsonb,
    OUT inserted boolean,
    OUT placed public.orders
)
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- The columns a submission writes: trader_id and app/orders/fields.SUBMIT_FIELDS, which
    -- is what the API's document holds (tests/test_field_registry.py holds the three lists
    -- of this function to it).
    submitted CONSTANT text[] := ARRAY['trader_id', 'symbol', 'side', 'quantity', 'order_type',
        'price', 'stop_loss', 'take_profit', 'expires_at', 'stop_price', 'time_in_force',
        'client_order_id'];
    r public.orders;
    columns text;
    written bigint;
BEGIN
    PERFORM order_api_private.become(caller_role, caller_claims);
    IF pg_catalog.jsonb_typeof(new_order) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'new_order must be a JSON object, not %',
            coalesce(pg_catalog.jsonb_typeof(new_order), 'NULL') USING ERRCODE = '22023';
    END IF;
    -- A key outside the list is refused, never dropped (a dropped key would be a lost field):
    -- as 007 refused a column the caller may not write, with the same SQLSTATE, which the API
    -- translates as every privilege refusal (orders/queries.translate: FORBIDDEN).
    IF new_order - submitted <> '{}'::jsonb THEN
        RAISE EXCEPTION 'submit_order writes only %; refused: %',
            pg_catalog.array_to_string(submitted, ', '),
            (SELECT pg_catalog.string_agg(k, ', ' ORDER BY k)
               FROM pg_catalog.jsonb_object_keys(new_order - submitted) AS k)
            USING ERRCODE = '42501';
    END IF;
    r := pg_catalog.jsonb_populate_record(NULL::public.orders, new_order);
    IF new_order ?& submitted THEN
        -- Every key, as the API always sends them: a static statement, so PL/pgSQL plans
        -- it once per connection instead of parsing and planning it on every call.
        INSERT INTO public.orders (trader_id, symbol, side, quantity, order_type, price,
            stop_loss, take_profit, expires_at, stop_price, time_in_force, client_order_id)
        VALUES (r.trader_id, r.symbol, r.side, r.quantity, r.order_type, r.price,
            r.stop_loss, r.take_profit, r.expires_at, r.stop_price, r.time_in_force,
            r.client_order_id)
        ON CONFLICT (trader_id, client_order_id) DO NOTHING RETURNING * INTO placed;
        inserted := FOUND;
    ELSE
        -- Some keys missing (a SQL caller's document, never the API's): as 007 wrote it, the
        -- missing columns take their defaults (time_in_force's is GTC, not NULL), so the
        -- statement names only the keys present, all of them from the list above.
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
    END IF;
    IF NOT inserted THEN
        -- Only the idempotency key can conflict: the trader's order under that key.
        SELECT o.* INTO placed FROM public.orders o
         WHERE o.trader_id = r.trader_id AND o.client_order_id = r.client_order_id;
    END IF;
END
$$;
