-- A member's conversions, newest first (GET .../members/{member}/conversions).
--
-- The only index on conversions by member leaves refused ones out (it
-- serves the daily and monthly limits), so listing a member's conversions
-- read the whole table. This one answers a page from the member's own rows.
--
-- Building it locks conversions against writes for as long as it takes: a
-- database with many conversions can create it beforehand, outside a
-- transaction, with CREATE INDEX CONCURRENTLY under the same name.

CREATE INDEX IF NOT EXISTS conversions_member_idx
    ON conversions (member_id, requested_at DESC, id DESC);
