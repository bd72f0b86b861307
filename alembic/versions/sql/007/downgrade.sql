DROP FUNCTION order_api_private.cancel_order(text, text, uuid, text, text[]);
DROP FUNCTION order_api_private.submit_order(text, text, jsonb);
DROP FUNCTION order_api_private.become(text, text);
DROP SCHEMA order_api_private;
