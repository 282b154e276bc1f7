-- The retention pass walks a company's calls by age, counted from the first event (not the
-- last, as migration 17 said). First, not
-- last: first_event_at is set when the call is created and an event almost never moves it,
-- while last_event_at moves with every event, and an index on it would be rewritten by each one.
-- Calls whose content is still there, for the content removal:
DROP INDEX calls_company_last_event;
CREATE INDEX calls_content_kept ON calls (company_id, first_event_at) WHERE content_removed_at IS NULL;
-- Every call, for the deletion:
CREATE INDEX calls_company_first_event ON calls (company_id, first_event_at);
