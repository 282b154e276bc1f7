-- What the worker makes of the event stream: customers, services, calls, appointments with
-- their status history, and the ledger of applied events.
--
-- Same integrity rules as the tenancy tables: every row has a NOT NULL company_id, and every
-- reference to another tenant-owned row goes through a composite foreign key on
-- (company_id, id), so a call cannot point at another company's customer, nor an appointment at
-- another company's call, service or branch, whatever the application does.

-- How a company's call analysis names the appointment fields. Keys left out use the default
-- (worker/src/appointments.rs): appointment_start, service, customer_name, customer_email, notes.
ALTER TABLE companies
    ADD COLUMN appointment_fields jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(appointment_fields) = 'object');

CREATE TABLE customers (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid NOT NULL REFERENCES companies (id),
    e164        text NOT NULL CHECK (e164 ~ '^\+[1-9][0-9]{1,14}$'),
    name        text CHECK (length(btrim(name)) > 0),
    email       text CHECK (position('@' IN email) > 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    UNIQUE (company_id, id)
);
-- One customer per number *within a company*: the same caller phoning two businesses is two
-- customers (a global unique here is one of the mistakes design.md names).
CREATE UNIQUE INDEX customers_e164_active ON customers (company_id, e164) WHERE deleted_at IS NULL;

-- What a branch offers, as the caller may say it, and what Cal.com books it as.
CREATE TABLE services (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id            uuid NOT NULL REFERENCES companies (id),
    branch_id             uuid NOT NULL,
    name                  text NOT NULL CHECK (length(btrim(name)) > 0),
    -- Other ways callers name it ("cleaning", "hygiene visit"); matched like the name,
    -- ignoring case and accents.
    aliases               text[] NOT NULL DEFAULT '{}',
    duration_minutes      integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 1440),
    calcom_event_type_id  bigint CHECK (calcom_event_type_id > 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz,
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, branch_id) REFERENCES branches (company_id, id)
);
CREATE UNIQUE INDEX services_name_active ON services (branch_id, lower(name)) WHERE deleted_at IS NULL;

CREATE TABLE calls (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id            uuid NOT NULL REFERENCES companies (id),
    branch_id             uuid NOT NULL,
    phone_number_id       uuid NOT NULL,
    provider              text NOT NULL CHECK (provider IN ('retell', 'vapi', 'twilio')),
    provider_call_id      text NOT NULL CHECK (length(provider_call_id) > 0),
    direction             text CHECK (direction IN ('inbound', 'outbound')),
    -- The other party as the provider gave it, and as E.164 when it is a real number.
    caller_raw            text,
    caller_e164           text CHECK (caller_e164 ~ '^\+[1-9][0-9]{1,14}$'),
    business_e164         text NOT NULL CHECK (business_e164 ~ '^\+[1-9][0-9]{1,14}$'),
    status                text NOT NULL CHECK (status IN ('queued', 'ringing', 'in_progress', 'ended')),
    -- How far the call has got: (progress, progress_seq) only ever grows. progress is the
    -- status rank, plus one step for "analysed"; progress_seq orders events of the same rank
    -- (Twilio's SequenceNumber, Vapi's message timestamp). See worker/src/calls.rs.
    progress              smallint NOT NULL,
    progress_seq          bigint NOT NULL DEFAULT 0,
    started_at            timestamptz,
    ended_at              timestamptz,
    duration_ms           bigint CHECK (duration_ms >= 0),
    transcript            text,
    summary               text,
    analysis              jsonb,
    -- USD.
    cost                  numeric(12, 4),
    disconnection_reason  text,
    customer_id           uuid,
    customer_link         text NOT NULL DEFAULT 'pending'
                          CHECK (customer_link IN ('pending', 'exact_phone', 'created', 'anonymous', 'unparseable', 'no_number')),
    -- Set when the analysis could not become an appointment; cleared by nobody but a person.
    review_reason         text,
    review_detail         text,
    flagged_at            timestamptz,
    first_event_at        timestamptz NOT NULL,
    last_event_at         timestamptz NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, id),
    -- Provider call ids are unique per provider; the worker refuses an event that would move a
    -- call to another company.
    UNIQUE (provider, provider_call_id),
    FOREIGN KEY (company_id, branch_id) REFERENCES branches (company_id, id),
    FOREIGN KEY (company_id, phone_number_id) REFERENCES phone_numbers (company_id, id),
    FOREIGN KEY (company_id, customer_id) REFERENCES customers (company_id, id),
    CHECK ((review_reason IS NULL) = (flagged_at IS NULL))
);
CREATE INDEX calls_customer ON calls (customer_id) WHERE customer_id IS NOT NULL;
CREATE INDEX calls_company_started ON calls (company_id, started_at DESC);
CREATE INDEX calls_review ON calls (company_id, flagged_at) WHERE review_reason IS NOT NULL;

CREATE TABLE appointments (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid NOT NULL REFERENCES companies (id),
    branch_id           uuid NOT NULL,
    call_id             uuid,
    customer_id         uuid,
    service_id          uuid NOT NULL,
    starts_at           timestamptz NOT NULL,
    ends_at             timestamptz NOT NULL,
    -- The branch's zone when it was booked: what the caller meant by "10 am".
    timezone            text NOT NULL,
    customer_name       text,
    customer_email      text,
    notes               text,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'booked', 'cancelled', 'rescheduled', 'rejected', 'failed')),
    calcom_sync_status  text NOT NULL DEFAULT 'pending'
                        CHECK (calcom_sync_status IN ('pending', 'in_flight', 'synced', 'failed', 'needs_review')),
    calcom_booking_uid  text,
    sync_attempts       integer NOT NULL DEFAULT 0 CHECK (sync_attempts >= 0),
    last_sync_error     text,
    -- Deterministic: hex SHA-256 of (company, call, start, service). A second attempt to create
    -- the same appointment hits this and changes nothing; it also goes to Cal.com as metadata.
    idempotency_key     text NOT NULL CHECK (idempotency_key ~ '^[0-9a-f]{64}$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (company_id, id),
    UNIQUE (company_id, idempotency_key),
    FOREIGN KEY (company_id, branch_id) REFERENCES branches (company_id, id),
    FOREIGN KEY (company_id, call_id) REFERENCES calls (company_id, id),
    FOREIGN KEY (company_id, customer_id) REFERENCES customers (company_id, id),
    FOREIGN KEY (company_id, service_id) REFERENCES services (company_id, id),
    CHECK (ends_at > starts_at)
);
CREATE UNIQUE INDEX appointments_booking_uid ON appointments (calcom_booking_uid) WHERE calcom_booking_uid IS NOT NULL;
CREATE INDEX appointments_sync_due ON appointments (calcom_sync_status, updated_at) WHERE calcom_sync_status = 'pending';
CREATE INDEX appointments_call ON appointments (call_id);

-- Every change of an appointment's status or sync status, written by a trigger so that no
-- code path can forget it. The writer may say why with
-- `SELECT set_config('callgate.status_reason', '...', true)` in its transaction.
CREATE TABLE appointment_status_history (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id          uuid NOT NULL,
    appointment_id      uuid NOT NULL,
    from_status         text,
    to_status           text NOT NULL,
    from_sync_status    text,
    to_sync_status      text NOT NULL,
    reason              text,
    changed_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (company_id, appointment_id) REFERENCES appointments (company_id, id)
);
CREATE INDEX appointment_status_history_appointment ON appointment_status_history (appointment_id, id);

CREATE FUNCTION callgate_appointment_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO appointment_status_history
            (company_id, appointment_id, from_status, to_status, from_sync_status, to_sync_status, reason)
        VALUES (NEW.company_id, NEW.id, NULL, NEW.status, NULL, NEW.calcom_sync_status,
                nullif(current_setting('callgate.status_reason', true), ''));
    ELSIF NEW.status IS DISTINCT FROM OLD.status OR NEW.calcom_sync_status IS DISTINCT FROM OLD.calcom_sync_status THEN
        INSERT INTO appointment_status_history
            (company_id, appointment_id, from_status, to_status, from_sync_status, to_sync_status, reason)
        VALUES (NEW.company_id, NEW.id, OLD.status, NEW.status, OLD.calcom_sync_status, NEW.calcom_sync_status,
                nullif(current_setting('callgate.status_reason', true), ''));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER appointments_history AFTER INSERT OR UPDATE OF status, calcom_sync_status ON appointments
    FOR EACH ROW EXECUTE FUNCTION callgate_appointment_history();

-- The ledger that makes redelivery harmless: an event id is applied at most once, in the same
-- transaction as its effects.
CREATE TABLE processed_events (
    event_id          uuid PRIMARY KEY,
    company_id        uuid NOT NULL REFERENCES companies (id),
    provider          text NOT NULL,
    event_type        text NOT NULL,
    provider_call_id  text NOT NULL,
    -- applied, ignored (unknown event type), refused (would cross a tenant boundary).
    outcome           text NOT NULL CHECK (outcome IN ('applied', 'ignored', 'refused')),
    detail            text,
    kafka_partition   integer NOT NULL,
    kafka_offset      bigint NOT NULL,
    received_at       timestamptz NOT NULL,
    processed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX processed_events_call ON processed_events (provider, provider_call_id);

CREATE TRIGGER customers_updated_at BEFORE UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION callgate_set_updated_at();
CREATE TRIGGER services_updated_at BEFORE UPDATE ON services
    FOR EACH ROW EXECUTE FUNCTION callgate_set_updated_at();
CREATE TRIGGER calls_updated_at BEFORE UPDATE ON calls
    FOR EACH ROW EXECUTE FUNCTION callgate_set_updated_at();
CREATE TRIGGER appointments_updated_at BEFORE UPDATE ON appointments
    FOR EACH ROW EXECUTE FUNCTION callgate_set_updated_at();
