-- Back to exactly what 011 made: no rate limit, no trigger, no column.
DROP TRIGGER orders_limit_rate ON public.orders;
DROP FUNCTION public.orders_limit_rate();
ALTER TABLE public.order_limits DROP COLUMN max_orders_per_minute;
