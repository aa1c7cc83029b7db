-- How many of a batch's posted lines were replays: their transaction id had
-- been applied already (the line was sent again in another file), so the
-- ledger answered its first result and posted nothing again. posted_lines
-- counts them too; replayed_lines tells them apart, so that a batch's
-- summary says how many lines were credited or debited by this file.
--
-- Batches posted before this migration get their count from their lines'
-- replayed flags, in one pass over bulk_lines.

ALTER TABLE bulk_batches ADD COLUMN replayed_lines bigint NOT NULL DEFAULT 0;

UPDATE bulk_batches b SET replayed_lines = r.n
FROM (SELECT batch_id, count(*) AS n FROM bulk_lines
      WHERE replayed AND status = 'posted' GROUP BY batch_id) r
WHERE r.batch_id = b.id;
