-- Back office: a request waiting for a second person is an adjustment or
-- the close of a member whose points it forfeits. For a close, points is
-- what the member held when it was asked for (negative: what it takes).

ALTER TABLE bo_pending_adjustments ADD COLUMN kind text NOT NULL DEFAULT 'adjust'
    CHECK (kind IN ('adjust', 'close'));
