DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.orders
                WHERE order_type::text = 'STOP_LIMIT' OR status::text IN ('EXPIRED', 'REPLACED')
                   OR replaces_id IS NOT NULL OR time_in_force IN ('IOC', 'FOK'))
       OR EXISTS (SELECT 1 FROM public.execution_logs
                   WHERE action::text IN ('EXPIRED', 'REPLACED')
                      OR status::text IN ('EXPIRED', 'REPLACED')) THEN
        RAISE EXCEPTION 'orders or audit rows use STOP_LIMIT, EXPIRED, REPLACED, a replacement '
                        'or IOC/FOK, which revision 005 cannot represent: downgrade refused';
    END IF;
END
$$;

DROP TRIGGER orders_check_terms ON public.orders;
DROP FUNCTION public.orders_check_terms();
REVOKE INSERT (stop_price, time_in_force, replaces_id) ON public.orders
    FROM authenticated, service_role;
REVOKE UPDATE (replaced_by_id) ON public.orders FROM service_role;
DROP INDEX public.uq_orders_pending_replacement;
ALTER TABLE public.orders
    DROP COLUMN stop_price, DROP COLUMN time_in_force,
    DROP COLUMN replaces_id, DROP COLUMN replaced_by_id;
DROP TYPE public.time_in_force_enum;
DROP FUNCTION public.session_close(timestamptz);
DROP TABLE public.trading_session;
