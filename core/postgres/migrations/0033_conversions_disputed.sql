-- A settled conversion the other program answers otherwise (a refusal it
-- credited, a confirmation it denies or gives another reference) is
-- disputed: the reconciliation records when it first saw it and what the
-- other program said, so that the back office shows it on the member's
-- page and /metrics counts it, beside the Error log line. Nothing else
-- changes: a person decides what to do, and marks the dispute settled
-- (who, when, how) once the member's points are put right.

ALTER TABLE conversions ADD COLUMN disputed_at timestamptz;
ALTER TABLE conversions ADD COLUMN dispute text NOT NULL DEFAULT '';
ALTER TABLE conversions ADD COLUMN dispute_settled_at timestamptz;
ALTER TABLE conversions ADD COLUMN dispute_settled_by text NOT NULL DEFAULT '';
ALTER TABLE conversions ADD COLUMN dispute_note text NOT NULL DEFAULT '';
CREATE INDEX conversions_disputed_idx ON conversions (program_id, external_code)
    WHERE disputed_at IS NOT NULL AND dispute_settled_at IS NULL;
