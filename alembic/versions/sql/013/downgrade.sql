DROP TABLE order_api_private.event_cursor_key;
REVOKE SELECT (stream_key) ON public.execution_logs FROM order_audit_writer;
-- 005's chain trigger, as it was.
CREATE OR REPLACE FUNCTION public.execution_logs_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.prev_hash := (SELECT e.hash FROM public.execution_logs e
                       WHERE e.order_id = NEW.order_id ORDER BY e.seq DESC LIMIT 1);
    NEW.hash := pg_catalog.sha256(
        pg_catalog.convert_to(public.execution_logs_canonical(NEW), 'UTF8'));
    RETURN NEW;
END
$$;
DROP INDEX public.idx_execution_logs_stream;
ALTER TABLE public.execution_logs DROP COLUMN stream_key, DROP COLUMN xact;
