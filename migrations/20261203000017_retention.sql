-- How long a company keeps what its callers said (README, "Retention and erasure").
--
-- After retention_content_days (NULL: the worker's --retention-content-days) a call's
-- transcript, summary, analysis, sentiment and recording addresses are removed; after
-- retention_call_days (NULL: --retention-call-days) the call itself is deleted (an appointment
-- it made stays, without the link). Ages count from the call's last event.
ALTER TABLE companies
    ADD COLUMN retention_content_days integer CHECK (retention_content_days > 0),
    ADD COLUMN retention_call_days    integer CHECK (retention_call_days > 0),
    ADD CONSTRAINT companies_retention_order
        CHECK (retention_call_days IS NULL OR retention_content_days IS NULL
               OR retention_call_days >= retention_content_days);

-- Set when a call's content was removed (by retention or by erasing its caller). From then on
-- no event fills it in again, however late it arrives.
ALTER TABLE calls ADD COLUMN content_removed_at timestamptz;

-- The retention pass walks calls by age within a company.
CREATE INDEX calls_company_last_event ON calls (company_id, last_event_at);
-- And prunes the dedupe ledger by age.
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);

-- A call whose caller was erased keeps no link to a customer and says so.
ALTER TABLE calls DROP CONSTRAINT calls_customer_link_check;
ALTER TABLE calls ADD CONSTRAINT calls_customer_link_check
    CHECK (customer_link IN ('pending', 'exact_phone', 'created', 'anonymous', 'unparseable', 'no_number', 'erased'));
