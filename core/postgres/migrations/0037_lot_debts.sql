-- What a member owes, by the lot it came from, in programs that allow a
-- negative balance.
--
-- A credit reversed after its points were spent takes what it can from the
-- credit's lot and the member's other lots, and in such a program leaves
-- the rest owed (a forbidding program writes it off: written_off). A
-- partner's refund of a money purchase whose points were spent does the
-- same on the lots the partner's purchases made. The debt is the member's;
-- this table says which lot's spending it stands for, so that the points
-- of that spending, if it is undone, repay it (they come back to that lot),
-- and so that points of another lot that repaid it first (a later credit,
-- points maturing or released) go back to that lot instead, as lot_covers
-- rows: the same history then leaves the member's points on the same lots,
-- with the same dates, whichever the policy.
--
-- Debts left by reversals made before this table are not tied to a lot:
-- they are repaid as before.
CREATE TABLE IF NOT EXISTS lot_debts (
    id          bigserial PRIMARY KEY,
    member_id   uuid NOT NULL,
    -- The reversal's posting.
    reversal_id bigint NOT NULL,
    lot_id      bigint NOT NULL,
    points      bigint NOT NULL CHECK (points > 0),
    repaid      bigint NOT NULL DEFAULT 0,
    CHECK (repaid >= 0 AND repaid <= points)
);
CREATE INDEX IF NOT EXISTS lot_debts_member_idx ON lot_debts (member_id, id)
    WHERE repaid < points;
CREATE INDEX IF NOT EXISTS lot_debts_lot_idx ON lot_debts (lot_id) WHERE repaid < points;
