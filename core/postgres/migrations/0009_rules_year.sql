-- Rules engine, second part: per-year caps and tier qualification by spend.

-- rule_counters also holds, per member, the program-local calendar year a
-- capped rule gave points in (window 'y:2026'); no change of table needed.

-- The money amount, in the program's currency, of each posted accrual: what
-- tiers with basis "spend" sum over their window. Postings are append-only,
-- so the amount lives beside them, keyed by the accrual's posting id.
CREATE TABLE accrual_amounts (
    posting_id  bigint PRIMARY KEY REFERENCES postings (id),
    amount      numeric NOT NULL CHECK (amount >= 0)
);

-- A tier change records the spend it was decided on when the basis is spend.
ALTER TABLE member_tiers ADD COLUMN spend numeric;
