GRANT INSERT (stop_price, time_in_force, replaces_id) ON public.orders
    TO authenticated, service_role;
-- The confirmation of a replacement is the engine's (service_role) write.
GRANT UPDATE (replaced_by_id) ON public.orders TO service_role;
-- Default privileges (Supabase) would let every API role call these directly. The trigger
-- needs no EXECUTE; session_close runs as the writer of orders (and the API, the engine).
REVOKE ALL ON FUNCTION public.orders_check_terms(), public.session_close(timestamptz)
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT EXECUTE ON FUNCTION public.session_close(timestamptz) TO authenticated, service_role;
