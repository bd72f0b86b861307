-- The API's readiness check compares the applied revision with its own, as the login role
-- (a login role of your own gets the same grant by hand: README, Deploy on Supabase).
DO $$
BEGIN
    IF shobj_description('authenticator'::regrole, 'pg_authid') IS NOT DISTINCT FROM 'created by order-api migration 001' THEN
        GRANT SELECT ON alembic_version TO authenticator;
    END IF;
END
$$;
