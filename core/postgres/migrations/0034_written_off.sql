-- Points written off, by the lot they were taken from, and how much of them
-- came back since: by the reversal of a credit (its own lot), or by a
-- partner's refund of a money purchase (the lots the purchases made).
--
-- A reversal of a credit whose points the member had spent takes what it
-- can and, when the program forbids a negative balance, writes off the
-- rest. When the spending is undone later (an order cancelled, a
-- redemption reversed, a partner's refund), its points return to the lots
-- they were taken from, the reversed credit's lot among them: they settle
-- what was written off first (recovered), and only the rest returns to the
-- member. Without this the member kept the points of a reversed credit.
CREATE TABLE written_off (
    id          bigserial PRIMARY KEY,
    -- The reversal's posting; for a partner refund that posted nothing,
    -- NULL.
    reversal_id bigint,
    lot_id      bigint NOT NULL,
    points      bigint NOT NULL CHECK (points > 0),
    recovered   bigint NOT NULL DEFAULT 0,
    CHECK (recovered >= 0 AND recovered <= points)
);
CREATE INDEX written_off_lot_idx ON written_off (lot_id) WHERE recovered < points;

-- What each posting that brought points back settled of write-offs, by lot:
-- the points went to the write-off, not to the lot, so the posting's lot
-- moves do not show them, and a partner's later refund of the same payment
-- reads here what each lot already got back.
CREATE TABLE written_off_recoveries (
    posting_id bigint NOT NULL,
    lot_id     bigint NOT NULL,
    points     bigint NOT NULL CHECK (points > 0),
    PRIMARY KEY (posting_id, lot_id)
);

-- The write-offs of reversals made before this table: what the credit gave,
-- less what its reversal took (from the lot and from the member's other
-- points, or as a debt) and what of the lot had expired by then. Points
-- that came back to the lot since (a spending undone by an earlier version,
-- which gave them to the member) count as recovered already: the member
-- has them, and taking them again from a later return would take them
-- twice. A lot has one credit, reversed at most once.
INSERT INTO written_off (reversal_id, lot_id, points, recovered)
SELECT r.id, l.id, w.points, least(w.points, b.back)
FROM postings r
JOIN postings c ON c.id = r.reverses_id
JOIN lots l ON l.posting_id = c.id
CROSS JOIN LATERAL (SELECT (c.points + c.pending_delta) + (r.points + r.pending_delta)
        - coalesce((SELECT sum(-pl.points) FROM posting_lots pl
            JOIN postings e ON e.id = pl.posting_id
            WHERE pl.lot_id = l.id AND e.kind = 'expiry' AND e.id < r.id), 0) AS points) w
CROSS JOIN LATERAL (SELECT coalesce(sum(pl.points), 0) AS back FROM posting_lots pl
        JOIN postings p ON p.id = pl.posting_id
        WHERE pl.lot_id = l.id AND pl.points > 0 AND p.kind = 'reversal' AND p.id > r.id) b
WHERE r.kind = 'reversal' AND w.points > 0;

-- Points a credit's reversal took from the member's other lots, because the
-- credit's own were spent: the spending, undone later, brings its points
-- back to the credit's lot (lot_id), and they go to the lots that covered
-- it (cover_lot_id) instead, with those lots' dates; one of them reversed
-- since settles its own write-off with them.
CREATE TABLE lot_covers (
    id           bigserial PRIMARY KEY,
    reversal_id  bigint NOT NULL,
    lot_id       bigint NOT NULL,
    cover_lot_id bigint NOT NULL,
    points       bigint NOT NULL CHECK (points > 0),
    returned     bigint NOT NULL DEFAULT 0,
    CHECK (returned >= 0 AND returned <= points)
);
CREATE INDEX lot_covers_lot_idx ON lot_covers (lot_id) WHERE returned < points;

-- The covers of reversals made before this table. What came back to the
-- credit's lot since went to the member already: it settled the
-- reversal's write-off first (above), and the rest counts as returned.
INSERT INTO lot_covers (reversal_id, lot_id, cover_lot_id, points)
SELECT r.id, l.id, pl.lot_id, -pl.points
FROM postings r
JOIN postings c ON c.id = r.reverses_id
JOIN lots l ON l.posting_id = c.id
JOIN posting_lots pl ON pl.posting_id = r.id AND pl.lot_id <> l.id AND pl.points < 0
WHERE r.kind = 'reversal'
ORDER BY r.id, pl.lot_id;
UPDATE lot_covers v SET returned = least(v.points, greatest(0,
        (SELECT coalesce(sum(pl.points), 0) FROM posting_lots pl
         JOIN postings p ON p.id = pl.posting_id
         WHERE pl.lot_id = v.lot_id AND pl.points > 0 AND p.kind = 'reversal'
           AND p.id > v.reversal_id)
        - coalesce((SELECT sum(w.recovered) FROM written_off w
                    WHERE w.lot_id = v.lot_id AND w.reversal_id = v.reversal_id), 0)
        - coalesce((SELECT sum(v2.points) FROM lot_covers v2
                    WHERE v2.lot_id = v.lot_id AND v2.id < v.id), 0)));
