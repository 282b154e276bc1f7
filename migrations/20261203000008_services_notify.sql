-- The worker caches each branch's services (and its company's appointment fields and the
-- branch's zone) and empties that cache when the directory channel says companies, branches
-- or services changed. Services did not notify until now; the gateway, which does not route
-- by them, ignores their notifications.
CREATE TRIGGER services_directory_ins AFTER INSERT ON services REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callgate_notify_directory();
CREATE TRIGGER services_directory_upd AFTER UPDATE ON services
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callgate_notify_directory();
CREATE TRIGGER services_directory_del AFTER DELETE ON services REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION callgate_notify_directory();
