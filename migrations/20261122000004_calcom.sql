-- Cal.com: each company's account (API key, webhook endpoint and secret), the shared rate gate
-- per API key, and what the booking push needs on every appointment (a lease, a schedule, and
-- whether an earlier attempt may have reached Cal.com). See shared/specs/calcom.md.

CREATE TABLE calcom_accounts (
    id                                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id                          uuid NOT NULL REFERENCES companies (id),
    -- Sealed (contract/src/secrets.rs), bound to this row and column. Sent as Bearer.
    api_key                             bytea NOT NULL,
    -- The path segment of this company's webhook endpoint, /v1/webhooks/calcom/{webhook_path}:
    -- how the gateway routes a Cal.com delivery (which carries no tenant of ours) to a company.
    -- Random, not a secret: the signature is what proves a delivery.
    webhook_path                        text NOT NULL CHECK (webhook_path ~ '^[A-Za-z0-9_-]{16,64}$'),
    -- Sealed. The secret configured on the Cal.com webhook (X-Cal-Signature-256).
    webhook_secret                      bytea NOT NULL,
    previous_webhook_secret             bytea,
    previous_webhook_secret_expires_at  timestamptz,
    -- Requests per minute this key may spend; NULL: the worker's --calcom-rate-per-minute.
    rate_per_minute                     integer CHECK (rate_per_minute BETWEEN 1 AND 10000),
    created_at                          timestamptz NOT NULL DEFAULT now(),
    updated_at                          timestamptz NOT NULL DEFAULT now(),
    deleted_at                          timestamptz,
    UNIQUE (company_id, id),
    CHECK (previous_webhook_secret_expires_at IS NULL OR previous_webhook_secret IS NOT NULL)
);
-- One active Cal.com account per company.
CREATE UNIQUE INDEX calcom_accounts_company_active ON calcom_accounts (company_id) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX calcom_accounts_webhook_path ON calcom_accounts (webhook_path);
CREATE TRIGGER calcom_accounts_updated_at BEFORE UPDATE ON calcom_accounts
    FOR EACH ROW EXECUTE FUNCTION callgate_set_updated_at();

-- The gateway routes Cal.com webhooks from its in-memory directory: tell it about changes.
CREATE TRIGGER calcom_accounts_directory_ins AFTER INSERT ON calcom_accounts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callgate_notify_directory();
CREATE TRIGGER calcom_accounts_directory_upd AFTER UPDATE ON calcom_accounts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callgate_notify_directory();
CREATE TRIGGER calcom_accounts_directory_del AFTER DELETE ON calcom_accounts REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callgate_notify_directory();

-- The request budget of one API key, shared by every worker process (a GCRA: a request may go
-- when next_send_at <= now(), and moves it on by 60/rate seconds; burst is allowed by starting
-- from now() - burst). Kept out of calcom_accounts so that its constant updates do not
-- notify the gateways.
CREATE TABLE calcom_rate_gates (
    calcom_account_id  uuid PRIMARY KEY REFERENCES calcom_accounts (id),
    next_send_at       timestamptz NOT NULL DEFAULT '-infinity',
    -- Set from a 429 or an exhausted X-RateLimit-Remaining: nothing is sent before it.
    blocked_until      timestamptz NOT NULL DEFAULT '-infinity'
);

-- The GCRA step, the one formula every charge to a gate uses: `cost` requests move the gate on
-- by `cost` spacings (60 / requests per minute seconds each), starting no earlier than `burst`
-- spacings ago, so that a quiet key may send a burst at once.
CREATE FUNCTION callgate_gate_advance(next_send_at timestamptz, rate_per_minute float8, burst float8, cost float8)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT GREATEST(next_send_at, now() - burst * (60.0 / rate_per_minute) * interval '1 second')
           + cost * (60.0 / rate_per_minute) * interval '1 second'
$$;

-- Every account has its gate, whoever creates the account.
CREATE FUNCTION callgate_calcom_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO calcom_rate_gates (calcom_account_id) VALUES (NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER calcom_accounts_gate AFTER INSERT ON calcom_accounts
    FOR EACH ROW EXECUTE FUNCTION callgate_calcom_gate();

ALTER TABLE appointments
    -- When the push may next try (backoff after a failure, the key's block after a 429).
    ADD COLUMN next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    -- The worker holding the appointment and until when; an expired lease is taken over.
    ADD COLUMN lease_owner       text,
    ADD COLUMN lease_expires_at  timestamptz,
    -- An attempt may have reached Cal.com without us seeing the answer (timeout, reset, 5xx,
    -- a crash mid-request): look the booking up before sending again.
    ADD COLUMN calcom_unsure     boolean NOT NULL DEFAULT false,
    ADD COLUMN calcom_booking_id bigint,
    -- Cal.com's iCalSequence of the last change applied from a webhook: older ones are stale.
    ADD COLUMN calcom_sequence   integer,
    ADD COLUMN synced_at         timestamptz,
    ADD CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL));

DROP INDEX appointments_sync_due;
CREATE INDEX appointments_sync_due ON appointments (company_id, next_attempt_at)
    WHERE calcom_sync_status IN ('pending', 'in_flight');
