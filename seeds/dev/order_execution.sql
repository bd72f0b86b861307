-- Dev seed: three traders with orders of every type, status and time in force, their fills
-- and audit trails.
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f seeds/dev/order_execution.sql
--
-- Load it as the database owner into a database migrated to head (see seeds/dev/README.md).
-- Everything happens as service_role, the execution engine's role (in two transactions: see
-- the last), so the row level security policies, the lifecycle triggers and the grants judge
-- every write exactly as they judge the engine's: the seed works for a superuser owner (the
-- embedded dev server) and for one that is not (Supabase's postgres, which FORCE ROW LEVEL
-- SECURITY binds).
--
-- The seed never writes execution_logs (nobody can): the triggers write the audit rows while
-- the seed walks each order through its lifecycle. Each order is a DO block that does nothing
-- when its fixed id already exists, and fills have fixed ids too, so loading twice changes
-- nothing.
--
-- Traders:  11111111-1111-4111-8111-111111111111  Alice
--           22222222-2222-4222-8222-222222222222  Bob
--           33333333-3333-4333-8333-333333333333  Carol

BEGIN;

-- The engine's role and claims, transaction-locally: the same as the API's
-- set_config('role', ..., true) and set_config('request.jwt.claims', ..., true).
SET LOCAL ROLE service_role;
SET LOCAL request.jwt.claims = '{"role":"service_role"}';

-- Alice 1: MARKET BUY 100 AAPL, filled at once on NASDAQ -> FILLED
DO $$
DECLARE
    o constant uuid := 'a1000000-0000-4000-8000-000000000001';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type)
    VALUES (o, '11111111-1111-4111-8111-111111111111', 'alice-0001', 'AAPL', 'BUY', 100, 'MARKET');
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to NASDAQ' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f1000000-0000-4000-8000-000000000001', o, 100, 189.50, 'NASDAQ', 1.00)
    ON CONFLICT (id) DO NOTHING;
END
$$;

-- Alice 2: LIMIT BUY 200 MSFT at 410.00, 120 filled on NASDAQ -> PARTIAL
DO $$
DECLARE
    o constant uuid := 'a1000000-0000-4000-8000-000000000002';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type,
                        price, take_profit)
    VALUES (o, '11111111-1111-4111-8111-111111111111', 'alice-0002', 'MSFT', 'BUY', 200, 'LIMIT',
            410.00, 440.00);
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to NASDAQ' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f1000000-0000-4000-8000-000000000002', o, 120, 409.80, 'NASDAQ', 1.20)
    ON CONFLICT (id) DO NOTHING;
END
$$;

-- Alice 3: STOP SELL 50 TSLA at 240.00, submitted only, expires in a week -> PENDING
DO $$
DECLARE
    o constant uuid := 'a1000000-0000-4000-8000-000000000003';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type,
                        price, stop_loss, expires_at)
    VALUES (o, '11111111-1111-4111-8111-111111111111', 'alice-0003', 'TSLA', 'SELL', 50, 'STOP',
            240.00, 245.00, now() + interval '7 days');
END
$$;

-- Alice 4: LIMIT SELL 10 NVDA at 900.00, cancelled by Alice before approval -> CANCELLED
DO $$
DECLARE
    o constant uuid := 'a1000000-0000-4000-8000-000000000004';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type, price)
    VALUES (o, '11111111-1111-4111-8111-111111111111', 'alice-0004', 'NVDA', 'SELL', 10, 'LIMIT',
            900.00);
    UPDATE orders SET status = 'CANCELLED', status_reason = 'cancelled by trader' WHERE id = o;
END
$$;

-- Bob 1: LIMIT BUY 300 SPY at 500.00, one failed routing attempt, then two fills on NYSE
-- -> FILLED
DO $$
DECLARE
    o constant uuid := 'b2000000-0000-4000-8000-000000000001';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type, price)
    VALUES (o, '22222222-2222-4222-8222-222222222222', 'bob-0001', 'SPY', 'BUY', 300, 'LIMIT',
            500.00);
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET retry_attempt = 1, error_code = 'VENUE_TIMEOUT',
                      status_reason = 'NYSE did not answer within 5s; will retry'
     WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to NYSE' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f2000000-0000-4000-8000-000000000001', o, 100, 499.90, 'NYSE', 1.00)
    ON CONFLICT (id) DO NOTHING;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f2000000-0000-4000-8000-000000000002', o, 200, 499.95, 'NYSE', 1.50)
    ON CONFLICT (id) DO NOTHING;
END
$$;

-- Bob 2: MARKET SELL 1000 AMC, refused by the risk check -> REJECTED
DO $$
DECLARE
    o constant uuid := 'b2000000-0000-4000-8000-000000000002';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type)
    VALUES (o, '22222222-2222-4222-8222-222222222222', 'bob-0002', 'AMC', 'SELL', 1000, 'MARKET');
    UPDATE orders SET status = 'REJECTED', error_code = 'INSUFFICIENT_POSITION',
                      status_reason = 'selling 1000 AMC but holding 0'
     WHERE id = o;
END
$$;

-- Bob 3: STOP BUY 25 AMZN at 185.00, routed, resumed by a restarted worker -> PENDING
DO $$
DECLARE
    o constant uuid := 'b2000000-0000-4000-8000-000000000003';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type, price)
    VALUES (o, '22222222-2222-4222-8222-222222222222', 'bob-0003', 'AMZN', 'BUY', 25, 'STOP',
            185.00);
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to NASDAQ' WHERE id = o;
    UPDATE orders SET recovered_at = now(), status_reason = 'resumed after a worker restart'
     WHERE id = o;
END
$$;

-- Bob 4: MARKET BUY 40 BRK.B, 15 filled on the Mock venue, then cancelled -> CANCELLED
DO $$
DECLARE
    o constant uuid := 'b2000000-0000-4000-8000-000000000004';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type)
    VALUES (o, '22222222-2222-4222-8222-222222222222', 'bob-0004', 'BRK.B', 'BUY', 40, 'MARKET');
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to Mock' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f2000000-0000-4000-8000-000000000003', o, 15, 451.20, 'Mock', 0.00)
    ON CONFLICT (id) DO NOTHING;
    UPDATE orders SET status = 'CANCELLED', status_reason = 'cancelled by trader' WHERE id = o;
END
$$;

-- Carol 1: MARKET BUY 5 GOOGL, three failed routing attempts, given up -> REJECTED
DO $$
DECLARE
    o constant uuid := 'c3000000-0000-4000-8000-000000000001';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type)
    VALUES (o, '33333333-3333-4333-8333-333333333333', 'carol-0001', 'GOOGL', 'BUY', 5, 'MARKET');
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET retry_attempt = 1, error_code = 'VENUE_UNAVAILABLE',
                      status_reason = 'NASDAQ unavailable; will retry'
     WHERE id = o;
    UPDATE orders SET retry_attempt = 2, error_code = 'VENUE_UNAVAILABLE',
                      status_reason = 'NASDAQ unavailable; will retry'
     WHERE id = o;
    UPDATE orders SET retry_attempt = 3, error_code = 'VENUE_UNAVAILABLE',
                      status_reason = 'NASDAQ unavailable; will retry'
     WHERE id = o;
    UPDATE orders SET status = 'REJECTED', error_code = 'MAX_RETRIES',
                      status_reason = 'gave up after 3 attempts'
     WHERE id = o;
END
$$;

-- Carol 2: LIMIT BUY 500 F at 12.00, 300 filled on the Mock venue and NYSE -> PARTIAL
DO $$
DECLARE
    o constant uuid := 'c3000000-0000-4000-8000-000000000002';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type,
                        price, stop_loss)
    VALUES (o, '33333333-3333-4333-8333-333333333333', 'carol-0002', 'F', 'BUY', 500, 'LIMIT',
            12.00, 11.00);
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to Mock' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f3000000-0000-4000-8000-000000000001', o, 200, 11.99, 'Mock', 0.00)
    ON CONFLICT (id) DO NOTHING;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f3000000-0000-4000-8000-000000000002', o, 100, 12.00, 'NYSE', 1.00)
    ON CONFLICT (id) DO NOTHING;
END
$$;

-- Carol 3: STOP SELL 60 META at 480.00, with stop loss and take profit, filled on NASDAQ
-- -> FILLED
DO $$
DECLARE
    o constant uuid := 'c3000000-0000-4000-8000-000000000003';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type,
                        price, stop_loss, take_profit)
    VALUES (o, '33333333-3333-4333-8333-333333333333', 'carol-0003', 'META', 'SELL', 60, 'STOP',
            480.00, 520.00, 470.00);
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to NASDAQ' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f3000000-0000-4000-8000-000000000003', o, 60, 479.50, 'NASDAQ', 1.00)
    ON CONFLICT (id) DO NOTHING;
END
$$;

-- Carol 4: LIMIT SELL 80 IBM at 190.00, approved and waiting to be routed -> PENDING
DO $$
DECLARE
    o constant uuid := 'c3000000-0000-4000-8000-000000000004';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type, price)
    VALUES (o, '33333333-3333-4333-8333-333333333333', 'carol-0004', 'IBM', 'SELL', 80, 'LIMIT',
            190.00);
    UPDATE orders SET approved_at = now() WHERE id = o;
END
$$;

-- Alice 5: STOP_LIMIT BUY 20 AAPL, stop 195.00, limit 196.00, DAY (the database sets
-- expires_at to the session close); triggered, filled on NASDAQ within its limit -> FILLED
DO $$
DECLARE
    o constant uuid := 'a1000000-0000-4000-8000-000000000005';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type,
                        price, stop_price, time_in_force)
    VALUES (o, '11111111-1111-4111-8111-111111111111', 'alice-0005', 'AAPL', 'BUY', 20,
            'STOP_LIMIT', 196.00, 195.00, 'DAY');
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to NASDAQ' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f1000000-0000-4000-8000-000000000003', o, 20, 195.80, 'NASDAQ', 1.00)
    ON CONFLICT (id) DO NOTHING;
END
$$;

-- Bob 5: LIMIT BUY 50 SPY at 495.00, IOC: 30 filled on NYSE at once, the rest cancelled at
-- once -> CANCELLED
DO $$
DECLARE
    o constant uuid := 'b2000000-0000-4000-8000-000000000005';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type,
                        price, time_in_force)
    VALUES (o, '22222222-2222-4222-8222-222222222222', 'bob-0005', 'SPY', 'BUY', 50, 'LIMIT',
            495.00, 'IOC');
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to NYSE' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f2000000-0000-4000-8000-000000000004', o, 30, 494.90, 'NYSE', 0.50)
    ON CONFLICT (id) DO NOTHING;
    UPDATE orders SET status = 'CANCELLED', status_reason = 'IOC: the unfilled rest cancelled'
     WHERE id = o;
END
$$;

-- Bob 6: MARKET BUY 10 QQQ, FOK: all 10 filled on NASDAQ at once -> FILLED
DO $$
DECLARE
    o constant uuid := 'b2000000-0000-4000-8000-000000000006';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type,
                        time_in_force)
    VALUES (o, '22222222-2222-4222-8222-222222222222', 'bob-0006', 'QQQ', 'BUY', 10, 'MARKET',
            'FOK');
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to NASDAQ' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f2000000-0000-4000-8000-000000000005', o, 10, 480.25, 'NASDAQ', 1.00)
    ON CONFLICT (id) DO NOTHING;
END
$$;

-- Carol 6 and 7: LIMIT BUY 100 INTC at 30.00, 40 filled on NYSE, then replaced by a total of
-- 150 at 30.50 (Carol 7: replaces_id; the database stores the 110 left to buy). The venue
-- confirmed: Carol 6 -> REPLACED (replaced_by_id), Carol 7 approved -> PENDING
DO $$
DECLARE
    o constant uuid := 'c3000000-0000-4000-8000-000000000006';
    n constant uuid := 'c3000000-0000-4000-8000-000000000007';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type, price)
    VALUES (o, '33333333-3333-4333-8333-333333333333', 'carol-0006', 'INTC', 'BUY', 100, 'LIMIT',
            30.00);
    UPDATE orders SET approved_at = now() WHERE id = o;
    UPDATE orders SET routed_at = now(), status_reason = 'sent to NYSE' WHERE id = o;
    INSERT INTO fills (id, order_id, quantity_filled, price_at_fill, venue, commission)
    VALUES ('f3000000-0000-4000-8000-000000000004', o, 40, 29.98, 'NYSE', 0.40)
    ON CONFLICT (id) DO NOTHING;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type, price,
                        replaces_id)
    VALUES (n, '33333333-3333-4333-8333-333333333333', 'carol-0007', 'INTC', 'BUY', 150, 'LIMIT',
            30.50, o);
    UPDATE orders SET status = 'REPLACED', replaced_by_id = n, status_reason = 'replaced'
     WHERE id = o;
    UPDATE orders SET approved_at = now() WHERE id = n;
END
$$;

-- Carol 5: MARKET SELL 30 KO, GTC until its expiresAt, which passed before approval
-- -> EXPIRED. Submitted here with an expiry a moment after this transaction began; an order
-- may only expire in a later transaction (the database's now() must have reached it).
DO $$
DECLARE
    o constant uuid := 'c3000000-0000-4000-8000-000000000005';
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE id = o) THEN RETURN; END IF;
    INSERT INTO orders (id, trader_id, client_order_id, symbol, side, quantity, order_type,
                        expires_at)
    VALUES (o, '33333333-3333-4333-8333-333333333333', 'carol-0005', 'KO', 'SELL', 30, 'MARKET',
            clock_timestamp());
END
$$;

COMMIT;

-- The second and last transaction: the engine expires Carol 5 (its expiresAt has passed).
-- Loaded again, it finds Carol 5 EXPIRED already and changes nothing.
BEGIN;
SET LOCAL ROLE service_role;
SET LOCAL request.jwt.claims = '{"role":"service_role"}';

UPDATE orders SET status = 'EXPIRED', status_reason = 'expired'
 WHERE id = 'c3000000-0000-4000-8000-000000000005' AND status = 'PENDING';

COMMIT;
