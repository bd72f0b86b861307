DROP POLICY execution_logs_change_feed ON public.execution_logs;
REVOKE SELECT (seq, order_id, trader_id) ON public.execution_logs FROM authenticator;
DROP INDEX public.idx_execution_logs_seq;
ALTER TABLE public.execution_logs DROP COLUMN seq;
