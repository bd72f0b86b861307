-- The API's roles: anon, authenticated, service_role, compliance_auditor, and the login
-- role authenticator that becomes them (the role list of this product: every later grant
-- names these). Roles are cluster-wide: created only when missing and marked
-- (COMMENT ON ROLE ... 'created by order-api migration 001') as ours; a role someone else
-- created (on Supabase: anon, authenticated, service_role and the reserved authenticator)
-- is never altered, commented on or granted to. Only a login role this migration created
-- receives the application roles and AUTHENTICATOR_PASSWORD (authenticator_password.sql).
-- The downgrade leaves them in place: other databases of the cluster may use them.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'compliance_auditor'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
            EXECUTE format('COMMENT ON ROLE %I IS %L', r, 'created by order-api migration 001');
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOSUPERUSER;
        COMMENT ON ROLE authenticator IS 'created by order-api migration 001';
    END IF;
    IF shobj_description('authenticator'::regrole, 'pg_authid') IS NOT DISTINCT FROM 'created by order-api migration 001' THEN
        GRANT anon, authenticated, service_role, compliance_auditor TO authenticator;
    ELSE
        RAISE NOTICE 'role authenticator exists and was not created by this migration: left unchanged (no memberships, no password); see README, Deploy on Supabase';
    END IF;
END
$$;
