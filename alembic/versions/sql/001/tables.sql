-- Orders, fills and the immutable execution log (see the revision's docstring).
CREATE TYPE order_type_enum AS ENUM ('MARKET', 'LIMIT', 'STOP');
CREATE TYPE order_status_enum AS ENUM ('PENDING', 'FILLED', 'PARTIAL', 'REJECTED', 'CANCELLED');
CREATE TYPE action_enum AS ENUM (
    'SUBMITTED', 'APPROVED', 'EXECUTED', 'FILLED', 'REJECTED', 'CANCELLED', 'RECOVERED'
);

CREATE TABLE orders (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    trader_id uuid NOT NULL,
    client_order_id varchar(64),
    symbol varchar(10) NOT NULL,
    side varchar(4) NOT NULL,
    quantity integer NOT NULL,
    order_type order_type_enum NOT NULL,
    price numeric(10, 2),
    stop_loss numeric(10, 2),
    take_profit numeric(10, 2),
    status order_status_enum NOT NULL DEFAULT 'PENDING',
    filled_quantity integer NOT NULL DEFAULT 0,
    average_fill_price numeric(16, 6),
    status_reason text,
    error_code varchar(50),
    retry_attempt integer NOT NULL DEFAULT 0,
    approved_at timestamptz,
    routed_at timestamptz,
    recovered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    CONSTRAINT uq_orders_trader_client_order_id UNIQUE (trader_id, client_order_id),
    CONSTRAINT ck_orders_side CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT ck_orders_symbol CHECK (symbol ~ '^[A-Z0-9.-]{1,10}$'),
    CONSTRAINT ck_orders_client_order_id CHECK (
        client_order_id ~ '^[\x20-\x7E]{1,64}$'
    ),
    CONSTRAINT ck_orders_quantity_positive CHECK (quantity > 0),
    CONSTRAINT ck_orders_price_positive CHECK (price > 0),
    CONSTRAINT ck_orders_price_by_type CHECK ((order_type = 'MARKET') = (price IS NULL)),
    CONSTRAINT ck_orders_stop_loss_positive CHECK (stop_loss > 0),
    CONSTRAINT ck_orders_take_profit_positive CHECK (take_profit > 0),
    CONSTRAINT ck_orders_filled_quantity_range CHECK (
        filled_quantity >= 0 AND filled_quantity <= quantity
    ),
    CONSTRAINT ck_orders_average_fill_price_positive CHECK (average_fill_price > 0),
    CONSTRAINT ck_orders_average_fill_price_with_fills CHECK (
        (filled_quantity = 0) = (average_fill_price IS NULL)
    ),
    CONSTRAINT ck_orders_status_matches_fills CHECK (
        (status = 'FILLED') = (filled_quantity = quantity)
        AND (status <> 'PENDING' OR filled_quantity = 0)
        AND (status <> 'PARTIAL' OR filled_quantity > 0)
    ),
    CONSTRAINT ck_orders_retry_attempt CHECK (retry_attempt >= 0),
    CONSTRAINT ck_orders_expires_after_creation CHECK (expires_at > created_at)
);

CREATE TABLE fills (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id uuid NOT NULL REFERENCES orders (id) ON DELETE RESTRICT,
    trader_id uuid NOT NULL,
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    quantity_filled integer NOT NULL,
    price_at_fill numeric(10, 2) NOT NULL,
    venue varchar(50) NOT NULL,
    commission numeric(10, 2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_fills_quantity_filled_positive CHECK (quantity_filled > 0),
    CONSTRAINT ck_fills_price_at_fill_positive CHECK (price_at_fill > 0),
    CONSTRAINT ck_fills_commission_not_negative CHECK (commission >= 0),
    CONSTRAINT ck_fills_venue_not_blank CHECK (btrim(venue) <> '')
);

CREATE TABLE execution_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- RESTRICT: deleting an order must never take its audit trail with it.
    order_id uuid NOT NULL REFERENCES orders (id) ON DELETE RESTRICT,
    trader_id uuid NOT NULL,
    action action_enum NOT NULL,
    status order_status_enum,
    -- clock_timestamp: several rows written in one transaction keep their order.
    "timestamp" timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason text,
    retry_attempt integer,
    error_code varchar(50),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_execution_logs_retry_attempt CHECK (retry_attempt >= 0)
);

CREATE INDEX idx_orders_trader_created ON orders (trader_id, created_at DESC);
CREATE INDEX idx_orders_status ON orders (status);
CREATE INDEX idx_orders_trader_status ON orders (trader_id, status);
CREATE INDEX idx_fills_order ON fills (order_id);
CREATE INDEX idx_fills_timestamp ON fills ("timestamp" DESC);
CREATE INDEX idx_execution_logs_trader_timestamp ON execution_logs (trader_id, "timestamp" DESC);
CREATE INDEX idx_execution_logs_order ON execution_logs (order_id);
CREATE INDEX idx_execution_logs_action ON execution_logs (action);
