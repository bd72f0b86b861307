DROP TRIGGER IF EXISTS orders_check_rules ON orders;
DROP FUNCTION IF EXISTS orders_check_rules(), orders_checked_money(text, numeric);
ALTER TABLE orders
    DROP CONSTRAINT IF EXISTS ck_orders_prices_in_range,
    DROP CONSTRAINT IF EXISTS ck_orders_prices_cents,
    DROP CONSTRAINT IF EXISTS ck_orders_status_reason_length,
    ALTER COLUMN price TYPE numeric(10, 2),
    ALTER COLUMN stop_loss TYPE numeric(10, 2),
    ALTER COLUMN take_profit TYPE numeric(10, 2);
DROP TABLE IF EXISTS order_limits;
