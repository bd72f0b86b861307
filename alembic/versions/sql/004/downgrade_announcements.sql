-- After 001's announce_trigger.sql and 002's orders_announce_change.sql: the function's
-- privileges as 002 left them.
REVOKE ALL ON FUNCTION public.orders_announce_change()
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
