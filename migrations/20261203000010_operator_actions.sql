-- The audit trail of operator actions: who (the --actor, or the OS user), what, which rows,
-- when. Append-only, enforced here: no role the application uses can rewrite what an operator
-- did.
CREATE TABLE operator_actions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor          text NOT NULL CHECK (length(actor) > 0),
    -- The command, e.g. 'calcom requeue'.
    action         text NOT NULL CHECK (length(action) > 0),
    -- The company the action was limited to, if it was.
    company_id     uuid REFERENCES companies (id),
    -- The selection as the operator gave it (filters, ids).
    selection      jsonb NOT NULL DEFAULT '{}',
    -- The rows it changed, by id.
    row_ids        uuid[] NOT NULL DEFAULT '{}',
    rows_affected  bigint NOT NULL CHECK (rows_affected >= 0),
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_actions_at ON operator_actions (at);

CREATE FUNCTION callgate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER operator_actions_append_only BEFORE UPDATE OR DELETE ON operator_actions
    FOR EACH ROW EXECUTE FUNCTION callgate_append_only();
CREATE TRIGGER operator_actions_no_truncate BEFORE TRUNCATE ON operator_actions
    FOR EACH STATEMENT EXECUTE FUNCTION callgate_append_only();
