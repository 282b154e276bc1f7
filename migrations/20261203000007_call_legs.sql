-- A call can be a leg of another call: Twilio's `<Dial>` starts a child call (Direction
-- `outbound-dial`, its own CallSid) and names its parent in `ParentCallSid`. The link is a
-- composite foreign key, so a leg can only ever point at a call of its own company.
ALTER TABLE calls ADD COLUMN parent_call_id uuid;
ALTER TABLE calls ADD CONSTRAINT calls_parent_same_company
    FOREIGN KEY (company_id, parent_call_id) REFERENCES calls (company_id, id);
CREATE INDEX calls_parent ON calls (parent_call_id) WHERE parent_call_id IS NOT NULL;
