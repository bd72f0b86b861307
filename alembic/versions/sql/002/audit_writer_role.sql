-- A role that may insert audit rows and nothing else; only orders_write_audit runs as it.
-- It exists so that the definer function does not run as the migration owner (on a
-- default install a superuser, on Supabase the owner of every table).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'order_audit_writer') THEN
        CREATE ROLE order_audit_writer NOLOGIN NOINHERIT;
    ELSIF EXISTS (
        SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'order_audit_writer'
           AND (rolcanlogin OR rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb
                OR rolreplication OR rolinherit)
    ) THEN
        RAISE EXCEPTION 'role order_audit_writer exists with more than NOLOGIN NOINHERIT rights'
            USING HINT = 'it owns the audit trigger function: '
                         'ALTER ROLE order_audit_writer NOLOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS '
                         'NOCREATEROLE NOCREATEDB NOREPLICATION, then migrate again';
    END IF;
END
$$;
-- The migrating role must be able to hand the function to it and replace it later.
GRANT order_audit_writer TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO order_audit_writer;
GRANT INSERT (order_id, trader_id, action, status, reason, retry_attempt, error_code)
    ON public.execution_logs TO order_audit_writer;
