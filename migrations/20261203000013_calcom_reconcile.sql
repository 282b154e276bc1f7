-- Where the Cal.com reconciliation of each connected account stands (docs/calcom.md §5).
--
-- The pass lists the bookings Cal.com created or changed since `watermark` (Cal.com's own
-- createdAt/updatedAt, so our clock does not matter) and applies what the webhooks did not
-- bring. Kept apart from calcom_accounts: that table notifies the gateways' directory on every
-- change, and a pass every few minutes per account must not.
CREATE TABLE calcom_reconcile (
    calcom_account_id  uuid PRIMARY KEY REFERENCES calcom_accounts (id),
    company_id         uuid NOT NULL REFERENCES companies (id),
    -- Bookings created or updated before this were seen by an earlier pass.
    watermark          timestamptz NOT NULL,
    -- When the next pass is due. A running pass pushes it out by its lease, so a worker that
    -- dies mid-pass leaves the account to another one after the lease.
    next_run_at        timestamptz NOT NULL DEFAULT now(),
    last_run_at        timestamptz,
    -- What the last pass found (counts by result), or why it stopped.
    last_result        jsonb,
    last_error         text
);
CREATE INDEX calcom_reconcile_due ON calcom_reconcile (next_run_at);
