-- Supabase's default privileges grant ALL on new public tables to anon, authenticated and
-- service_role, alembic_version included. The migrating role (the table's owner) keeps
-- every row; authenticator reads the revision for /readyz.
REVOKE ALL ON public.alembic_version FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT SELECT ON public.alembic_version TO authenticator;
ALTER TABLE public.alembic_version ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.alembic_version FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE pg_catalog.format(
        'CREATE POLICY alembic_version_migrations ON public.alembic_version FOR ALL TO %I '
        'USING (true) WITH CHECK (true)',
        (SELECT relowner::regrole FROM pg_catalog.pg_class
          WHERE oid = 'public.alembic_version'::regclass));
END
$$;
CREATE POLICY alembic_version_readiness ON public.alembic_version FOR SELECT TO authenticator
    USING (true);
