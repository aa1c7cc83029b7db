-- Statements say what each reversal or refund wrote off and what each undo
-- settled, as the commands' answers do (written_off, written_off_recovered).
--
-- What a reversal wrote off is in written_off by reversal_id, which needs
-- its own index: a statement looks up each posting of its page. What an
-- undo settled is not in written_off_recoveries, which also counts the
-- points it sent back to lots a reversal had taken them from (those went
-- to the member): written_off_settled keeps it per posting from now on,
-- and is filled here from the stored answers of the undos made since
-- migration 0034. Write-offs are rare: both are small.
CREATE INDEX IF NOT EXISTS written_off_reversal_idx ON written_off (reversal_id)
    WHERE reversal_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS written_off_settled (
    posting_id bigint PRIMARY KEY,
    points     bigint NOT NULL CHECK (points > 0)
);

INSERT INTO written_off_settled (posting_id, points)
SELECT r.posting_id, (c.result->'data'->>'written_off_recovered')::bigint
FROM (SELECT DISTINCT posting_id FROM written_off_recoveries) r
JOIN postings p ON p.id = r.posting_id
JOIN commands c ON c.source = p.source AND c.txn_id = p.txn_id
WHERE (c.result->'data'->>'written_off_recovered')::bigint > 0
ON CONFLICT (posting_id) DO NOTHING;
