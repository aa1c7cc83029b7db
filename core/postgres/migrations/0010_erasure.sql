-- Erasure of a member's personal data on request. The member row stays (its
-- postings, lots and balances refer to it) under the pseudonym
-- 'erased-<member id>'; these columns say when, by whom and why.
ALTER TABLE members ADD COLUMN erased_at timestamptz;
ALTER TABLE members ADD COLUMN erased_by text NOT NULL DEFAULT '';
ALTER TABLE members ADD COLUMN erase_reason text NOT NULL DEFAULT '';
