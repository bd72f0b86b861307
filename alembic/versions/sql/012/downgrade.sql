-- Back to exactly 011: positions, their lots, the market prices and what reads them.
-- order_position_keeper is cluster-wide and stays, holding nothing here (as 002's role).
DROP FUNCTION public.trader_positions(uuid, public.cost_basis_method);
DROP VIEW public.position_view;
DROP TRIGGER fills_update_positions ON public.fills;
DROP FUNCTION public.fills_update_positions();
DROP FUNCTION public.positions_apply_fill(public.fills);
DROP POLICY orders_position_keeper ON public.orders;
REVOKE ALL ON public.orders FROM order_position_keeper;
DROP TABLE public.market_prices, public.position_lots, public.positions;
DROP TYPE public.cost_basis_method;
DROP FUNCTION public.round_half_even(numeric, integer);
REVOKE USAGE ON SCHEMA public FROM order_position_keeper;
REVOKE order_position_keeper FROM CURRENT_USER;
