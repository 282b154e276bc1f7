-- Every Cal.com account gets its reconciliation row when it is created, as it gets its rate
-- gate, instead of each claim of the reconciliation looking for accounts without one. Its first
-- watermark is when it was connected: nothing booked before can be ours.
CREATE FUNCTION callgate_calcom_reconcile_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO calcom_reconcile (calcom_account_id, company_id, watermark)
    VALUES (NEW.id, NEW.company_id, NEW.created_at);
    RETURN NULL;
END $$;
CREATE TRIGGER calcom_accounts_reconcile AFTER INSERT ON calcom_accounts
    FOR EACH ROW EXECUTE FUNCTION callgate_calcom_reconcile_row();

-- Accounts connected before this migration that no claim has enrolled yet.
INSERT INTO calcom_reconcile (calcom_account_id, company_id, watermark)
SELECT ca.id, ca.company_id, ca.created_at FROM calcom_accounts ca
WHERE NOT EXISTS (SELECT 1 FROM calcom_reconcile r WHERE r.calcom_account_id = ca.id);
