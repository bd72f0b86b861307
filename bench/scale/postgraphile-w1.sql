-- PostGraphile 5's statement for W1 (bench/scale/workloads.py's POSTGRAPHILE document), as
-- PostgreSQL's statement log recorded it (log_statement = all, one request per trader) on
-- 2026-12-08 with bench/postgraphile at its pinned version. PostGraphile sends it after
-- `begin` and its settings statement, then `commit`: four round trips, as this API does.
-- Its row filter is the RLS policy alone; it returns text arrays and builds the JSON in Node.
select
	__orders__."id" as "0",
	__orders__."symbol" as "1",
	__orders__."side" as "2",
	__orders__."quantity"::text as "3",
	__orders__."order_type"::text as "4",
	__orders__."price"::text as "5",
	__orders__."status"::text as "6",
	__orders__."filled_quantity"::text as "7",
	__orders__."average_fill_price"::text as "8",
	to_char(__orders__."created_at", 'YYYY-MM-DD"T"HH24:MI:SS.USTZH:TZM'::text) as "9",
	array(select array[
	__fills__."id",
	__fills__."quantity_filled"::text,
	__fills__."price_at_fill"::text,
	__fills__."venue",
	__fills__."commission"::text,
	to_char(__fills__."timestamp", 'YYYY-MM-DD"T"HH24:MI:SS.USTZH:TZM'::text)
	]::text[]
	from "public"."fills" as __fills__
	where (__fills__."order_id" = __orders__."id")
	order by __fills__."timestamp" asc, __fills__."id" asc)::text as "10"
	from "public"."orders" as __orders__
	order by __orders__."created_at" desc, __orders__."id" desc
	limit 21;
