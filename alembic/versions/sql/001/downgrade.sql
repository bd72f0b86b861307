-- Back to an empty database. The roles stay (cluster-wide, see roles.sql); the auth schema
-- and functions go only where this migration created them.
REVOKE SELECT ON alembic_version FROM authenticator;
DROP TABLE IF EXISTS execution_logs, fills, orders;
DROP FUNCTION IF EXISTS orders_enforce_lifecycle(), orders_write_audit(), fills_apply_to_order(),
    execution_logs_refuse_change(), execution_logs_audit_only(), orders_announce_change();
DROP TYPE IF EXISTS action_enum, order_status_enum, order_type_enum;
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['auth.uid()', 'auth.role()', 'auth.jwt()'] LOOP
        IF to_regprocedure(f) IS NOT NULL
           AND obj_description(to_regprocedure(f), 'pg_proc') = 'created by order-api migration 001' THEN
            EXECUTE 'DROP FUNCTION ' || f;
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = 'auth'
               AND obj_description(n.oid, 'pg_namespace') = 'created by order-api migration 001') THEN
        DROP SCHEMA auth;
    END IF;
END
$$;
