CREATE TABLE public.trading_session (
    id boolean PRIMARY KEY DEFAULT true CONSTRAINT ck_trading_session_one_row CHECK (id),
    close_time time NOT NULL DEFAULT '16:00',
    -- A zone PostgreSQL does not know fails here, with its name, instead of at the close.
    time_zone text NOT NULL DEFAULT 'America/New_York'
        CONSTRAINT ck_trading_session_time_zone CHECK (
            (TIMESTAMPTZ '2000-01-01 00:00+00' AT TIME ZONE time_zone) IS NOT NULL
        ),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.trading_session DEFAULT VALUES;

ALTER TABLE public.trading_session ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.trading_session FORCE ROW LEVEL SECURITY;
CREATE POLICY trading_session_read ON public.trading_session FOR SELECT
    TO authenticated, service_role, compliance_auditor USING (true);
CREATE POLICY trading_session_owner ON public.trading_session FOR ALL TO CURRENT_USER
    USING (true) WITH CHECK (true);
-- Supabase's default privileges grant ALL on new public tables to its API roles.
REVOKE ALL ON public.trading_session FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT SELECT ON public.trading_session TO authenticated, service_role, compliance_auditor;

-- The close of the trading day ``moment`` belongs to: that day's close if it is a weekday
-- and the close is still ahead, else the next weekday's (no holiday calendar).
CREATE FUNCTION public.session_close(moment timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    session public.trading_session;
    trading_day date;
    closing timestamptz;
BEGIN
    SELECT * INTO session FROM public.trading_session;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'trading_session has no row: the session close is unknown'
            USING ERRCODE = 'OA500';
    END IF;
    trading_day := (moment AT TIME ZONE session.time_zone)::date;
    LOOP
        closing := (trading_day + session.close_time) AT TIME ZONE session.time_zone;
        EXIT WHEN pg_catalog.date_part('isodow', trading_day) < 6 AND closing > moment;
        trading_day := trading_day + 1;
    END LOOP;
    RETURN closing;
END
$$;
