-- Trusted documents (see 014_trusted_documents.py).
--
--                        owner   authenticator   anon/authenticated/service_role/compliance_auditor
-- trusted_documents      ALL     SELECT          -
-- ..._version            ALL     SELECT          -
CREATE TABLE order_api_private.trusted_documents (
    id text PRIMARY KEY
        CONSTRAINT ck_trusted_documents_id CHECK (pg_catalog.length(id) BETWEEN 1 AND 200),
    sha256 text NOT NULL,
    body text NOT NULL,
    operation_name text,
    -- NULL: every role may use it; else only these (a compliance report unusable by traders).
    roles text[]
        CONSTRAINT ck_trusted_documents_roles CHECK (
            roles <@ ARRAY['anon', 'authenticated', 'service_role', 'compliance_auditor']
            AND pg_catalog.cardinality(roles) > 0),
    loaded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- A server answers "sha256:<hex>" with this text: it must be the text's hash, whoever wrote it.
    CONSTRAINT ck_trusted_documents_sha256 CHECK (
        sha256 = pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(body, 'UTF8')), 'hex')),
    CONSTRAINT ck_trusted_documents_hash_id CHECK (
        pg_catalog.left(id, 7) <> 'sha256:' OR id = 'sha256:' || sha256)
);
CREATE INDEX trusted_documents_sha256 ON order_api_private.trusted_documents (sha256);

CREATE TABLE order_api_private.trusted_documents_version (
    singleton boolean PRIMARY KEY DEFAULT true CONSTRAINT ck_one_row CHECK (singleton),
    version bigint NOT NULL
);
INSERT INTO order_api_private.trusted_documents_version VALUES (true, 0);

CREATE FUNCTION order_api_private.trusted_documents_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Per statement: one command's documents become visible to the servers together.
    UPDATE order_api_private.trusted_documents_version SET version = version + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER trusted_documents_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON order_api_private.trusted_documents
    FOR EACH STATEMENT EXECUTE FUNCTION order_api_private.trusted_documents_changed();
REVOKE ALL ON FUNCTION order_api_private.trusted_documents_changed()
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;

REVOKE ALL ON order_api_private.trusted_documents, order_api_private.trusted_documents_version
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT SELECT ON order_api_private.trusted_documents, order_api_private.trusted_documents_version
    TO authenticator;

ALTER TABLE order_api_private.trusted_documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_api_private.trusted_documents FORCE ROW LEVEL SECURITY;
ALTER TABLE order_api_private.trusted_documents_version ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_api_private.trusted_documents_version FORCE ROW LEVEL SECURITY;
CREATE POLICY trusted_documents_owner ON order_api_private.trusted_documents
    FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY trusted_documents_servers ON order_api_private.trusted_documents
    FOR SELECT TO authenticator USING (true);
CREATE POLICY trusted_documents_version_owner ON order_api_private.trusted_documents_version
    FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY trusted_documents_version_servers ON order_api_private.trusted_documents_version
    FOR SELECT TO authenticator USING (true);
