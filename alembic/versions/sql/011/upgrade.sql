-- One order writer per operation (see 011_one_order_writer.py): the inner functions write as
-- the current role, the outer ones (007's and 008's, same signatures, oids and ACLs) become
-- the caller first and call them.

-- 008's submit_order without become(), and with the order rules' refusal (OA422) returned
-- instead of raised, so that the caller's transaction survives it (the API phrases the
-- refusal with the limits in force, read in that same transaction).
CREATE FUNCTION order_api_private.place_order(
    new_order jsonb,
    OUT inserted boolean,
    OUT placed public.orders,
    OUT refused text,
    OUT refused_field text
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
    -- The block is a subtransaction: an order the rules refuse is rolled back alone, and the
    -- refusal (its words and the API's field) is returned. Any other error is raised.
    BEGIN
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
            -- Some keys missing (a SQL caller's document, never the API's): as 007 wrote it,
            -- the missing columns take their defaults (time_in_force's is GTC, not NULL), so
            -- the statement names only the keys present, all of them from the list above.
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
    EXCEPTION WHEN SQLSTATE 'OA422' THEN
        GET STACKED DIAGNOSTICS refused = MESSAGE_TEXT, refused_field = COLUMN_NAME;
        inserted := false;
        refused_field := nullif(refused_field, '');
        RETURN;
    END;
    IF NOT inserted THEN
        -- Only the idempotency key can conflict: the trader's order under that key.
        SELECT o.* INTO placed FROM public.orders o
         WHERE o.trader_id = r.trader_id AND o.client_order_id = r.client_order_id;
    END IF;
END
$$;

-- 007's cancel_order without become().
CREATE FUNCTION order_api_private.cancel_own_order(
    order_id uuid,
    reason text,
    cancellable text[],
    OUT outcome text,
    OUT placed public.orders
)
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
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

-- A trader's own writes, nothing a trader could not do with plain SQL: the API's role for
-- traders only. Supabase's default privileges grant EXECUTE on new functions to its API
-- roles, so revoke by name.
REVOKE ALL ON FUNCTION order_api_private.place_order(jsonb),
    order_api_private.cancel_own_order(uuid, text, text[])
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT USAGE ON SCHEMA order_api_private TO authenticated;
GRANT EXECUTE ON FUNCTION order_api_private.place_order(jsonb),
    order_api_private.cancel_own_order(uuid, text, text[])
    TO authenticated;

-- The outer functions: become the caller, then the inner function. CREATE OR REPLACE keeps
-- their oids, owners and ACLs (EXECUTE for authenticator only, as 007 set it).
CREATE OR REPLACE FUNCTION order_api_private.submit_order(
    caller_role text,
    caller_claims text,
    new_order jsonb,
    OUT inserted boolean,
    OUT placed public.orders
)
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p record;
BEGIN
    PERFORM order_api_private.become(caller_role, caller_claims);
    SELECT * INTO p FROM order_api_private.place_order(new_order);
    IF p.refused IS NOT NULL THEN
        -- Called alone, in autocommit: raised as the rules raise it, nothing is written.
        RAISE EXCEPTION USING ERRCODE = 'OA422', MESSAGE = p.refused,
            COLUMN = coalesce(p.refused_field, '');
    END IF;
    inserted := p.inserted;
    placed := p.placed;
END
$$;

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
DECLARE
    c record;
BEGIN
    PERFORM order_api_private.become(caller_role, caller_claims);
    SELECT * INTO c FROM order_api_private.cancel_own_order(order_id, reason, cancellable);
    outcome := c.outcome;
    placed := c.placed;
END
$$;
