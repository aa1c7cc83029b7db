-- The members merged into a member (its orders, payments and partner
-- purchases are then the survivor's: listing its orders, counting a
-- reward's per-member limit, refunds and clawbacks after a merge).
--
-- Without it each of those reads the whole members table. Few members are
-- ever merged, so the index holds only them.

CREATE INDEX IF NOT EXISTS members_merged_into_idx ON members (merged_into)
    WHERE merged_into IS NOT NULL;
