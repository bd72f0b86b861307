-- The compiled mutations' functions (see 007_compiled_order_writes.py): one statement each.
CREATE SCHEMA order_api_private;
REVOKE ALL ON SCHEMA order_api_private FROM PUBLIC;
GRANT USAGE ON SCHEMA order_api_private TO authenticator;

-- The caller's role and claims for the rest of the statement's transaction. Only the four
-- API roles: the login role must never become anything else through here.
CREATE FUNCTION order_api_private.become(caller_role text, caller_claims text)
RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF caller_role IS NULL
       OR caller_role NOT IN ('anon', 'authenticated', 'service_role', 'compliance_auditor') THEN
        RAISE EXCEPTION 'not an API role: %', caller_role USING ERRCODE = '42501';
    END IF;
    PERFORM pg_catalog.set_config('role', caller_role, true),
            pg_catalog.set_config('request.jwt.claims', caller_claims, true),
            pg_catalog.set_config('TimeZone', 'UTC', true);
END
$$;

CREATE FUNCTION order_api_private.submit_order(
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

CREATE FUNCTION order_api_private.cancel_order(
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

-- Only the API's login role may call them (it could set these roles itself anyway); Supabase's
-- default privileges grant EXECUTE on new functions to its API roles, so revoke by name.
REVOKE ALL ON FUNCTION order_api_private.become(text, text),
    order_api_private.submit_order(text, text, jsonb),
    order_api_private.cancel_order(text, text, uuid, text, text[])
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor;
GRANT EXECUTE ON FUNCTION order_api_private.become(text, text),
    order_api_private.submit_order(text, text, jsonb),
    order_api_private.cancel_order(text, text, uuid, text, text[])
    TO authenticator;
