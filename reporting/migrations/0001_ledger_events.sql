-- Ledger events as the reporting sink copies them from the bus: one row per
-- event, many rows per event when the bus delivered it more than once (a
-- crash between insert and ack). ReplacingMergeTree folds such copies into
-- one, but only when it merges parts, at a time of its choosing: every query
-- reads the table with FINAL so that an event counts once, merged or not.
-- Copies of one event are identical and share occurred_at, so they land in
-- the same partition and the same sorting key.
--
-- Each statement ends with ';' at the end of a line and must be safe to run
-- twice (IF NOT EXISTS): two processes may migrate at once.
CREATE TABLE IF NOT EXISTS ledger_events (
    event_id     String,
    kind         String,
    program      String,
    member       String,
    member_ref   String,
    points       Int64,
    occurred_at  DateTime('UTC'),
    recorded_at  DateTime('UTC'),
    source       String,
    txn_id       String,
    rule_version String,
    partner      String,
    channel      String,
    posting_id   Int64,
    inserted_at  DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (program, event_id);
