-- The triggers over functions.sql. execution_logs_refuse_change guards the fills and the
-- orders too (append-only tables, no TRUNCATE): its name is the database's and stays until
-- a revision renames it.
CREATE TRIGGER orders_lifecycle BEFORE INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_enforce_lifecycle();
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_write_audit();
CREATE TRIGGER fills_before_insert BEFORE INSERT ON fills
    FOR EACH ROW EXECUTE FUNCTION fills_apply_to_order();
CREATE TRIGGER fills_after_insert AFTER INSERT ON fills
    FOR EACH ROW EXECUTE FUNCTION fills_apply_to_order();
CREATE TRIGGER execution_logs_immutable_rows BEFORE UPDATE OR DELETE ON execution_logs
    FOR EACH ROW EXECUTE FUNCTION execution_logs_refuse_change();
CREATE TRIGGER execution_logs_written_by_audit BEFORE INSERT ON execution_logs
    FOR EACH ROW EXECUTE FUNCTION execution_logs_audit_only();
CREATE TRIGGER fills_immutable_rows BEFORE UPDATE OR DELETE ON fills
    FOR EACH ROW EXECUTE FUNCTION execution_logs_refuse_change();
CREATE TRIGGER execution_logs_no_truncate BEFORE TRUNCATE ON execution_logs
    FOR EACH STATEMENT EXECUTE FUNCTION execution_logs_refuse_change();
CREATE TRIGGER orders_no_truncate BEFORE TRUNCATE ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION execution_logs_refuse_change();
CREATE TRIGGER fills_no_truncate BEFORE TRUNCATE ON fills
    FOR EACH STATEMENT EXECUTE FUNCTION execution_logs_refuse_change();

REVOKE ALL ON FUNCTION orders_enforce_lifecycle(), orders_write_audit(), fills_apply_to_order(),
    execution_logs_refuse_change(), execution_logs_audit_only() FROM PUBLIC;
