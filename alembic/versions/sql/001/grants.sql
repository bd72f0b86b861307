-- Supabase grants everything on new public tables to anon/authenticated/service_role
-- by default privileges: start from nothing, then grant exactly what each role needs
-- (the matrix at the top of policies.sql).
REVOKE ALL ON orders, fills, execution_logs
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role, compliance_auditor;
-- anon may ask (the API answers anonymous queries) and RLS shows it nothing.
GRANT SELECT ON orders, fills, execution_logs
    TO anon, authenticated, service_role, compliance_auditor;
GRANT INSERT (id, trader_id, client_order_id, symbol, side, quantity, order_type, price,
              stop_loss, take_profit, expires_at)
    ON orders TO authenticated, service_role;
-- A trader may only cancel: the policy limits the new status to CANCELLED.
GRANT UPDATE (status, status_reason) ON orders TO authenticated;
GRANT UPDATE (status, status_reason, error_code, retry_attempt, approved_at, routed_at,
              recovered_at)
    ON orders TO service_role;
GRANT INSERT (id, order_id, "timestamp", quantity_filled, price_at_fill, venue, commission)
    ON fills TO service_role;
-- Not even the owner keeps the right to rewrite history (the trigger refuses it as well).
REVOKE UPDATE, DELETE, TRUNCATE ON execution_logs FROM CURRENT_USER;
