-- The order API's own login role on a hosted Supabase project (its authenticator is the
-- Data API's), run as postgres. Then give it a password with psql's \password order_api.
CREATE ROLE order_api LOGIN NOINHERIT;
GRANT anon, authenticated, service_role, compliance_auditor TO order_api;
-- What the migrations give authenticator itself: /readyz, the change feed that
-- live updates read (which order changed, never what), and the compiled order
-- writes (migration 007; see Performance).
GRANT SELECT ON alembic_version TO order_api;
ALTER POLICY alembic_version_readiness ON alembic_version TO authenticator, order_api;
GRANT SELECT (seq, order_id, trader_id) ON execution_logs TO order_api;
ALTER POLICY execution_logs_change_feed ON execution_logs TO authenticator, order_api;
GRANT USAGE ON SCHEMA order_api_private TO order_api;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA order_api_private TO order_api;
