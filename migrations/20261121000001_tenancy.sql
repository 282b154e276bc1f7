-- Tenancy: companies, their branches, their provider accounts (with sealed signing secrets),
-- and their phone numbers: everything the gateway's directory is built from.
--
-- Integrity rules (shared/design.md): every tenant-owned row has a NOT NULL company_id; a row
-- can only point at a branch or account of its own company (composite foreign keys on
-- (company_id, id)); numbers are E.164 and unique among active rows; soft delete via
-- deleted_at. Provider secrets are never stored in the clear: they are sealed by the
-- application (contract/src/secrets.rs) and stored as bytea.

CREATE FUNCTION callgate_set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TABLE companies (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(btrim(name)) > 0),
    slug        text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX companies_slug_active ON companies (slug) WHERE deleted_at IS NULL;

CREATE TABLE branches (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid NOT NULL REFERENCES companies (id),
    name        text NOT NULL CHECK (length(btrim(name)) > 0),
    -- IANA zone; AT TIME ZONE raises for a name Postgres does not know.
    timezone    text NOT NULL CHECK ((timestamptz '2000-01-01 00:00Z' AT TIME ZONE timezone) IS NOT NULL),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    UNIQUE (company_id, id)
);
CREATE UNIQUE INDEX branches_name_active ON branches (company_id, lower(name)) WHERE deleted_at IS NULL;

CREATE TABLE provider_accounts (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id                  uuid NOT NULL REFERENCES companies (id),
    provider                    text NOT NULL CHECK (provider IN ('retell', 'vapi', 'twilio')),
    -- Retell workspace, Vapi org id, Twilio AccountSid: how the provider names this account.
    external_account_id         text NOT NULL CHECK (length(external_account_id) > 0),
    -- Sealed (XChaCha20-Poly1305, bound to this row and column). Retell: the API key with the
    -- webhook badge; Vapi: the credential's secret; Twilio: the auth token.
    signing_secret              bytea NOT NULL,
    -- The secret being rotated out, accepted until previous_secret_expires_at (NULL: until
    -- it is cleared).
    previous_signing_secret     bytea,
    previous_secret_expires_at  timestamptz,
    -- Per-provider settings, validated by the gateway on load:
    --   twilio: {"public_base_url": "https://hooks.example.com"}
    --   vapi:   {"auth": {"mode": "secret" | "bearer" | "hmac", ...}}
    settings                    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deleted_at                  timestamptz,
    UNIQUE (company_id, id),
    CHECK (previous_secret_expires_at IS NULL OR previous_signing_secret IS NOT NULL)
);
CREATE UNIQUE INDEX provider_accounts_external_active
    ON provider_accounts (company_id, provider, external_account_id) WHERE deleted_at IS NULL;

CREATE TABLE phone_numbers (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id           uuid NOT NULL REFERENCES companies (id),
    branch_id            uuid NOT NULL,
    provider_account_id  uuid NOT NULL,
    e164                 text NOT NULL CHECK (e164 ~ '^\+[1-9][0-9]{1,14}$'),
    -- The provider's id of the number (Vapi phoneNumberId, Twilio PN sid): a routing fallback.
    provider_number_id   text CHECK (length(provider_number_id) > 0),
    -- The agent that answers it (Retell agent id; Vapi assistant id, returned to assistant-request).
    provider_agent_id    text CHECK (length(provider_agent_id) > 0),
    label                text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz,
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, branch_id) REFERENCES branches (company_id, id),
    FOREIGN KEY (company_id, provider_account_id) REFERENCES provider_accounts (company_id, id)
);
-- A number routes to exactly one tenant at a time.
CREATE UNIQUE INDEX phone_numbers_e164_active ON phone_numbers (e164) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX phone_numbers_provider_number_active
    ON phone_numbers (provider_number_id) WHERE deleted_at IS NULL AND provider_number_id IS NOT NULL;
CREATE INDEX phone_numbers_account ON phone_numbers (provider_account_id);
CREATE INDEX phone_numbers_branch ON phone_numbers (branch_id);

CREATE TRIGGER companies_updated_at BEFORE UPDATE ON companies
    FOR EACH ROW EXECUTE FUNCTION callgate_set_updated_at();
CREATE TRIGGER branches_updated_at BEFORE UPDATE ON branches
    FOR EACH ROW EXECUTE FUNCTION callgate_set_updated_at();
CREATE TRIGGER provider_accounts_updated_at BEFORE UPDATE ON provider_accounts
    FOR EACH ROW EXECUTE FUNCTION callgate_set_updated_at();
CREATE TRIGGER phone_numbers_updated_at BEFORE UPDATE ON phone_numbers
    FOR EACH ROW EXECUTE FUNCTION callgate_set_updated_at();
