-- Pre-aggregated flows: what every report of flows and liabilities reads
-- instead of scanning ledger_events with FINAL.
--
-- flows_hourly holds, per program, UTC hour, kind, channel, rule version,
-- partner and tier, the sum of the positive points (gained), the sum of the
-- negative points (lost) and the number of counted events (notices, which
-- record no posting and move no points, are left out as in the reports).
-- Nothing in it names a member, so an erasure leaves it alone. An hour of
-- UTC lies inside one local day of any zone whose offsets are whole hours,
-- which is how the reports cut days, weeks and months in the program's zone
-- from it (reports.go falls back to the events for other zones).
--
-- flows_hourly_mv feeds it from every insert into ledger_events. A
-- materialized view sees each inserted block, not the table, so it would
-- count a second copy of an event a second time: InsertEvents keeps copies
-- out of ledger_events instead (see schema.go, "Exactly once"), and
-- SummingMergeTree only folds rows of one key, which changes no sum.
CREATE TABLE IF NOT EXISTS flows_hourly (
    program      String,
    hour         DateTime('UTC'),
    kind         String,
    channel      String,
    rule_version String,
    partner      String,
    tier         String,
    gained       Int64,
    lost         Int64,
    events       UInt64
) ENGINE = SummingMergeTree((gained, lost, events))
PARTITION BY toYYYYMM(hour)
ORDER BY (program, hour, kind, channel, rule_version, partner, tier);

CREATE MATERIALIZED VIEW IF NOT EXISTS flows_hourly_mv TO flows_hourly AS
SELECT program, toStartOfHour(occurred_at) AS hour, kind, channel, rule_version, partner,
    tier, sum(if(points > 0, points, 0)) AS gained, sum(if(points < 0, points, 0)) AS lost,
    count() AS events
FROM ledger_events
WHERE posting_id != 0 OR points != 0
GROUP BY program, hour, kind, channel, rule_version, partner, tier;

-- The events stored before the view existed are summed once, from
-- ledger_events with FINAL (each event once), into a table of their own:
-- running this statement again, as a second process migrating at the same
-- time would, writes the same rows again, and ReplacingMergeTree keeps one
-- of each key (the reports read it with FINAL). Rows inserted once the view
-- existed are the view's: the cut is the second the view's definition was
-- written, and a row inserted within that second by a process that was
-- already running counts in neither or both. Let the sink apply this
-- migration (it migrates before it consumes) or stop the sinks first.
CREATE TABLE IF NOT EXISTS flows_backfill (
    program      String,
    hour         DateTime('UTC'),
    kind         String,
    channel      String,
    rule_version String,
    partner      String,
    tier         String,
    gained       Int64,
    lost         Int64,
    events       UInt64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (program, hour, kind, channel, rule_version, partner, tier);

INSERT INTO flows_backfill (program, hour, kind, channel, rule_version, partner, tier,
    gained, lost, events)
SELECT program, toStartOfHour(occurred_at) AS hour, kind, channel, rule_version, partner,
    tier, sum(if(points > 0, points, 0)), sum(if(points < 0, points, 0)), count()
FROM ledger_events FINAL
WHERE (posting_id != 0 OR points != 0)
    AND inserted_at < (SELECT min(metadata_modification_time) FROM system.tables
        WHERE database = currentDatabase() AND name = 'flows_hourly_mv')
GROUP BY program, hour, kind, channel, rule_version, partner, tier;
