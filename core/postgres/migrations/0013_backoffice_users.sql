-- Back office: users an administrator has disabled, and approvals that
-- could not reach the ledger (the bus was down) and may be sent again.

ALTER TABLE bo_users ADD COLUMN disabled_at timestamptz;

ALTER TABLE bo_pending_adjustments DROP CONSTRAINT bo_pending_adjustments_status_check;
ALTER TABLE bo_pending_adjustments ADD CONSTRAINT bo_pending_adjustments_status_check
    CHECK (status IN ('pending', 'applied', 'refused', 'rejected', 'submitted', 'failed'));
