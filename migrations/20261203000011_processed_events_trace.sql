-- The trace id each event was answered with (the gateway's x-request-id, also in the Kafka
-- record and the log lines), so `call show` can tie an applied event to its request.
-- Rows written before this migration have none.
ALTER TABLE processed_events ADD COLUMN trace_id text;
