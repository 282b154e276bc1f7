-- A suspended company's numbers leave the gateways' directory (its webhooks are answered like
-- an unknown number's); its history and its Cal.com routing stay. `tenant resume` clears it.
-- The companies table already notifies the gateways, so they follow within a second.
ALTER TABLE companies ADD COLUMN suspended_at timestamptz;
