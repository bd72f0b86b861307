-- Nothing in this product creates temporary objects, so nobody needs TEMPORARY. It is
-- granted to PUBLIC by default and can only be revoked from PUBLIC, which only the
-- database's owner (or a superuser) may do; the owner keeps it through its own grant.
DO $$
DECLARE
    db_owner regrole := (SELECT datdba::regrole FROM pg_catalog.pg_database
                          WHERE datname = pg_catalog.current_database());
BEGIN
    IF pg_catalog.pg_has_role(current_user, db_owner, 'MEMBER') THEN
        EXECUTE pg_catalog.format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC',
                                  pg_catalog.current_database());
    ELSE
        RAISE NOTICE 'TEMPORARY on database % stays granted to PUBLIC: only its owner % may '
                     'revoke it. The functions'' search_path (pg_temp last) and schema-qualified '
                     'names are the defence against temporary objects on their own.',
                     pg_catalog.current_database(), db_owner;
    END IF;
END
$$;
