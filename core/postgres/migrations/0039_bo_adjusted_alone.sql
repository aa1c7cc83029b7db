-- What each person adjusted members by in the back office without a second
-- person, written before the command is sent: the day's total of one
-- person for one member is held against the approval threshold, also while
-- the ledger has not applied the earlier ones yet. A form sent twice is one
-- row (its transaction id).
CREATE TABLE IF NOT EXISTS bo_adjusted_alone (
    id      bigserial PRIMARY KEY,
    person  text NOT NULL,
    program text NOT NULL,
    member  text NOT NULL,
    points  bigint NOT NULL,
    txn_id  text NOT NULL UNIQUE,
    at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS bo_adjusted_alone_day
    ON bo_adjusted_alone (person, program, member, at);
