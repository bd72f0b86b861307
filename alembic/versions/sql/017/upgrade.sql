-- 009's check of a new fill, and no date after the database's clock (five seconds of clock
-- skew allowed: see 017_fills_not_in_the_future.py). The message is validation.py's.
CREATE OR REPLACE FUNCTION public.fills_check_input() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW."timestamp" := public.checked_timestamp('timestamp', NEW."timestamp");
    IF NEW."timestamp" > pg_catalog.clock_timestamp() + interval '5 seconds' THEN
        RAISE EXCEPTION 'timestamp cannot be in the future'
            USING ERRCODE = 'OA422', COLUMN = 'timestamp';
    END IF;
    RETURN NEW;
END
$$;
