-- One rate gate per Cal.com API key, not per account. Cal.com counts requests per key, so two
-- companies connected with the same key (an agency running both businesses) share its budget;
-- with a gate per account they could spend it twice over and get the key blocked or locked.
--
-- A gate is named by `gate_key`: a SHA-256 fingerprint of the API key, computed by whoever
-- writes the key (`tenants::set_calcom_account`). The key itself stays sealed. Accounts written
-- before this migration cannot be fingerprinted here (their keys are sealed), so each keeps a
-- gate of its own, named after the account, until its key is written again.
ALTER TABLE calcom_accounts ADD COLUMN gate_key bytea;
UPDATE calcom_accounts SET gate_key = sha256(convert_to('callgate account gate ' || id::text, 'UTF8'));
ALTER TABLE calcom_accounts ALTER COLUMN gate_key SET NOT NULL;
CREATE INDEX calcom_accounts_gate_key ON calcom_accounts (gate_key) WHERE deleted_at IS NULL;

-- The gates keep their state, now under the key's name. Not tenant data: a budget of Cal.com's.
ALTER TABLE calcom_rate_gates ADD COLUMN gate_key bytea;
UPDATE calcom_rate_gates g SET gate_key = ca.gate_key FROM calcom_accounts ca WHERE ca.id = g.calcom_account_id;
ALTER TABLE calcom_rate_gates DROP COLUMN calcom_account_id;
ALTER TABLE calcom_rate_gates ALTER COLUMN gate_key SET NOT NULL;
ALTER TABLE calcom_rate_gates ADD PRIMARY KEY (gate_key);

-- Every key has its gate, whoever writes the account.
DROP TRIGGER calcom_accounts_gate ON calcom_accounts;
CREATE OR REPLACE FUNCTION callgate_calcom_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO calcom_rate_gates (gate_key) VALUES (NEW.gate_key) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER calcom_accounts_gate AFTER INSERT OR UPDATE OF gate_key ON calcom_accounts
    FOR EACH ROW EXECUTE FUNCTION callgate_calcom_gate();
