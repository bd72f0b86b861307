-- Supabase Auth's custom access token hook for the order API: a user whose app_metadata
-- holds "order_api_role": "compliance_auditor" gets an access token with that role; every
-- other token leaves the hook as Auth made it.
--
-- app_metadata, unlike user_metadata, is written only through Auth's admin API (the
-- service_role key), so a user cannot promote themselves. Auth calls the hook as
-- supabase_auth_admin with {"user_id", "claims", "authentication_method"} and signs the
-- "claims" it returns, which must keep the claims Auth requires (aud, exp, iat, sub, email,
-- phone, role, aal, session_id, is_anonymous): jsonb_set changes role and nothing else.
-- Run it as postgres, then enable it under Authentication > Hooks (Postgres function
-- public.order_api_access_token_hook).
CREATE OR REPLACE FUNCTION public.order_api_access_token_hook(event jsonb) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('claims', CASE
        WHEN event #>> '{claims,app_metadata,order_api_role}' = 'compliance_auditor'
        THEN jsonb_set(event -> 'claims', '{role}', '"compliance_auditor"')
        ELSE event -> 'claims'
    END)
$$;

-- Supabase's default privileges grant every new function in public to anon, authenticated
-- and service_role: only Auth may call the hook.
REVOKE EXECUTE ON FUNCTION public.order_api_access_token_hook(jsonb)
    FROM PUBLIC, anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO supabase_auth_admin;
GRANT EXECUTE ON FUNCTION public.order_api_access_token_hook(jsonb) TO supabase_auth_admin;
