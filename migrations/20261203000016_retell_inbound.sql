-- What the gateway answers Retell's inbound call webhook with, per number (docs/providers.md
-- §1): the agent to take the call (NULL: the number's own, provider_agent_id) and its version,
-- and dynamic variables for the agent's prompt, besides the business and branch names the
-- gateway always sends. phone_numbers already notifies the gateways, so a change is served
-- within a second.
ALTER TABLE phone_numbers
    ADD COLUMN inbound_agent_id      text CHECK (length(inbound_agent_id) > 0),
    ADD COLUMN inbound_agent_version integer CHECK (inbound_agent_version >= 0),
    -- Retell takes string values only.
    ADD COLUMN inbound_variables     jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(inbound_variables) = 'object');
