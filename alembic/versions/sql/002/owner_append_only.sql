-- 001 took these from execution_logs; the fills are the audit trail's facts as well.
-- (A superuser skips privileges and the owner may grant them back: the triggers stay.)
REVOKE UPDATE, DELETE, TRUNCATE ON public.fills FROM CURRENT_USER;
