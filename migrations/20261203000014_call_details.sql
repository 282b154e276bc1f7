-- What the providers report about a call beyond its progress (docs/providers.md): the agent
-- that handled it, its language, the caller's sentiment, the cost's breakdown and the
-- recording. Merged like every other data column: a newer event overwrites what it carries,
-- an older one only fills blanks, nothing writes a blank over a value.
ALTER TABLE calls
    -- Retell agent_id / agent_version; Vapi assistantId. The one that answered this call,
    -- which may differ from the number's agent today.
    ADD COLUMN agent_id                   text,
    ADD COLUMN agent_version              integer,
    -- The language the call was transcribed in, where the provider says (Vapi).
    ADD COLUMN language                   text,
    -- The analysis' view of the caller (Retell user_sentiment: Positive, Negative, Neutral,
    -- Unknown).
    ADD COLUMN sentiment                  text,
    -- The provider's own breakdown of `cost` (Retell call_cost, Vapi costs), as sent.
    ADD COLUMN cost_breakdown             jsonb,
    -- Where the provider keeps the recording. Personal data: anonymised by retention and
    -- erasure like the transcript.
    ADD COLUMN recording_url              text,
    ADD COLUMN recording_multichannel_url text,
    -- Twilio's RecordingSid: what deleting the recording at Twilio takes.
    ADD COLUMN recording_sid              text;
