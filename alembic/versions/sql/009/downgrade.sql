-- Back to exactly 008: the triggers and their functions go; no other object changed.
DROP TRIGGER fills_check_input ON public.fills;
DROP TRIGGER orders_check_input ON public.orders;
DROP FUNCTION public.fills_check_input();
DROP FUNCTION public.orders_check_input();
DROP FUNCTION public.checked_timestamp(text, timestamptz);
DROP FUNCTION public.timestamp_horizon();
