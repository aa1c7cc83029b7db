-- What a partner's payment is worth, and the capture that took it.
--
-- A partner's settlement valued every capture of a period at the partner's
-- point value of the day it was asked for: a price renegotiated after a
-- month closed changed what that month owed. A partner's hold now keeps the
-- point value in force when it was placed, and its captures, refunds and
-- the operator's reversals are worth that. Holds placed before this
-- migration take the partner's point value as it is now, the best there is.
--
-- A settlement line of a capture named the hold's transaction id twice;
-- the hold now keeps the capture's own, which the partner reconciles by.
-- Holds captured before this migration take it from their capture posting
-- (one pass over the postings).

ALTER TABLE holds ADD COLUMN IF NOT EXISTS point_value numeric(21, 6);
ALTER TABLE holds ADD COLUMN IF NOT EXISTS capture_txn_id text;

UPDATE holds h SET point_value = pa.point_value
FROM members m, partners pa
WHERE m.id = h.member_id AND pa.program_id = m.program_id
  AND h.source = 'partner:' || pa.code AND h.point_value IS NULL;

UPDATE holds h SET capture_txn_id = p.txn_id
FROM postings p
WHERE p.hold_id = h.id AND p.kind = 'capture' AND h.captured > 0
  AND h.capture_txn_id IS NULL;
