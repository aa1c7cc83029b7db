-- Back office: a request waiting for a second person is an adjustment or
-- the close of a member whose points it forfeits. For a close, points is
-- what the member held when it was asked for (negative: what it takes).
--
-- form_id is the id of the form that asked for it, drawn with the page: a
-- form sent twice (a double click, the back button, a retry) queues one
-- request. Requests queued before it have none.

ALTER TABLE bo_pending_adjustments ADD COLUMN kind text NOT NULL DEFAULT 'adjust'
    CHECK (kind IN ('adjust', 'close'));
ALTER TABLE bo_pending_adjustments ADD COLUMN form_id uuid UNIQUE;

-- max_forfeit is the bound an approved close carries to the ledger, fixed
-- at its first approval, so that a close sent again (after a failure or a
-- late answer) is the same command even if the threshold changed since.
ALTER TABLE bo_pending_adjustments ADD COLUMN max_forfeit bigint;
