-- Tells running gateways that their directory changed (LISTEN callgate_directory).
--
-- One notification per statement, not per row: the payload names the table and up to 100
-- changed ids, {"scope":"phone_numbers","ids":[...]}; a bigger statement (a bulk import)
-- sends {"scope":"all"} and the gateways reload everything once. Notifications are
-- transactional: they are delivered on commit, so a gateway never sees uncommitted rows.

CREATE FUNCTION callgate_notify_directory() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(id) INTO ids FROM (SELECT id FROM new_rows LIMIT 101) s;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(id) INTO ids FROM (SELECT id FROM old_rows LIMIT 101) s;
    ELSE
        SELECT array_agg(id) INTO ids FROM (
            SELECT id FROM new_rows UNION SELECT id FROM old_rows LIMIT 101) s;
    END IF;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    IF cardinality(ids) > 100 THEN
        PERFORM pg_notify('callgate_directory', '{"scope":"all"}');
    ELSE
        PERFORM pg_notify('callgate_directory',
            json_build_object('scope', TG_TABLE_NAME, 'ids', ids)::text);
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['companies', 'branches', 'provider_accounts', 'phone_numbers'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION callgate_notify_directory()',
                       t || '_directory_ins', t);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION callgate_notify_directory()',
                       t || '_directory_upd', t);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION callgate_notify_directory()',
                       t || '_directory_del', t);
    END LOOP;
END $$;
