-- The dedupe ledger is per company: an event id is unique within its company, not across
-- companies. Cal.com sends byte-identical bodies to every company whose webhook watches the same
-- Cal.com user; with a global key, one company's copy was skipped as the other's duplicate.
-- (The booking event id now includes the company too; this makes the ledger itself unable to
-- let one tenant's event stand in for another's.)
--
-- event_id leads the key, so lookups by event id alone (tracing an event, the load test) still
-- use it. Rebuilding the primary key rewrites its index: on a large table, run it in a quiet
-- hour.
ALTER TABLE processed_events DROP CONSTRAINT processed_events_pkey;
ALTER TABLE processed_events ADD PRIMARY KEY (event_id, company_id);
