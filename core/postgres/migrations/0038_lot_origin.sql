-- The lot a copy was made from. A merge moves the merged member's lots
-- into copies among the survivor's, and an undo or a partner's refund for a
-- member since merged gives points back in new lots with the dates of the
-- lots they left: each copy names its lot here, so that the lots a
-- partner's purchases made are known after a merge (a refund of the
-- purchase takes those first, and their expiry bounds what it takes).
-- Copies made before this column are tied to nothing.
ALTER TABLE lots ADD COLUMN IF NOT EXISTS origin_lot_id bigint;
