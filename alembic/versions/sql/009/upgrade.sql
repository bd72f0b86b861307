-- Rows that no reader could decode stop the upgrade (see 009_input_horizons.py): a value
-- outside the years 1 to 9999 UTC, 'infinity' included, in a column a writer sets.
DO $$
DECLARE
    found text;
BEGIN
    SELECT pg_catalog.string_agg(format('%s: %s rows', what, n), ', ') INTO found FROM (
        SELECT 'orders.' || c AS what, count(*) AS n
          FROM public.orders o,
               LATERAL (VALUES ('expires_at', o.expires_at), ('approved_at', o.approved_at),
                               ('routed_at', o.routed_at), ('recovered_at', o.recovered_at))
                       AS v(c, at)
         WHERE NOT (v.at >= '0001-01-01 00:00:00+00' AND v.at < '10000-01-01 00:00:00+00')
         GROUP BY c
        UNION ALL
        SELECT 'fills.timestamp', count(*) FROM public.fills f
         WHERE NOT (f."timestamp" >= '0001-01-01 00:00:00+00'
                    AND f."timestamp" < '10000-01-01 00:00:00+00')
        HAVING count(*) > 0
    ) unreadable;
    IF found IS NOT NULL THEN
        RAISE EXCEPTION 'rows hold timestamps outside the years 1 to 9999 UTC, which no reader '
                        'of the API can decode (%): nothing was changed', found
            USING HINT = 'decide for each order (it breaks every page that holds it today), '
                         'e.g. give it an expires_at within ten years or remove it, as the '
                         'owner, then upgrade again';
    END IF;
END
$$;

-- The one statement of the horizon in SQL; app/orders/validation.HORIZON is the same span.
CREATE FUNCTION public.timestamp_horizon() RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '3653 days' $$;

-- A timestamp as a writer may set it: finite and within the horizon of now, either way.
-- The message is validation.beyond_horizon's.
CREATE FUNCTION public.checked_timestamp(field text, value timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    horizon CONSTANT interval := public.timestamp_horizon();
BEGIN
    IF value IS NOT NULL AND NOT (value >= now() - horizon AND value <= now() + horizon) THEN
        RAISE EXCEPTION '% must be within % days of the current time', field,
            extract(day FROM horizon) USING ERRCODE = 'OA422', COLUMN = field;
    END IF;
    RETURN value;
END
$$;

-- BEFORE triggers fire in name order: this one before orders_check_rules (003), so that a
-- symbol reaches upper(btrim(...)) only in ASCII, where no locale's upper() differs from
-- the API's (glibc's en_US.UTF-8 makes U+0131, a dotless i, an 'I').
CREATE FUNCTION public.orders_check_input() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.symbol ~ '[^\x01-\x7F]' THEN
            RAISE EXCEPTION 'symbol must be 1 to 10 characters of A-Z, 0-9, ''.'' and ''-'''
                USING ERRCODE = 'OA422', COLUMN = 'symbol';
        END IF;
        NEW.expires_at := public.checked_timestamp('expiresAt', NEW.expires_at);
    ELSE
        -- The engine's (service_role's) times; the lifecycle trigger judges when they change.
        IF NEW.approved_at IS DISTINCT FROM OLD.approved_at THEN
            NEW.approved_at := public.checked_timestamp('approvedAt', NEW.approved_at);
        END IF;
        IF NEW.routed_at IS DISTINCT FROM OLD.routed_at THEN
            NEW.routed_at := public.checked_timestamp('routedAt', NEW.routed_at);
        END IF;
        IF NEW.recovered_at IS DISTINCT FROM OLD.recovered_at THEN
            NEW.recovered_at := public.checked_timestamp('recoveredAt', NEW.recovered_at);
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER orders_check_input BEFORE INSERT OR UPDATE ON public.orders
    FOR EACH ROW EXECUTE FUNCTION public.orders_check_input();

-- After 001's fills_before_insert (by name): its refusal rolls back what that one wrote.
CREATE FUNCTION public.fills_check_input() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW."timestamp" := public.checked_timestamp('timestamp', NEW."timestamp");
    RETURN NEW;
END
$$;

CREATE TRIGGER fills_check_input BEFORE INSERT ON public.fills
    FOR EACH ROW EXECUTE FUNCTION public.fills_check_input();

-- Default privileges (Supabase) would let every API role call these directly. Triggers need
-- no EXECUTE; the helpers run as the writer (and the tests read the horizon).
REVOKE ALL ON FUNCTION public.timestamp_horizon(), public.checked_timestamp(text, timestamptz),
    public.orders_check_input(), public.fills_check_input()
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT EXECUTE ON FUNCTION public.timestamp_horizon(), public.checked_timestamp(text, timestamptz)
    TO authenticated, service_role;
