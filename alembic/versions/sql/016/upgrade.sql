-- Order events (issue 20): a trader's audit rows in the stream's order, so that a read of a
-- trader's stream after a cursor is one index range in (stream_key, seq) order, whatever the
-- trader's history. See 016_order_event_trader_index.py for what it replaced and costs.
CREATE INDEX idx_execution_logs_trader_stream
    ON public.execution_logs (trader_id, stream_key, seq);
