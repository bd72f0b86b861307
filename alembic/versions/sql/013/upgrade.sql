-- Order events (issue 20): each audit row's place in commit order, and the key that signs
-- the stream's cursors. See 013_order_event_positions.py for why this ordering is exact.

-- Rows written before this revision all committed (ALTER TABLE waits for their writers):
-- key 0 puts them first, by seq. A constant default is stored once in the catalog, so no row
-- is rewritten and the immutability trigger has nothing to refuse; the defaults are dropped
-- again so that only the trigger below ever sets the columns of a new row.
ALTER TABLE public.execution_logs
    ADD COLUMN xact xid8 NOT NULL DEFAULT '0',
    ADD COLUMN stream_key xid8 NOT NULL DEFAULT '0';
ALTER TABLE public.execution_logs ALTER COLUMN xact DROP DEFAULT,
    ALTER COLUMN stream_key DROP DEFAULT;
CREATE INDEX idx_execution_logs_stream ON public.execution_logs (stream_key, seq);

-- 005's chain trigger, which already finds the order's previous row (under the order's row
-- lock), now also sets xact (the inserting top-level transaction; a savepoint's rows carry
-- the same) and stream_key = greatest(xact, the previous row's stream_key). Neither is part
-- of the canonical form (execution_logs_canonical names its fields), so hashes, the
-- verifier and the export are unchanged. A value an insert supplies is overwritten.
CREATE OR REPLACE FUNCTION public.execution_logs_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    previous_key xid8;
BEGIN
    SELECT e.hash, e.stream_key INTO NEW.prev_hash, previous_key
      FROM public.execution_logs e
     WHERE e.order_id = NEW.order_id ORDER BY e.seq DESC LIMIT 1;
    NEW.xact := pg_catalog.pg_current_xact_id();
    NEW.stream_key := GREATEST(NEW.xact, previous_key);  -- a construct, not a function
    NEW.hash := pg_catalog.sha256(
        pg_catalog.convert_to(public.execution_logs_canonical(NEW), 'UTF8'));
    RETURN NEW;
END
$$;
GRANT SELECT (stream_key) ON public.execution_logs TO order_audit_writer;

-- The key of the cursors' MACs (app/events/cursor.py): one per database, so that every
-- server process accepts the cursors of every other, and a restart keeps them valid. Two
-- random UUIDs (gen_random_uuid draws from the strong random source): 244 random bits.
-- Only the API's login role reads it (schema usage since 007), before any role switch.
CREATE TABLE order_api_private.event_cursor_key (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    key bytea NOT NULL
);
INSERT INTO order_api_private.event_cursor_key (key)
    VALUES (pg_catalog.sha256(pg_catalog.convert_to(
        gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')));
ALTER TABLE order_api_private.event_cursor_key ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_api_private.event_cursor_key FORCE ROW LEVEL SECURITY;
REVOKE ALL ON order_api_private.event_cursor_key
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT SELECT ON order_api_private.event_cursor_key TO authenticator;
CREATE POLICY event_cursor_key_login_role ON order_api_private.event_cursor_key
    FOR SELECT TO authenticator USING (true);
