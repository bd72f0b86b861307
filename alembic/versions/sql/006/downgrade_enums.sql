DROP POLICY orders_trader_submit ON public.orders;
DROP POLICY orders_trader_cancel ON public.orders;
ALTER TABLE public.orders
    DROP CONSTRAINT ck_orders_price_by_type,
    DROP CONSTRAINT ck_orders_status_matches_fills,
    ALTER COLUMN status DROP DEFAULT;
ALTER TYPE public.order_type_enum RENAME TO order_type_enum_006;
ALTER TYPE public.order_status_enum RENAME TO order_status_enum_006;
ALTER TYPE public.action_enum RENAME TO action_enum_006;
CREATE TYPE public.order_type_enum AS ENUM ('MARKET', 'LIMIT', 'STOP');
CREATE TYPE public.order_status_enum AS ENUM ('PENDING', 'FILLED', 'PARTIAL', 'REJECTED', 'CANCELLED');
CREATE TYPE public.action_enum AS ENUM (
    'SUBMITTED', 'APPROVED', 'EXECUTED', 'FILLED', 'REJECTED', 'CANCELLED', 'RECOVERED'
);
ALTER TABLE public.orders
    ALTER COLUMN order_type TYPE public.order_type_enum
        USING order_type::text::public.order_type_enum,
    ALTER COLUMN status TYPE public.order_status_enum USING status::text::public.order_status_enum;
ALTER TABLE public.execution_logs
    ALTER COLUMN action TYPE public.action_enum USING action::text::public.action_enum,
    ALTER COLUMN status TYPE public.order_status_enum USING status::text::public.order_status_enum;
DROP TYPE public.order_type_enum_006, public.order_status_enum_006, public.action_enum_006;
ALTER TABLE public.orders
    ALTER COLUMN status SET DEFAULT 'PENDING',
    ADD CONSTRAINT ck_orders_price_by_type CHECK ((order_type = 'MARKET') = (price IS NULL)),
    ADD CONSTRAINT ck_orders_status_matches_fills CHECK (
        (status = 'FILLED') = (filled_quantity = quantity)
        AND (status <> 'PENDING' OR filled_quantity = 0)
        AND (status <> 'PARTIAL' OR filled_quantity > 0)
    );
CREATE POLICY orders_trader_submit ON public.orders FOR INSERT TO authenticated
    WITH CHECK (trader_id = (SELECT auth.uid()) AND status = 'PENDING');
CREATE POLICY orders_trader_cancel ON public.orders FOR UPDATE TO authenticated
    USING (trader_id = (SELECT auth.uid()))
    WITH CHECK (trader_id = (SELECT auth.uid()) AND status = 'CANCELLED');
