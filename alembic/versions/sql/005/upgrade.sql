ALTER TABLE public.execution_logs ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;
-- The verifier and the trigger walk a chain in this order.
CREATE INDEX idx_execution_logs_chain ON public.execution_logs (order_id, seq);

-- The canonical serialization of a row, version 1: the text
--     execution_logs/v1|<field>|<field>|...
-- with the fields in this order: seq, id, order_id, trader_id, action, status, timestamp,
-- reason, retry_attempt, error_code, created_at, prev_hash. Each field is ``~`` when NULL,
-- else ``<n>:<value>`` where n is the value's length in characters (so no value can be
-- mistaken for a separator). Values: uuids in lowercase 8-4-4-4-12 form; integers in
-- decimal (no sign, no leading zeros: none of these columns is negative); enums by label;
-- timestamps in UTC as YYYY-MM-DDTHH:MI:SS.ffffffZ (always six fractional digits);
-- prev_hash in lowercase hex; text as stored. There is no numeric column. The hash is the
-- SHA-256 of that text in UTF-8. A column added to execution_logs later needs a v2.
-- STABLE, not IMMUTABLE: to_char is stable. PL/pgSQL rather than SQL: a SQL function with
-- its own search_path is never inlined and cost twice as much per row (measured). EXECUTE for
-- the audit writer only (the trigger runs as it); the verifier recomputes it in Python.
CREATE FUNCTION public.execution_logs_canonical(entry public.execution_logs) RETURNS text
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    canonical text := 'execution_logs/v1';
    field text;
BEGIN
    FOREACH field IN ARRAY ARRAY[
        entry.seq::text,
        entry.id::text,
        entry.order_id::text,
        entry.trader_id::text,
        entry.action::text,
        entry.status::text,
        pg_catalog.to_char(entry."timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        entry.reason,
        entry.retry_attempt::text,
        entry.error_code::text,
        pg_catalog.to_char(entry.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        pg_catalog.encode(entry.prev_hash, 'hex')
    ] LOOP
        canonical := canonical || '|'
            || coalesce(pg_catalog.char_length(field)::text || ':' || field, '~');
    END LOOP;
    RETURN canonical;
END
$$;
;

-- Existing rows, chain by chain (see the docstring).
ALTER TABLE public.execution_logs DISABLE TRIGGER execution_logs_immutable_rows;
ALTER TABLE public.execution_logs NO FORCE ROW LEVEL SECURITY;
GRANT UPDATE (prev_hash, hash) ON public.execution_logs TO CURRENT_USER;
DO $$
DECLARE
    entry public.execution_logs;
    chain uuid;
    previous bytea;
BEGIN
    FOR entry IN SELECT * FROM public.execution_logs e ORDER BY e.order_id, e.seq LOOP
        IF entry.order_id IS DISTINCT FROM chain THEN
            chain := entry.order_id;
            previous := NULL;
        END IF;
        entry.prev_hash := previous;
        previous := pg_catalog.sha256(
            pg_catalog.convert_to(public.execution_logs_canonical(entry), 'UTF8'));
        UPDATE public.execution_logs SET prev_hash = entry.prev_hash, hash = previous
         WHERE id = entry.id;
    END LOOP;
END
$$;
REVOKE UPDATE (prev_hash, hash) ON public.execution_logs FROM CURRENT_USER;
ALTER TABLE public.execution_logs FORCE ROW LEVEL SECURITY;
ALTER TABLE public.execution_logs ENABLE TRIGGER execution_logs_immutable_rows;

ALTER TABLE public.execution_logs ALTER COLUMN hash SET NOT NULL,
    ADD CONSTRAINT ck_execution_logs_hash_sha256 CHECK (octet_length(hash) = 32),
    ADD CONSTRAINT ck_execution_logs_prev_hash_sha256 CHECK (octet_length(prev_hash) = 32);

-- Runs as whoever inserts: orders_write_audit's owner, order_audit_writer. The order's row
-- lock, held by the write that causes every audit row, keeps its chain's head in place.
CREATE FUNCTION public.execution_logs_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.prev_hash := (SELECT e.hash FROM public.execution_logs e
                       WHERE e.order_id = NEW.order_id ORDER BY e.seq DESC LIMIT 1);
    NEW.hash := pg_catalog.sha256(
        pg_catalog.convert_to(public.execution_logs_canonical(NEW), 'UTF8'));
    RETURN NEW;
END
$$;
-- BEFORE triggers fire in name order: this one must see the row as it will be stored, so
-- its name sorts after every other BEFORE INSERT trigger of the table.
CREATE TRIGGER execution_logs_zz_hash_chain BEFORE INSERT ON public.execution_logs
    FOR EACH ROW EXECUTE FUNCTION public.execution_logs_chain();

REVOKE ALL ON FUNCTION public.execution_logs_canonical(public.execution_logs),
    public.execution_logs_chain() FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT EXECUTE ON FUNCTION public.execution_logs_canonical(public.execution_logs)
    TO order_audit_writer;
-- The audit writer reads its order's chain head, nothing more.
GRANT SELECT (order_id, seq, hash) ON public.execution_logs TO order_audit_writer;
CREATE POLICY execution_logs_chain_head ON public.execution_logs FOR SELECT TO order_audit_writer
    USING (true);
