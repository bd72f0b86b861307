ALTER TYPE public.order_type_enum ADD VALUE 'STOP_LIMIT';
ALTER TYPE public.order_status_enum ADD VALUE 'EXPIRED';
ALTER TYPE public.order_status_enum ADD VALUE 'REPLACED';
ALTER TYPE public.action_enum ADD VALUE 'EXPIRED';
ALTER TYPE public.action_enum ADD VALUE 'REPLACED';
CREATE TYPE public.time_in_force_enum AS ENUM ('DAY', 'GTC', 'IOC', 'FOK');

-- The new labels are compared as text: they cannot be used before this transaction commits.
ALTER TABLE public.orders
    ADD COLUMN stop_price numeric,
    ADD COLUMN time_in_force public.time_in_force_enum NOT NULL DEFAULT 'GTC',
    ADD COLUMN replaces_id uuid REFERENCES public.orders (id) ON DELETE RESTRICT,
    ADD COLUMN replaced_by_id uuid REFERENCES public.orders (id) ON DELETE RESTRICT,
    ADD CONSTRAINT ck_orders_stop_price_by_type CHECK (
        (order_type::text = 'STOP_LIMIT') = (stop_price IS NOT NULL)
    ),
    ADD CONSTRAINT ck_orders_stop_price_money CHECK (
        stop_price > 0 AND stop_price <= 99999999.99 AND scale(stop_price) <= 2
    ),
    -- A stop waits for its trigger price: "at once" makes no sense for it.
    ADD CONSTRAINT ck_orders_time_in_force_by_type CHECK (
        time_in_force NOT IN ('IOC', 'FOK') OR order_type::text NOT IN ('STOP', 'STOP_LIMIT')
    ),
    ADD CONSTRAINT ck_orders_time_in_force_expiry CHECK (
        time_in_force NOT IN ('IOC', 'FOK') OR expires_at IS NULL
    ),
    ADD CONSTRAINT ck_orders_replaces_another CHECK (replaces_id <> id),
    ADD CONSTRAINT ck_orders_replaced_by_another CHECK (replaced_by_id <> id),
    ADD CONSTRAINT ck_orders_replaced_status CHECK (
        (status::text = 'REPLACED') = (replaced_by_id IS NOT NULL)
    );
-- At most one replacement of an order waits for the venue (an unconfirmed one is PENDING).
CREATE UNIQUE INDEX uq_orders_pending_replacement ON public.orders (replaces_id)
    WHERE status = 'PENDING';
