-- Supabase's definitions, for plain PostgreSQL. Where an auth schema already exists
-- (Supabase: owned by supabase_auth_admin, and our owner holds no grant option on it) it
-- is left exactly as it is: nothing created in it, nothing granted on it. The policies
-- of authenticated call auth.uid(); every other read of the claims (the API's viewer)
-- reads request.jwt.claims directly, so compliance_auditor needs no access to auth.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        CREATE SCHEMA auth;
        COMMENT ON SCHEMA auth IS 'created by order-api migration 001';
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $f$;
        COMMENT ON FUNCTION auth.uid() IS 'created by order-api migration 001';
        CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $f$;
        COMMENT ON FUNCTION auth.role() IS 'created by order-api migration 001';
        CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $f$;
        COMMENT ON FUNCTION auth.jwt() IS 'created by order-api migration 001';
        -- What Supabase grants on its own auth schema.
        GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    END IF;
END
$$;
