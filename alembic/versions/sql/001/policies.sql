-- Who may do what after migration 001: grants (grants.sql) decide which commands and
-- columns a role may use at all, these policies which rows. "own": trader_id = auth.uid().
--
--                      orders                      fills               execution_logs
-- anon                 SELECT: no rows             SELECT: no rows     SELECT: no rows
-- authenticated        SELECT own;                 SELECT own          SELECT own
--                      INSERT own, as PENDING;
--                      UPDATE own (status,
--                        status_reason) to
--                        CANCELLED only
-- service_role         SELECT, INSERT, UPDATE      SELECT, INSERT      SELECT all
--                        (execution columns) all     all
-- compliance_auditor   SELECT all                  SELECT all          SELECT all
-- authenticator        -                           -                   -   (logs in, becomes
--                                                                      the roles above)
-- any role             -                           -                   INSERT only from within
--                                                                      a trigger (the audit)
-- the owner            FORCE RLS and no policy of its own: no rows (a superuser or
--                      BYPASSRLS role skips policies; the triggers hold for it too)
--
-- Nobody DELETEs or TRUNCATEs orders, fills or execution_logs (no grant; triggers refuse).
-- Which INSERT and UPDATE columns: grants.sql. Which changes of an order: the lifecycle
-- trigger (functions.sql).
--
-- One policy per role and command, so that each role's rows are described by
-- exactly one expression the planner can use (an OR across roles defeats the
-- trader_id indexes), and so that a role with no policy (anon) sees nothing,
-- whatever its claims say. (select ...) around the claim makes PostgreSQL read
-- it once per statement (an InitPlan), not once per row.

ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders FORCE ROW LEVEL SECURITY;
ALTER TABLE fills ENABLE ROW LEVEL SECURITY;
ALTER TABLE fills FORCE ROW LEVEL SECURITY;
ALTER TABLE execution_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE execution_logs FORCE ROW LEVEL SECURITY;

-- Traders: their own rows only.
CREATE POLICY orders_trader_isolation ON orders FOR SELECT TO authenticated
    USING (trader_id = (SELECT auth.uid()));
CREATE POLICY orders_trader_submit ON orders FOR INSERT TO authenticated
    WITH CHECK (trader_id = (SELECT auth.uid()) AND status = 'PENDING');
-- A trader's only change is cancelling (the lifecycle trigger checks it is allowed).
CREATE POLICY orders_trader_cancel ON orders FOR UPDATE TO authenticated
    USING (trader_id = (SELECT auth.uid()))
    WITH CHECK (trader_id = (SELECT auth.uid()) AND status = 'CANCELLED');
CREATE POLICY fills_trader_isolation ON fills FOR SELECT TO authenticated
    USING (trader_id = (SELECT auth.uid()));
CREATE POLICY execution_logs_trader_isolation ON execution_logs FOR SELECT TO authenticated
    USING (trader_id = (SELECT auth.uid()));

-- The execution engine and back office: everything, within their grants.
CREATE POLICY orders_service_role ON orders FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY fills_service_role ON fills FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY execution_logs_service_role_read ON execution_logs FOR SELECT TO service_role
    USING (true);

-- Compliance: reads everything, and no policy lets it write.
CREATE POLICY orders_compliance_read ON orders FOR SELECT TO compliance_auditor USING (true);
CREATE POLICY fills_compliance_read ON fills FOR SELECT TO compliance_auditor USING (true);
CREATE POLICY execution_logs_compliance_read ON execution_logs FOR SELECT TO compliance_auditor
    USING (true);

-- Audit rows come only from orders_write_audit, a trigger (see also execution_logs_audit_only).
CREATE POLICY execution_logs_audit_insert ON execution_logs FOR INSERT
    WITH CHECK (pg_trigger_depth() > 0);

-- RESTRICTIVE: AND-ed with every other policy, so no permissive policy can re-open the log.
CREATE POLICY execution_logs_immutable ON execution_logs
    AS RESTRICTIVE FOR UPDATE USING (false) WITH CHECK (false);
CREATE POLICY execution_logs_immutable_delete ON execution_logs
    AS RESTRICTIVE FOR DELETE USING (false);
