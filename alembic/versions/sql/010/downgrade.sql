-- Back to exactly what 008 made: no cap, no trigger, no column.
DROP TRIGGER orders_check_working_cap ON public.orders;
DROP FUNCTION public.orders_check_working_cap();
ALTER TABLE public.order_limits DROP COLUMN max_open_orders;
