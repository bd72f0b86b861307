-- Positions and P&L (issue 20), derived from the fills and from nothing else.
--
-- Who may do what (grants below decide the commands, these policies the rows):
--
--                      positions              position_lots    market_prices
-- anon                 SELECT: no rows        -                SELECT: no rows
-- authenticated        SELECT own             -                SELECT all
-- service_role         SELECT all             -                SELECT, INSERT, UPDATE all
-- compliance_auditor   SELECT all             -                SELECT all
-- order_position_keeper SELECT, INSERT,       SELECT, INSERT,  -
--   (owns the fills      UPDATE all             UPDATE, DELETE
--    trigger only)                              all
--
-- Reading: public.trader_positions(trader_id, method), which refuses service_role and
-- compliance_auditor without a trader (OA422, the API's BAD_USER_INPUT) and shapes each row
-- through public.position_view (the contract's rounding, the market price).

-- One rounding rule for money and prices, half to even. PostgreSQL's round(numeric) rounds
-- half away from zero; at a tie that is already the even neighbour when the truncated
-- value's last digit is odd, so only the even case differs: keep the truncation.
CREATE FUNCTION public.round_half_even(value numeric, places integer) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN abs(value - trunc(value, places)) * power(10::numeric, places) = 0.5
             AND mod(trunc(value, places) * power(10::numeric, places), 2) = 0
        THEN trunc(value, places)
        ELSE round(value, places)
    END
$$;

CREATE TYPE public.cost_basis_method AS ENUM ('FIFO', 'AVERAGE_COST');

-- One row per trader, method and symbol. Amounts are exact (numeric without a scale):
-- rounding happens once, when read (position_view).
CREATE TABLE public.positions (
    trader_id uuid NOT NULL,
    method public.cost_basis_method NOT NULL,
    symbol varchar(10) NOT NULL,
    -- Signed: positive long, negative short.
    quantity integer NOT NULL DEFAULT 0,
    -- The method's entry price of the open quantity (6 decimals, half-even); NULL when flat.
    average_entry_price numeric(16, 6),
    -- What the open quantity cost by the method, exact and unsigned.
    open_cost numeric NOT NULL DEFAULT 0,
    -- Realized P&L, exact.
    realized_exact numeric NOT NULL DEFAULT 0,
    -- The two above in cents, half-even, as served: rounded once per fill here rather than
    -- at every read (a rounding call per row and column cost a read more than the rest).
    cost_basis numeric(16, 2) NOT NULL DEFAULT 0,
    realized_pnl numeric(16, 2) NOT NULL DEFAULT 0,
    -- Sums of cents: exact as they are.
    commissions numeric(16, 2) NOT NULL DEFAULT 0,
    -- Fills applied: orders each FIFO lot, and tells a subscriber whether a fill moved it.
    fills integer NOT NULL DEFAULT 0,
    -- The symbol's latest fill ("timestamp").
    updated_at timestamptz NOT NULL,
    CONSTRAINT pk_positions PRIMARY KEY (trader_id, method, symbol),
    CONSTRAINT ck_positions_entry_price_when_open CHECK (
        (quantity = 0) = (average_entry_price IS NULL)
    ),
    CONSTRAINT ck_positions_open_cost CHECK (open_cost >= 0 AND (quantity <> 0 OR open_cost = 0)),
    CONSTRAINT ck_positions_commissions CHECK (commissions >= 0),
    CONSTRAINT ck_positions_fills CHECK (fills >= 0)
);

-- FIFO's open lots, oldest first by lot (the position's fill ordinal). AVERAGE_COST needs
-- none: its average and quantity are its whole state.
CREATE TABLE public.position_lots (
    trader_id uuid NOT NULL,
    symbol varchar(10) NOT NULL,
    lot integer NOT NULL,
    -- Signed like the position; never 0 (a closed lot is deleted).
    quantity integer NOT NULL,
    price numeric(10, 2) NOT NULL,
    CONSTRAINT pk_position_lots PRIMARY KEY (trader_id, symbol, lot),
    CONSTRAINT ck_position_lots_quantity CHECK (quantity <> 0),
    CONSTRAINT ck_position_lots_price CHECK (price > 0)
);

-- The latest price the engine's venue reported per symbol (the engine writes it).
CREATE TABLE public.market_prices (
    symbol varchar(10) PRIMARY KEY,
    price numeric(10, 2) NOT NULL,
    -- When the venue first reported this price.
    reported_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_market_prices_price CHECK (price > 0),
    CONSTRAINT ck_market_prices_symbol CHECK (symbol ~ '^[A-Z0-9.-]{1,10}$')
);

-- The keeper: may maintain positions and read what a fill's order is, nothing else. Only
-- fills_update_positions runs as it (SECURITY DEFINER), so no API role writes positions.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'order_position_keeper') THEN
        CREATE ROLE order_position_keeper NOLOGIN NOINHERIT;
    ELSIF EXISTS (
        SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'order_position_keeper'
           AND (rolcanlogin OR rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb
                OR rolreplication OR rolinherit)
    ) THEN
        RAISE EXCEPTION 'role order_position_keeper exists with more than NOLOGIN NOINHERIT rights'
            USING HINT = 'it owns the positions trigger function: ALTER ROLE '
                         'order_position_keeper NOLOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS '
                         'NOCREATEROLE NOCREATEDB NOREPLICATION, then migrate again';
    END IF;
END
$$;
GRANT order_position_keeper TO CURRENT_USER;

ALTER TABLE public.positions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.positions FORCE ROW LEVEL SECURITY;
ALTER TABLE public.position_lots ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.position_lots FORCE ROW LEVEL SECURITY;
ALTER TABLE public.market_prices ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.market_prices FORCE ROW LEVEL SECURITY;

-- Exactly as for orders (001/policies.sql): one policy per role and command.
CREATE POLICY positions_trader_isolation ON public.positions FOR SELECT TO authenticated
    USING (trader_id = (SELECT auth.uid()));
CREATE POLICY positions_service_role_read ON public.positions FOR SELECT TO service_role
    USING (true);
CREATE POLICY positions_compliance_read ON public.positions FOR SELECT TO compliance_auditor
    USING (true);
CREATE POLICY positions_keeper ON public.positions FOR ALL TO order_position_keeper
    USING (true) WITH CHECK (true);
CREATE POLICY position_lots_keeper ON public.position_lots FOR ALL TO order_position_keeper
    USING (true) WITH CHECK (true);
-- The keeper reads a fill's order (its symbol and side) and nothing more (grants below).
CREATE POLICY orders_position_keeper ON public.orders FOR SELECT TO order_position_keeper
    USING (true);
-- Market data is the same for every trader; anon has no policy and sees none.
CREATE POLICY market_prices_read ON public.market_prices FOR SELECT
    TO authenticated, compliance_auditor USING (true);
CREATE POLICY market_prices_service_role ON public.market_prices FOR ALL TO service_role
    USING (true) WITH CHECK (true);

-- Supabase's default privileges grant everything on new tables to its API roles.
REVOKE ALL ON public.positions, public.position_lots, public.market_prices
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT SELECT ON public.positions, public.market_prices
    TO anon, authenticated, service_role, compliance_auditor;
GRANT INSERT (symbol, price, reported_at), UPDATE (price, reported_at)
    ON public.market_prices TO service_role;
GRANT USAGE ON SCHEMA public TO order_position_keeper;
GRANT SELECT, INSERT, UPDATE ON public.positions TO order_position_keeper;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.position_lots TO order_position_keeper;
GRANT SELECT (id, trader_id, symbol, side) ON public.orders TO order_position_keeper;
GRANT EXECUTE ON FUNCTION public.round_half_even(numeric, integer) TO order_position_keeper;

-- A fill moves both methods' positions of its order's trader and symbol, in the fill's
-- transaction. fills_after_insert (001, earlier by name) has updated the order row by now,
-- so its lock is held; fills of other orders in the same symbol queue on the position rows
-- (FIFO's first, then AVERAGE_COST's, always in that order: no deadlock). Fill order is
-- therefore the order fills are recorded in.
CREATE FUNCTION public.positions_apply_fill(fill public.fills) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fill_symbol varchar(10);
    direction integer;
    position_row public.positions;
    lot_row public.position_lots;
    each_method public.cost_basis_method;
    remaining integer;
    closing integer;
    new_quantity integer;
    entry numeric;
BEGIN
    SELECT o.symbol, CASE o.side WHEN 'BUY' THEN 1 ELSE -1 END
      INTO STRICT fill_symbol, direction
      FROM public.orders o WHERE o.id = fill.order_id;
    FOREACH each_method IN ARRAY ARRAY['FIFO', 'AVERAGE_COST']::public.cost_basis_method[] LOOP
        -- Most fills move a position that exists: one statement then, three for a new one.
        SELECT * INTO position_row FROM public.positions p
         WHERE p.trader_id = fill.trader_id AND p.method = each_method
           AND p.symbol = fill_symbol
           FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO public.positions (trader_id, method, symbol, updated_at)
            VALUES (fill.trader_id, each_method, fill_symbol, fill."timestamp")
            ON CONFLICT DO NOTHING;
            SELECT * INTO STRICT position_row FROM public.positions p
             WHERE p.trader_id = fill.trader_id AND p.method = each_method
               AND p.symbol = fill_symbol
               FOR UPDATE;
        END IF;
        new_quantity := position_row.quantity + direction * fill.quantity_filled;
        IF position_row.quantity = 0 OR sign(position_row.quantity) = direction THEN
            -- The fill adds to the position (or opens it).
            IF each_method = 'FIFO' THEN
                INSERT INTO public.position_lots (trader_id, symbol, lot, quantity, price)
                VALUES (fill.trader_id, fill_symbol, position_row.fills + 1,
                        direction * fill.quantity_filled, fill.price_at_fill);
                position_row.open_cost := position_row.open_cost
                    + fill.quantity_filled * fill.price_at_fill;
            ELSE
                position_row.average_entry_price := public.round_half_even(
                    round(coalesce(position_row.average_entry_price, 0)
                          * abs(position_row.quantity)
                          + fill.quantity_filled * fill.price_at_fill, 30) / abs(new_quantity), 6);
            END IF;
        ELSIF each_method = 'FIFO' THEN
            -- It closes the oldest lots first; what is left opens the other side.
            remaining := fill.quantity_filled;
            FOR lot_row IN
                SELECT * FROM public.position_lots l
                 WHERE l.trader_id = fill.trader_id AND l.symbol = fill_symbol
                 ORDER BY l.lot
            LOOP
                closing := least(remaining, abs(lot_row.quantity));
                position_row.realized_exact := position_row.realized_exact
                    + closing * (fill.price_at_fill - lot_row.price) * sign(lot_row.quantity);
                position_row.open_cost := position_row.open_cost - closing * lot_row.price;
                remaining := remaining - closing;
                IF closing = abs(lot_row.quantity) THEN
                    DELETE FROM public.position_lots l
                     WHERE l.trader_id = fill.trader_id AND l.symbol = fill_symbol
                       AND l.lot = lot_row.lot;
                ELSE
                    UPDATE public.position_lots l SET quantity = l.quantity + direction * closing
                     WHERE l.trader_id = fill.trader_id AND l.symbol = fill_symbol
                       AND l.lot = lot_row.lot;
                END IF;
                EXIT WHEN remaining = 0;
            END LOOP;
            IF remaining > 0 THEN
                INSERT INTO public.position_lots (trader_id, symbol, lot, quantity, price)
                VALUES (fill.trader_id, fill_symbol, position_row.fills + 1,
                        direction * remaining, fill.price_at_fill);
                position_row.open_cost := remaining * fill.price_at_fill;
            END IF;
        ELSE
            -- AVERAGE_COST: the closed quantity is priced at the average; a zero crossing
            -- opens the rest at the fill's price.
            entry := position_row.average_entry_price;
            closing := least(fill.quantity_filled, abs(position_row.quantity));
            position_row.realized_exact := position_row.realized_exact
                + closing * (fill.price_at_fill - entry) * sign(position_row.quantity);
            IF new_quantity <> 0 AND sign(new_quantity) = direction THEN
                position_row.average_entry_price := fill.price_at_fill;
            END IF;
        END IF;
        IF new_quantity = 0 THEN
            position_row.average_entry_price := NULL;
            position_row.open_cost := 0;
        ELSIF each_method = 'FIFO' THEN
            -- A quotient is rounded to the dividend's scale at least: 30 decimals keep it far
            -- closer to the true value than any cost / quantity lies to a rounding tie, so the
            -- half-even rounding below never sees a tie that is not one.
            position_row.average_entry_price :=
                public.round_half_even(round(position_row.open_cost, 30) / abs(new_quantity), 6);
        ELSE
            position_row.open_cost := position_row.average_entry_price * abs(new_quantity);
        END IF;
        UPDATE public.positions p
           SET quantity = new_quantity,
               average_entry_price = position_row.average_entry_price,
               open_cost = position_row.open_cost,
               realized_exact = position_row.realized_exact,
               cost_basis = public.round_half_even(position_row.open_cost, 2),
               realized_pnl = public.round_half_even(position_row.realized_exact, 2),
               commissions = p.commissions + fill.commission,
               fills = p.fills + 1,
               updated_at = greatest(p.updated_at, fill."timestamp")
         WHERE p.trader_id = fill.trader_id AND p.method = each_method
           AND p.symbol = fill_symbol;
    END LOOP;
END
$$;

CREATE FUNCTION public.fills_update_positions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM public.positions_apply_fill(NEW);
    RETURN NULL;
END
$$;

-- What the fills recorded before this revision made of positions, in the order they were
-- recorded: the same function, run once over them, as the keeper (which reads the fills for
-- this alone: the function, the grant and the policy go again right after).
CREATE FUNCTION public.positions_replay_fills() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    replayed bigint := 0;
    fill public.fills;
BEGIN
    FOR fill IN SELECT * FROM public.fills f ORDER BY f.created_at, f."timestamp", f.id LOOP
        PERFORM public.positions_apply_fill(fill);
        replayed := replayed + 1;
    END LOOP;
    RETURN replayed;
END
$$;
GRANT SELECT ON public.fills TO order_position_keeper;
CREATE POLICY fills_position_replay ON public.fills FOR SELECT TO order_position_keeper
    USING (true);

-- ALTER FUNCTION ... OWNER needs the new owner to hold CREATE on the schema at that moment.
GRANT CREATE ON SCHEMA public TO order_position_keeper;
ALTER FUNCTION public.positions_apply_fill(public.fills) OWNER TO order_position_keeper;
ALTER FUNCTION public.fills_update_positions() OWNER TO order_position_keeper;
ALTER FUNCTION public.positions_replay_fills() OWNER TO order_position_keeper;
REVOKE CREATE ON SCHEMA public FROM order_position_keeper;
REVOKE ALL ON FUNCTION public.positions_replay_fills()
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;

DO $$
DECLARE
    replayed bigint := public.positions_replay_fills();
BEGIN
    RAISE NOTICE 'positions: % fills recorded before migration 012 replayed', replayed;
END
$$;
DROP FUNCTION public.positions_replay_fills();
DROP POLICY fills_position_replay ON public.fills;
REVOKE SELECT ON public.fills FROM order_position_keeper;

-- After 001's fills_after_insert (by name), which locks and updates the order.
CREATE TRIGGER fills_update_positions AFTER INSERT ON public.fills
    FOR EACH ROW EXECUTE FUNCTION public.fills_update_positions();

-- The contract's Position, shaped once here. Rounded as stored (half-even, by the trigger);
-- a market value (cents x shares) is exact in cents; only the unrealized P&L needs rounding
-- here, since the market price moves without a fill. security_invoker: the caller's row
-- level security on positions and prices.
CREATE VIEW public.position_view WITH (security_invoker = true) AS
SELECT p.trader_id,
       p.method,
       p.symbol,
       p.quantity,
       p.average_entry_price,
       p.cost_basis,
       p.realized_pnl,
       p.commissions,
       m.price AS market_price,
       m.price * p.quantity AS market_value,
       public.round_half_even(
           (m.price - coalesce(p.average_entry_price, m.price)) * p.quantity, 2
       ) AS unrealized_pnl,
       p.fills,
       p.updated_at
  FROM public.positions p
  LEFT JOIN public.market_prices m ON m.symbol = p.symbol;

REVOKE ALL ON public.position_view
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT SELECT ON public.position_view TO anon, authenticated, service_role, compliance_auditor;

-- Query.positions. A trader reads its own whatever trader_id says (row level security);
-- the roles that see every trader must name one, so that nobody reads all positions by
-- accident, and plain SQL gets the API's answer (OA422 is the API's BAD_USER_INPUT).
CREATE FUNCTION public.trader_positions(
    trader_id uuid, method public.cost_basis_method DEFAULT 'FIFO'
) RETURNS SETOF public.position_view
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF trader_positions.trader_id IS NULL AND current_user NOT IN ('authenticated', 'anon') THEN
        RAISE EXCEPTION 'traderId is required for role %', current_user
            USING ERRCODE = 'OA422', COLUMN = 'traderId';
    END IF;
    RETURN QUERY
        SELECT v.* FROM public.position_view v
         WHERE v.method = trader_positions.method
           AND (trader_positions.trader_id IS NULL OR v.trader_id = trader_positions.trader_id)
         ORDER BY v.symbol;
END
$$;

REVOKE ALL ON FUNCTION public.round_half_even(numeric, integer),
    public.positions_apply_fill(public.fills), public.fills_update_positions(),
    public.trader_positions(uuid, public.cost_basis_method)
    FROM PUBLIC, anon, authenticated, service_role, compliance_auditor, authenticator;
GRANT EXECUTE ON FUNCTION public.round_half_even(numeric, integer),
    public.trader_positions(uuid, public.cost_basis_method)
    TO anon, authenticated, service_role, compliance_auditor;
