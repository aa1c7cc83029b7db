-- A partner payment whose capture the operator reversed.
--
-- The reversal gives the member the points back, so the partner's
-- settlement must not pay for them: it lists the reversal as a line of its
-- own, by the time it was made. Reversals are postings, and postings have
-- no index by time or by hold; the hold keeps the reversal instead, and an
-- index of only the reversed holds finds a period's.
--
-- Reversals made before this migration are copied from their postings
-- (a partner's own refunds carry the hold's id; the operator's do not).

ALTER TABLE holds ADD COLUMN IF NOT EXISTS reversal_posting_id bigint;
ALTER TABLE holds ADD COLUMN IF NOT EXISTS reversed_at timestamptz;

UPDATE holds h SET reversal_posting_id = rv.id, reversed_at = rv.recorded_at
FROM postings c JOIN postings rv ON rv.reverses_id = c.id
WHERE c.hold_id = h.id AND c.kind = 'capture' AND rv.hold_id IS NULL
  AND h.reversal_posting_id IS NULL AND h.captured > 0;

CREATE INDEX IF NOT EXISTS holds_source_reversed_idx ON holds (source, reversed_at)
    WHERE reversed_at IS NOT NULL;
