-- What each partner's refunds of money purchases claimed from a member.
--
-- A partner takes back no more than its purchases gave the member, less
-- what it claimed before. A claim's points are not all in its posting:
-- what the member no longer had was written off, and a claim written off
-- whole makes no posting at all. Counting postings let the same points be
-- claimed again; the claims are kept here instead.
--
-- Claims made before this table are copied from their postings (what they
-- wrote off was not kept anywhere, so it cannot be copied).

CREATE TABLE IF NOT EXISTS partner_clawbacks (
    member_id  uuid NOT NULL,
    partner    text NOT NULL,
    points     bigint NOT NULL CHECK (points > 0),
    posting_id bigint,
    created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS partner_clawbacks_member_idx ON partner_clawbacks (member_id, partner);

INSERT INTO partner_clawbacks (member_id, partner, points, posting_id, created_at)
SELECT p.member_id, p.partner, -p.points, p.id, p.recorded_at
FROM postings p
WHERE p.kind = 'reversal' AND p.reverses_id IS NULL AND p.points < 0
  AND p.rule_version LIKE 'program-rate:%' AND p.partner <> ''
  AND NOT EXISTS (SELECT 1 FROM partner_clawbacks c WHERE c.posting_id = p.id);
