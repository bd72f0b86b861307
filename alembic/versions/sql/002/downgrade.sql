-- Back to 001 (then 001's functions.sql puts its function definitions back).
-- Revocations from the API roles are kept: on Supabase re-granting would re-open the hole.

DROP POLICY alembic_version_readiness ON public.alembic_version;
DROP POLICY alembic_version_migrations ON public.alembic_version;
ALTER TABLE public.alembic_version NO FORCE ROW LEVEL SECURITY;
ALTER TABLE public.alembic_version DISABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF pg_catalog.pg_has_role(current_user, (SELECT datdba FROM pg_catalog.pg_database
                                              WHERE datname = pg_catalog.current_database()),
                              'MEMBER') THEN
        EXECUTE pg_catalog.format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC',
                                  pg_catalog.current_database());
    END IF;
END
$$;

DO $$
BEGIN
    EXECUTE pg_catalog.format(
        'ALTER FUNCTION public.orders_write_audit() OWNER TO %I',
        (SELECT relowner::regrole FROM pg_catalog.pg_class WHERE oid = 'public.orders'::regclass));
END
$$;
REVOKE ALL ON public.execution_logs FROM order_audit_writer;
REVOKE ALL ON SCHEMA public FROM order_audit_writer;
GRANT UPDATE, DELETE, TRUNCATE ON public.fills TO CURRENT_USER;
