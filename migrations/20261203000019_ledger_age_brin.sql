-- The ledger's age index (migration 17) as BRIN: rows arrive in processed_at order, so a block
-- range summary finds the old ones as well as a B-tree would, and costs an insert next to
-- nothing. Every event inserts a ledger row; only the hourly retention pass reads this index.
DROP INDEX processed_events_processed_at;
CREATE INDEX processed_events_processed_at ON processed_events USING brin (processed_at);
