-- The member's tier level when the ledger recorded the event (bus.Event's
-- tier), for the breakdowns by tier. Events copied before this column
-- existed, and the events of members without a tier, hold ''.
--
-- 18.16 has no ADD COLUMN IF NOT EXISTS: Migrate takes the error of a column
-- that is already there as success, which keeps this safe to run twice.
ALTER TABLE ledger_events ADD COLUMN tier String DEFAULT '';
