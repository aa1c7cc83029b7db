-- The members whose erasure the reporting sink has seen (the ledger's
-- member_erased event), so that it can tell, for every batch it stores,
-- whether an event of an erased member came in late with the old reference
-- (see reporting/erasure.go). Small: one row per erased member.
CREATE TABLE IF NOT EXISTS erased_members (
    program   String,
    member    String,
    erased_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (program, member);
