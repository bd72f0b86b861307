-- ALTER FUNCTION ... OWNER needs the new owner to hold CREATE on the schema at that
-- moment (so that it could have created the function itself); it keeps it no longer.
GRANT CREATE ON SCHEMA public TO order_audit_writer;
DO $$
BEGIN
    -- A GRANT without grant option only warns; say what is missing instead.
    IF NOT pg_catalog.has_schema_privilege('order_audit_writer', 'public', 'CREATE') THEN
        RAISE EXCEPTION 'cannot hand orders_write_audit to order_audit_writer: the migrating role '
                        'may not grant CREATE on schema public'
            USING HINT = 'migrate as the owner of schema public, or have it run: GRANT CREATE '
                         'ON SCHEMA public TO ' || current_user || ' WITH GRANT OPTION';
    END IF;
END
$$;
ALTER FUNCTION public.orders_write_audit() OWNER TO order_audit_writer;
REVOKE CREATE ON SCHEMA public FROM order_audit_writer;
