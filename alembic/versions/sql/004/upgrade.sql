DROP TRIGGER orders_announce_change ON public.orders;
DROP FUNCTION public.orders_announce_change();

-- GENERATED ALWAYS: only the sequence numbers rows; an insert cannot choose its position.
ALTER TABLE public.execution_logs ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX idx_execution_logs_seq ON public.execution_logs (seq);
-- Supabase's default privileges grant ALL on new sequences to its API roles: setval on this
-- one would make every later audit insert collide on idx_execution_logs_seq.
REVOKE ALL ON SEQUENCE public.execution_logs_seq_seq
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;

-- The feed reader is the API's login role; it sees which order changed, never what.
GRANT SELECT (seq, order_id, trader_id) ON public.execution_logs TO authenticator;
CREATE POLICY execution_logs_change_feed ON public.execution_logs FOR SELECT TO authenticator
    USING (true);
