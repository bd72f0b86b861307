-- Run only when AUTHENTICATOR_PASSWORD is set: the placeholder below is filled in with a salted
-- SCRAM-SHA-256 verifier computed by the migration, never the password, so no server log
-- and no --sql output can show it. Only the login role this migration created gets it.
DO $$
BEGIN
    IF shobj_description('authenticator'::regrole, 'pg_authid') IS NOT DISTINCT FROM 'created by order-api migration 001' THEN
        ALTER ROLE authenticator LOGIN PASSWORD :'verifier';
    END IF;
END
$$;
