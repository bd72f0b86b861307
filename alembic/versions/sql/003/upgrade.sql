CREATE TABLE order_limits (
    id boolean PRIMARY KEY DEFAULT true CONSTRAINT ck_order_limits_one_row CHECK (id),
    max_quantity integer NOT NULL DEFAULT 100000
        CONSTRAINT ck_order_limits_max_quantity CHECK (max_quantity > 0),
    -- NULL: no limit on the value of priced orders.
    max_notional numeric(16, 2) DEFAULT 5000000
        CONSTRAINT ck_order_limits_max_notional CHECK (max_notional > 0),
    -- Empty: every symbol may be traded.
    symbols text[] NOT NULL DEFAULT '{}'
        CONSTRAINT ck_order_limits_symbols CHECK (
            array_position(symbols, NULL) IS NULL
            AND array_to_string(symbols, ',') ~ '^([A-Z0-9.-]{1,10}(,|$))*$'
        ),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO order_limits DEFAULT VALUES;

ALTER TABLE order_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_limits FORCE ROW LEVEL SECURITY;
CREATE POLICY order_limits_read ON order_limits FOR SELECT
    TO authenticated, service_role, compliance_auditor USING (true);
CREATE POLICY order_limits_owner ON order_limits FOR ALL TO CURRENT_USER
    USING (true) WITH CHECK (true);
-- Supabase's default privileges grant ALL on new public tables to its API roles.
REVOKE ALL ON order_limits FROM PUBLIC, anon, authenticated, service_role, compliance_auditor;
GRANT SELECT ON order_limits TO authenticated, service_role, compliance_auditor;

ALTER TABLE orders
    ALTER COLUMN price TYPE numeric,
    ALTER COLUMN stop_loss TYPE numeric,
    ALTER COLUMN take_profit TYPE numeric,
    ADD CONSTRAINT ck_orders_prices_in_range CHECK (
        price <= 99999999.99 AND stop_loss <= 99999999.99 AND take_profit <= 99999999.99
    ),
    ADD CONSTRAINT ck_orders_prices_cents CHECK (
        scale(price) <= 2 AND scale(stop_loss) <= 2 AND scale(take_profit) <= 2
    ),
    ADD CONSTRAINT ck_orders_status_reason_length CHECK (char_length(status_reason) <= 500);

CREATE FUNCTION public.orders_check_rules() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    limits public.order_limits;
    buying boolean := NEW.side = 'BUY';
BEGIN
    SELECT * INTO limits FROM public.order_limits;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'order_limits has no row: orders cannot be checked' USING ERRCODE = 'OA500';
    END IF;

    NEW.symbol := upper(btrim(NEW.symbol));
    IF NEW.symbol !~ '^[A-Z0-9.-]{1,10}$' THEN
        RAISE EXCEPTION 'symbol must be 1 to 10 characters of A-Z, 0-9, ''.'' and ''-'''
            USING ERRCODE = 'OA422', COLUMN = 'symbol';
    END IF;
    IF cardinality(limits.symbols) > 0 AND NOT NEW.symbol = ANY (limits.symbols) THEN
        RAISE EXCEPTION 'symbol % is not on the list of tradable symbols', NEW.symbol
            USING ERRCODE = 'OA422', COLUMN = 'symbol';
    END IF;
    IF NEW.quantity IS NULL OR NEW.quantity < 1 OR NEW.quantity > limits.max_quantity THEN
        RAISE EXCEPTION 'quantity must be between 1 and %', limits.max_quantity
            USING ERRCODE = 'OA422', COLUMN = 'quantity';
    END IF;

    IF NEW.order_type = 'MARKET'::public.order_type_enum AND NEW.price IS NOT NULL THEN
        RAISE EXCEPTION 'a MARKET order takes no price' USING ERRCODE = 'OA422', COLUMN = 'price';
    ELSIF NEW.order_type <> 'MARKET'::public.order_type_enum AND NEW.price IS NULL THEN
        RAISE EXCEPTION 'a % order needs a price', NEW.order_type
            USING ERRCODE = 'OA422', COLUMN = 'price';
    END IF;
    NEW.price := public.orders_checked_money('price', NEW.price);
    NEW.stop_loss := public.orders_checked_money('stopLoss', NEW.stop_loss);
    NEW.take_profit := public.orders_checked_money('takeProfit', NEW.take_profit);

    -- A stop loss limits the loss: below the entry for a buy, above it for a sell;
    -- a take profit sits on the other side.
    IF NEW.stop_loss IS NOT NULL AND NEW.price IS NOT NULL
       AND (CASE WHEN buying THEN NEW.stop_loss >= NEW.price ELSE NEW.stop_loss <= NEW.price END) THEN
        RAISE EXCEPTION 'stopLoss must be % the price for a % order',
            CASE WHEN buying THEN 'below' ELSE 'above' END, NEW.side
            USING ERRCODE = 'OA422', COLUMN = 'stopLoss';
    END IF;
    IF NEW.take_profit IS NOT NULL AND NEW.price IS NOT NULL
       AND (CASE WHEN buying THEN NEW.take_profit <= NEW.price
                 ELSE NEW.take_profit >= NEW.price END) THEN
        RAISE EXCEPTION 'takeProfit must be % the price for a % order',
            CASE WHEN buying THEN 'above' ELSE 'below' END, NEW.side
            USING ERRCODE = 'OA422', COLUMN = 'takeProfit';
    END IF;
    IF NEW.stop_loss IS NOT NULL AND NEW.take_profit IS NOT NULL
       AND (CASE WHEN buying THEN NEW.stop_loss >= NEW.take_profit
                 ELSE NEW.stop_loss <= NEW.take_profit END) THEN
        RAISE EXCEPTION 'stopLoss must be % takeProfit for a % order',
            CASE WHEN buying THEN 'below' ELSE 'above' END, NEW.side
            USING ERRCODE = 'OA422', COLUMN = 'stopLoss';
    END IF;
    IF NEW.price IS NOT NULL AND limits.max_notional IS NOT NULL
       AND NEW.price * NEW.quantity > limits.max_notional THEN
        RAISE EXCEPTION 'order value % exceeds the maximum of % per order',
            NEW.price * NEW.quantity, limits.max_notional
            USING ERRCODE = 'OA422', COLUMN = 'quantity';
    END IF;

    IF NEW.expires_at IS NOT NULL AND NEW.expires_at <= now() THEN
        RAISE EXCEPTION 'expiresAt must be in the future' USING ERRCODE = 'OA422', COLUMN = 'expiresAt';
    END IF;
    IF NEW.client_order_id IS NOT NULL AND NEW.client_order_id !~ '^[\x20-\x7E]{1,64}$' THEN
        RAISE EXCEPTION 'clientOrderId must be 1 to 64 printable ASCII characters'
            USING ERRCODE = 'OA422', COLUMN = 'clientOrderId';
    END IF;
    RETURN NEW;
END
$$;

-- A price as the API takes it: positive, at most 99999999.99 (numeric(10, 2)), at most two
-- decimals, stored with exactly two.
CREATE FUNCTION public.orders_checked_money(field text, value numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL THEN
        RETURN NULL;
    END IF;
    IF value = 'NaN'::numeric OR value <= 0 THEN
        RAISE EXCEPTION '% must be greater than 0', field USING ERRCODE = 'OA422', COLUMN = field;
    END IF;
    IF value <> round(value, 2) THEN
        RAISE EXCEPTION '% may have at most 2 decimal places', field
            USING ERRCODE = 'OA422', COLUMN = field;
    END IF;
    IF value > 99999999.99 THEN
        RAISE EXCEPTION '% must be at most 99999999.99', field USING ERRCODE = 'OA422', COLUMN = field;
    END IF;
    RETURN round(value, 2);
END
$$;

CREATE TRIGGER orders_check_rules BEFORE INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION public.orders_check_rules();

-- Default privileges (Supabase) would let every API role call these directly. The trigger
-- needs no EXECUTE (triggers are not checked); its helper runs as the writer of orders.
REVOKE ALL ON FUNCTION orders_check_rules(), orders_checked_money(text, numeric)
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor;
GRANT EXECUTE ON FUNCTION orders_checked_money(text, numeric) TO authenticated, service_role;
