-- A call is written once per batch that holds one of its events, and most events reach it in
-- later batches (started, ended, analysed minutes apart), so most of its writes are updates.
-- Two things kept them from being heap-only (HOT: the new version on the same page, no index
-- entry rewritten; BENCHMARKS.md, "Calls updated in place"):
--
-- 1. calls_company_started indexed started_at, which a later event often sets or corrects.
--    Nothing reads that index: listing a company's calls by time uses
--    calls_company_first_event (first_event_at is set when the call is created), and
--    `call show --number` orders by an expression the index cannot serve.
DROP INDEX calls_company_started;

-- 2. Full pages: a new version that does not fit on its page goes elsewhere, with new entries
--    in every index. 20 % of each page is left free for the updates of the calls on it (a call
--    row is about 450 bytes; its transcript and analysis go to TOAST when large). Pages written
--    before this keep their fill until they are rewritten.
ALTER TABLE calls SET (fillfactor = 80);
