-- The worker inserts a batch's appointments in one statement, so one transaction-wide
-- `callgate.status_reason` cannot name each one's call. An insert without a reason now says
-- which call's analysis created it, as the worker used to set it by hand.
CREATE OR REPLACE FUNCTION callgate_appointment_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    reason text := nullif(current_setting('callgate.status_reason', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF reason IS NULL AND NEW.call_id IS NOT NULL THEN
            SELECT format('created from the analysis of %s call %s', c.provider, c.provider_call_id)
            INTO reason FROM calls c WHERE c.id = NEW.call_id;
        END IF;
        INSERT INTO appointment_status_history
            (company_id, appointment_id, from_status, to_status, from_sync_status, to_sync_status, reason)
        VALUES (NEW.company_id, NEW.id, NULL, NEW.status, NULL, NEW.calcom_sync_status, reason);
    ELSIF NEW.status IS DISTINCT FROM OLD.status OR NEW.calcom_sync_status IS DISTINCT FROM OLD.calcom_sync_status THEN
        INSERT INTO appointment_status_history
            (company_id, appointment_id, from_status, to_status, from_sync_status, to_sync_status, reason)
        VALUES (NEW.company_id, NEW.id, OLD.status, NEW.status, OLD.calcom_sync_status, NEW.calcom_sync_status,
                reason);
    END IF;
    RETURN NULL;
END $$;
