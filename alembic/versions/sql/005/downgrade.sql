DROP POLICY execution_logs_chain_head ON public.execution_logs;
REVOKE SELECT (order_id, seq, hash) ON public.execution_logs FROM order_audit_writer;
DROP TRIGGER execution_logs_zz_hash_chain ON public.execution_logs;
DROP FUNCTION public.execution_logs_chain();
DROP FUNCTION public.execution_logs_canonical(public.execution_logs);
DROP INDEX public.idx_execution_logs_chain;
ALTER TABLE public.execution_logs DROP COLUMN hash, DROP COLUMN prev_hash;
