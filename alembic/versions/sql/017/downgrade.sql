-- Back to 009's body: the horizon only.
CREATE OR REPLACE FUNCTION public.fills_check_input() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW."timestamp" := public.checked_timestamp('timestamp', NEW."timestamp");
    RETURN NEW;
END
$$;
