-- How a booked meeting went, from Cal.com: MEETING_ENDED makes it `completed`,
-- BOOKING_NO_SHOW_UPDATED marks the caller absent (`no_show`) or present again (`completed`).
-- Both go into the status history like every other change.
ALTER TABLE appointments DROP CONSTRAINT appointments_status_check;
ALTER TABLE appointments ADD CONSTRAINT appointments_status_check
    CHECK (status IN ('pending', 'booked', 'cancelled', 'rescheduled', 'rejected', 'failed', 'no_show', 'completed'));

-- How many of a customer's appointments stand as no-shows. Kept by the trigger below on every
-- status change, so it cannot drift from the appointments (a no-show taken back counts down).
ALTER TABLE customers ADD COLUMN no_show_count integer NOT NULL DEFAULT 0 CHECK (no_show_count >= 0);

CREATE FUNCTION callgate_count_no_shows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE customers
    SET no_show_count = no_show_count + CASE WHEN NEW.status = 'no_show' THEN 1 ELSE -1 END
    WHERE company_id = NEW.company_id AND id = NEW.customer_id;
    RETURN NULL;
END $$;

CREATE TRIGGER appointments_no_show_count AFTER UPDATE OF status ON appointments
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND (OLD.status = 'no_show' OR NEW.status = 'no_show')
          AND NEW.customer_id IS NOT NULL)
    EXECUTE FUNCTION callgate_count_no_shows();
