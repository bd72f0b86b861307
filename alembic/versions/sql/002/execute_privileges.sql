-- Everyone the API can be, and PUBLIC: none of them calls a function of ours directly.
-- (Supabase's default privileges grant EXECUTE to anon, authenticated and service_role
-- directly, so revoking it from PUBLIC alone is not enough.)
REVOKE ALL ON FUNCTION public.orders_enforce_lifecycle(), public.orders_write_audit(),
    public.fills_apply_to_order(), public.execution_logs_refuse_change(),
    public.execution_logs_audit_only(), public.orders_announce_change()
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
