package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// original is the posting a reversal undoes.
type original struct {
	id        int64
	memberID  string
	kind      string
	points    int64
	pending   int64
	occurred  time.Time
	reversing *int64
	partner   string // the partner of a purchase's accrual, "" for others
}

func (t *txn) findOriginal(ctx context.Context, m *member, cmd *bus.Command,
	in core.Reverse) (*original, error) {
	o := &original{}
	cols := `id, member_id, kind, points, pending_delta, occurred_at, reverses_id,
		coalesce(partner, '')`
	var row pgx.Row
	switch {
	case in.PostingID > 0 && in.OriginalTxnID == "":
		row = t.tx.QueryRow(ctx, `SELECT `+cols+` FROM postings WHERE id = $1`, in.PostingID)
	case in.PostingID == 0 && in.OriginalTxnID != "":
		// The first posting the original command made is the one it is known by.
		row = t.tx.QueryRow(ctx, `SELECT `+cols+` FROM postings
			WHERE source = $1 AND txn_id = $2 AND kind NOT IN ('expiry', 'maturation', 'release')
			ORDER BY id LIMIT 1`, cmd.Source, in.OriginalTxnID)
	default:
		return nil, core.Errorf(core.Invalid, "posting_id", "give posting_id or original_txn_id")
	}
	err := row.Scan(&o.id, &o.memberID, &o.kind, &o.points, &o.pending, &o.occurred, &o.reversing,
		&o.partner)
	// A posting of a member since merged into m is m's to reverse.
	if err == nil && o.memberID != m.id {
		var merged bool
		if merged, err = mergedFrom(ctx, t.tx, o.memberID, m.id); err == nil && !merged {
			err = pgx.ErrNoRows
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, t.noOriginal(ctx, m, cmd, in)
	}
	if err != nil {
		return nil, fmt.Errorf("read posting: %w", err)
	}
	// An order's redemption comes back with the order, which also gives the
	// reward's unit back and voids the voucher; reversed alone, it would
	// leave the member both the reward and its price.
	if o.kind == core.PostRedemption {
		var order string
		err := t.tx.QueryRow(ctx, `SELECT id FROM reward_orders WHERE posting_id = $1`,
			o.id).Scan(&order)
		switch {
		case err == nil:
			return nil, core.Errorf(core.Conflict, originalField(in), "the posting is the "+
				"redemption of catalog order %s: cancel the order instead (POST "+
				".../orders/%s/cancel), which gives the points and the reward's unit back "+
				"and voids its voucher", order, order)
		case !errors.Is(err, pgx.ErrNoRows):
			return nil, fmt.Errorf("read order of posting: %w", err)
		}
	}
	// A conversion's capture paid another program, which credited its
	// units: giving the points back would leave the member both.
	if o.kind == core.PostCapture {
		var conv, ext string
		err := t.tx.QueryRow(ctx, `SELECT c.id, c.external_code FROM postings p
			JOIN holds h ON h.id = p.hold_id
			JOIN conversions c ON c.hold_txn_id = h.txn_id
			WHERE p.id = $1 AND h.source = $2`, o.id, core.SourceConversion).Scan(&conv, &ext)
		switch {
		case err == nil:
			return nil, core.Errorf(core.Conflict, originalField(in), "the posting is the "+
				"capture of conversion %s into %s, which the other program credited: it "+
				"cannot be reversed here; if that program takes its units back, give the "+
				"points back with a credit (POST .../credits) naming the conversion", conv, ext)
		case !errors.Is(err, pgx.ErrNoRows):
			return nil, fmt.Errorf("read conversion of posting: %w", err)
		}
	}
	return o, nil
}

// noOriginal is the refusal of a reversal whose posting is not found. A
// transaction id names a posting of the caller's own source: when the
// member has a posting of that id from another caller (made through SOAP,
// say, and reversed through REST), the refusal says so and how to name it.
func (t *txn) noOriginal(ctx context.Context, m *member, cmd *bus.Command,
	in core.Reverse) error {
	if in.OriginalTxnID != "" {
		var other string
		var id int64
		err := t.tx.QueryRow(ctx, `SELECT source, id FROM postings
			WHERE member_id = $1 AND txn_id = $2 AND source <> $3
			ORDER BY id LIMIT 1`, m.id, in.OriginalTxnID, cmd.Source).Scan(&other, &id)
		if err == nil {
			return core.Errorf(core.NotFound, "original_txn_id", "no posting of this caller "+
				"(%s) has transaction id %q; the member's posting %d of that id was made by "+
				"%s: name it by posting_id", cmd.Source, in.OriginalTxnID, id, other)
		}
	}
	return core.Errorf(core.NotFound, originalField(in), "no such posting for this member")
}

// originalField is the field a reversal named its posting by.
func originalField(in core.Reverse) string {
	if in.OriginalTxnID != "" {
		return "original_txn_id"
	}
	return "posting_id"
}

// reverse undoes one posting, at most once (a unique index says so). A debit
// gives the points back to the lots it took, with their original expiry, and
// what has expired meanwhile expires at once. A credit claws back what is
// left of its lot; what was already spent is taken from other spendable
// points, and the rest follows the program's negative-balance policy.
func (t *txn) reverse(ctx context.Context, prog *program, m *member, cmd *bus.Command) (any, error) {
	var in core.Reverse
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if strings.TrimSpace(in.Reason) == "" {
		return nil, core.Errorf(core.Invalid, "reason", "is required")
	}
	if err := mustBe(m, "member", "active", "suspended"); err != nil {
		return nil, err
	}
	o, err := t.findOriginal(ctx, m, cmd, in)
	if err != nil {
		return nil, err
	}
	if in.OnlyKind != "" && o.kind != in.OnlyKind {
		return nil, core.Errorf(core.NotFound, "original_txn_id", "no %s posting with this id",
			in.OnlyKind)
	}
	var taken, written, recovered int64
	switch {
	case o.kind == core.PostAccrual || o.kind == core.PostCredit ||
		(o.kind == core.PostAdjustment && o.points+o.pending > 0):
		if o.memberID != m.id {
			taken, err = t.reverseMergedCredit(ctx, m, o, in)
			break
		}
		taken, written, err = t.reverseCredit(ctx, prog, m, o, in.Reason)
	case o.kind == core.PostRedemption || o.kind == core.PostCapture ||
		(o.kind == core.PostAdjustment && o.points < 0):
		taken, recovered, err = t.reverseDebit(ctx, m, o, in.Reason)
	default:
		return nil, core.Errorf(core.Invalid, "posting_id", "postings of kind %s cannot be reversed", o.kind)
	}
	if err != nil {
		return nil, err
	}
	out := t.outcome(m, taken)
	out.Written = core.Points(written)
	out.Recovered = core.Points(recovered)
	return out, nil
}

// reverseDebit gives back the points debit o took, to the lots it took them
// from. It returns the points the member got back and those that settled
// an earlier write-off instead (settleReturns).
func (t *txn) reverseDebit(ctx context.Context, m *member, o *original,
	reason string) (back, recovered int64, err error) {
	rows, err := t.tx.Query(ctx, `SELECT pl.lot_id, -pl.points, l.member_id, l.earned_at,
			l.spendable_from, l.expires_at
		FROM posting_lots pl JOIN lots l ON l.id = pl.lot_id
		WHERE pl.posting_id = $1 AND pl.points < 0 ORDER BY pl.lot_id`, o.id)
	if err != nil {
		return 0, 0, fmt.Errorf("read posting lots: %w", err)
	}
	var moves []core.LotMove
	var taken []lotRow
	var total int64
	merged := false
	for rows.Next() {
		var l lotRow
		var owner string
		if err := rows.Scan(&l.id, &l.remaining, &owner, &l.earned, &l.spendable,
			&l.expires); err != nil {
			rows.Close()
			return 0, 0, err
		}
		moves = append(moves, core.LotMove{LotID: l.id, Points: core.Points(l.remaining)})
		taken = append(taken, l)
		total += l.remaining
		merged = merged || owner != m.id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	id := o.id
	// A partner payment's capture undone is the partner's, as the capture was.
	var partner string
	if o.kind == core.PostCapture {
		var source, holdTxn string
		var refunded int64
		err := t.tx.QueryRow(ctx, `SELECT h.source, h.txn_id, coalesce((SELECT sum(r.points)
				FROM partner_refunds r WHERE r.hold_id = h.id), 0)
			FROM postings p JOIN holds h ON h.id = p.hold_id WHERE p.id = $1`,
			o.id).Scan(&source, &holdTxn, &refunded)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return 0, 0, fmt.Errorf("read capture's hold: %w", err)
		}
		partner = partnerOf(source)
		// The partner's first refund undid the capture already, in part or
		// whole: what is left is the partner's to refund.
		if refunded > 0 {
			return 0, 0, core.Errorf(core.Conflict, "posting_id", "the partner %s refunded %d "+
				"of this capture's %d points already (payment %q); the rest is refunded by the "+
				"partner, or given back with a credit", partner, refunded, total, holdTxn)
		}
	}
	// Points of a credit reversed since they were spent settle its
	// write-off first (the lots of a member since merged included), and
	// those of a credit whose reversal took other lots' points go back to
	// those lots (the member's own only).
	recovered, settled, moves, err := t.settleReturns(ctx, moves, !merged, nil)
	if err != nil {
		return 0, 0, err
	}
	// The lots of a member since merged into m were emptied by the merge:
	// the points come back to m in new lots with those lots' dates.
	if merged {
		for i := range taken {
			taken[i].remaining = int64(moves[i].Points)
		}
		pid, back, err := t.creditCopies(ctx, m, posting{kind: core.PostReversal, reason: reason,
			reversesID: &id, partner: partner}, taken)
		if err != nil {
			return 0, 0, err
		}
		t.lastMoves = back
		if err := t.recordRecovered(ctx, pid, settled, recovered); err != nil {
			return 0, 0, err
		}
		return total - recovered, recovered, t.markHoldReversed(ctx, o, pid)
	}
	// While the member owes points, what comes back repays the debt next.
	repaid, err := t.repayDebt(ctx, m, moves, max(0, -m.available))
	if err != nil {
		return 0, 0, err
	}
	settled = append(settled, repaid...)
	kept := moves[:0]
	for _, mv := range moves {
		if mv.Points > 0 {
			kept = append(kept, mv)
		}
	}
	if _, err := t.lockLots(ctx, kept); err != nil {
		return 0, 0, err
	}
	// The posting goes first: if the original was reversed already, its
	// unique index refuses this one before any lot is given points twice.
	pid, err := t.post(ctx, m, posting{kind: core.PostReversal, points: total - recovered,
		reason: reason, reversesID: &id, partner: partner, moves: kept})
	if err != nil {
		return 0, 0, err
	}
	if err := t.applyMoves(ctx, kept); err != nil {
		return 0, 0, err
	}
	t.lastMoves = kept
	if err := t.recordRecovered(ctx, pid, settled, recovered); err != nil {
		return 0, 0, err
	}
	if err := t.markHoldReversed(ctx, o, pid); err != nil {
		return 0, 0, err
	}
	return total - recovered, recovered, t.expireDue(ctx, m)
}

// markHoldReversed records on a partner payment's hold that the operator
// reversed its capture o in posting pid: the partner's settlement lists the
// reversal and pays nothing for those points. Other postings have no hold.
func (t *txn) markHoldReversed(ctx context.Context, o *original, pid int64) error {
	if o.kind != core.PostCapture {
		return nil
	}
	_, err := t.tx.Exec(ctx, `UPDATE holds SET reversal_posting_id = $2, reversed_at = $3
		WHERE id = (SELECT hold_id FROM postings WHERE id = $1)`, o.id, pid, t.now)
	if err != nil {
		return fmt.Errorf("mark hold reversed: %w", err)
	}
	return nil
}

// creditCopies gives points back to m for lots of a member merged into m
// (directly or through other merges). The merge emptied those lots into
// copies of m's, so points given back to them would stay with a member that
// can hold none: m gets instead, in posting p (spendable points, as a debit
// took), a new lot for each lot with its dates and the points it is owed
// (its remaining). While m owes points, what comes back repays the debt
// first; what is past its expiry expires at once. It returns the posting
// and the new lots as moves.
func (t *txn) creditCopies(ctx context.Context, m *member, p posting,
	lots []lotRow) (int64, []core.LotMove, error) {
	var n int64
	for _, l := range lots {
		n += l.remaining
	}
	p.points = n
	// The posting goes first, so that a second reversal of the same
	// original is refused by the unique index before any lot is made.
	pid, err := t.post(ctx, m, p)
	if err != nil {
		return 0, nil, err
	}
	debt := max(0, -(m.available - n))
	moves := []core.LotMove{}
	for _, l := range lots {
		if l.remaining <= 0 {
			continue
		}
		x := min(debt, l.remaining)
		debt -= x
		var id int64
		err := t.tx.QueryRow(ctx, `INSERT INTO lots (member_id, posting_id, earned_at,
				spendable_from, expires_at, pending, original, remaining, origin_lot_id)
			VALUES ($1, $2, $3, $4, $5, false, $6, $7, $8) RETURNING id`, m.id, pid, l.earned,
			l.spendable, l.expires, l.remaining, l.remaining-x, l.id).Scan(&id)
		if err != nil {
			return 0, nil, fmt.Errorf("insert lot copy: %w", err)
		}
		if _, err := t.repaidBy(ctx, m, id, x); err != nil {
			return 0, nil, err
		}
		if l.remaining > x {
			moves = append(moves, core.LotMove{LotID: id, Points: core.Points(l.remaining - x)})
		}
	}
	return pid, moves, t.expireDue(ctx, m)
}

// mergedFrom tells whether the member with id from was merged into the
// member with id into, directly or through other merges.
func mergedFrom(ctx context.Context, q pgxQuerier, from, into string) (bool, error) {
	var yes bool
	err := q.QueryRow(ctx, `WITH RECURSIVE up(id, depth) AS (
			SELECT $1::uuid, 0
			UNION ALL
			SELECT m.merged_into, u.depth + 1 FROM members m JOIN up u ON m.id = u.id
			WHERE m.merged_into IS NOT NULL AND u.depth < 16)
		SELECT EXISTS (SELECT 1 FROM up WHERE id = $2 AND depth > 0)`, from, into).Scan(&yes)
	if err != nil {
		return false, fmt.Errorf("read merges: %w", err)
	}
	return yes, nil
}

// mergedMembers lists as merged(id) the member with id $1 and every member
// merged into it, directly or through other merges: the members whose
// orders and payments are now that member's.
const mergedMembers = `WITH RECURSIVE merged(id) AS (
		SELECT $1::uuid
		UNION SELECT mm.id FROM members mm JOIN merged g ON mm.merged_into = g.id)
	`

func (t *txn) lockLots(ctx context.Context, moves []core.LotMove) (int, error) {
	if len(moves) == 0 {
		return 0, nil
	}
	ids := make([]int64, len(moves))
	for i, mv := range moves {
		ids[i] = mv.LotID
	}
	tag, err := t.tx.Exec(ctx, `SELECT 1 FROM lots WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return 0, fmt.Errorf("lock lots: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

func (t *txn) reverseCredit(ctx context.Context, prog *program, m *member, o *original,
	reason string) (taken, written int64, err error) {
	amount := o.points + o.pending
	var lotID, free, held int64
	var pending bool
	err = t.tx.QueryRow(ctx, `SELECT id, remaining - held, held, pending FROM lots
		WHERE posting_id = $1 FOR UPDATE`, o.id).Scan(&lotID, &free, &held, &pending)
	if err != nil {
		return 0, 0, fmt.Errorf("read credited lot: %w", err)
	}
	// Points of this credit reserved by an open hold may yet come back to the
	// lot; writing them off now would let a later release hand them out again.
	if held > 0 {
		return 0, 0, core.Errorf(core.Conflict, "posting_id",
			"%d points of this credit are reserved by an open hold; capture or release it first",
			held)
	}
	// Points of the lot that expired are gone already and are not owed back.
	var expired int64
	err = t.tx.QueryRow(ctx, `SELECT coalesce(sum(-pl.points), 0) FROM posting_lots pl
		JOIN postings p ON p.id = pl.posting_id
		WHERE pl.lot_id = $1 AND p.kind = 'expiry'`, lotID).Scan(&expired)
	if err != nil {
		return 0, 0, fmt.Errorf("read expired part: %w", err)
	}
	// A partner's purchase that the partner refunded (a purchase refund)
	// was taken back already, in part or whole: what is left of the
	// partner's purchases, the expired part of this one aside, bounds what
	// this reversal takes.
	if o.kind == core.PostAccrual && o.partner != "" {
		left, err := t.partnerPointsLeft(ctx, m, o.partner)
		if err != nil {
			return 0, 0, err
		}
		amount = min(amount, max(0, left)+expired)
	}

	// First what is left of the lot itself.
	own := min(free, amount)
	moves := []core.LotMove{}
	if own > 0 {
		moves = append(moves, core.LotMove{LotID: lotID, Points: core.Points(-own)})
	}
	var p posting
	if pending {
		p.pendingDelta = -own
	} else {
		p.points = -own
	}

	// Then what was spent, from the member's other spendable points.
	spent := max(0, amount-own-expired)
	var fromOthers int64
	if spent > 0 {
		// The credit's own lot is among them, still with its free points.
		lots, err := t.usableLots(ctx, m, spent+free)
		if err != nil {
			return 0, 0, err
		}
		var others []lotRow
		for _, l := range lots {
			if l.id != lotID {
				others = append(others, l)
			}
		}
		more, short := take(others, spent)
		moves = append(moves, more...)
		fromOthers = spent - short
		p.points -= fromOthers
		if short > 0 {
			if prog.NegativeBalance == core.NegativeAllow {
				p.points -= short
			} else {
				written = short
			}
		}
	}
	// The posting goes first, so that a second reversal is refused by the
	// unique index before it touches any lot.
	id := o.id
	p.kind, p.reason, p.reversesID, p.moves = core.PostReversal, reason, &id, moves
	pid, err := t.post(ctx, m, p)
	if err != nil {
		return 0, 0, err
	}
	if written > 0 {
		_, err = t.tx.Exec(ctx, `INSERT INTO written_off (reversal_id, lot_id, points)
			VALUES ($1, $2, $3)`, pid, lotID, written)
		if err != nil {
			return 0, 0, fmt.Errorf("record write-off: %w", err)
		}
	} else if owed := spent - fromOthers; owed > 0 {
		// The program allows the debt: it is the lot's, as a write-off
		// would be.
		_, err = t.tx.Exec(ctx, `INSERT INTO lot_debts (member_id, reversal_id, lot_id, points)
			VALUES ($1, $2, $3, $4)`, m.id, pid, lotID, owed)
		if err != nil {
			return 0, 0, fmt.Errorf("record debt: %w", err)
		}
	}
	// The points taken from other lots covered this credit's spending: if
	// that spending is undone, its points go back to those lots.
	for _, mv := range moves {
		if mv.LotID == lotID || mv.Points >= 0 {
			continue
		}
		_, err = t.tx.Exec(ctx, `INSERT INTO lot_covers (reversal_id, lot_id, cover_lot_id,
			points) VALUES ($1, $2, $3, $4)`, pid, lotID, mv.LotID, -int64(mv.Points))
		if err != nil {
			return 0, 0, fmt.Errorf("record cover: %w", err)
		}
	}
	if err := t.applyMoves(ctx, moves); err != nil {
		return 0, 0, err
	}
	t.lastMoves = moves
	return p.points + p.pendingDelta, written, nil
}

// reverseMergedCredit reverses a credit of a member since merged into m.
// The merge moved what was left of the credit's lot into a copy among m's
// lots, and an undo since gave points of it back in more copies; each names
// the lot it came from (origin_lot_id, migration 0038), so what is left of
// the credit is found, pending or spendable, and taken back. What expired
// or a partner's refund took from those lots (or from the copies of the
// members merged on the way) is not owed back. A credit of which some
// points were spent, before the merge or after, is refused: its
// write-off or debt would belong to lots of two members, which the
// settlement of later undos (settleReturns) does not follow.
func (t *txn) reverseMergedCredit(ctx context.Context, m *member, o *original,
	in core.Reverse) (int64, error) {
	field := originalField(in)
	// A second reversal is told so before anything is summed: the unique
	// index would say it only once the sums found nothing left.
	var reversed bool
	if err := t.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM postings
		WHERE reverses_id = $1)`, o.id).Scan(&reversed); err != nil {
		return 0, fmt.Errorf("read reversals: %w", err)
	}
	if reversed {
		return 0, core.Errorf(core.Conflict, field, "the posting was already reversed")
	}
	var lotID int64
	err := t.tx.QueryRow(ctx, `SELECT id FROM lots WHERE posting_id = $1`, o.id).Scan(&lotID)
	if err != nil {
		return 0, fmt.Errorf("read credited lot: %w", err)
	}
	// The lots descending from the credit's lot: m's, and those of the
	// members merged into m on the way (emptied by their merges, but where
	// points may have expired or been refunded first), found by walking up
	// from each copy of those members (origin_lot_id has no index to walk
	// down).
	rows, err := t.tx.Query(ctx, `WITH RECURSIVE merged(id) AS (
			SELECT $2::uuid
			UNION SELECT mm.id FROM members mm JOIN merged g ON mm.merged_into = g.id),
		up(lot, origin, depth) AS (
			SELECT l.id, l.origin_lot_id, 0 FROM lots l
			WHERE l.member_id IN (SELECT id FROM merged) AND l.origin_lot_id IS NOT NULL
			UNION ALL
			SELECT up.lot, y.origin_lot_id, up.depth + 1
			FROM lots y JOIN up ON y.id = up.origin
			WHERE up.depth < 16 AND y.origin_lot_id IS NOT NULL)
		SELECT l.id, l.member_id = $2::uuid, l.remaining, l.held, l.pending FROM lots l
		WHERE l.id IN (SELECT lot FROM up WHERE origin = $1)
		ORDER BY l.id FOR UPDATE OF l`, lotID, m.id)
	if err != nil {
		return 0, fmt.Errorf("read copies of the credited lot: %w", err)
	}
	type copyLot struct {
		id, remaining, held int64
		pending             bool
	}
	var copies []copyLot
	ids := []int64{lotID}
	for rows.Next() {
		var c copyLot
		var mine bool
		if err := rows.Scan(&c.id, &mine, &c.remaining, &c.held, &c.pending); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, c.id)
		if mine {
			copies = append(copies, c)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	var left, held int64
	for _, c := range copies {
		left += c.remaining
		held += c.held
	}
	if held > 0 {
		return 0, core.Errorf(core.Conflict, field, "%d points of this credit are reserved by "+
			"an open hold; capture or release it first", held)
	}
	// What expired, on the credit's lot or on a copy since, is gone
	// already and not owed back; what the partner's refunds took from them
	// was taken back already.
	var expired, refunded int64
	err = t.tx.QueryRow(ctx, `SELECT
			coalesce(sum(-pl.points) FILTER (WHERE p.kind = 'expiry'), 0),
			coalesce(sum(-pl.points) FILTER (WHERE p.kind = 'reversal'
				AND p.reverses_id IS NULL AND p.partner <> ''), 0)
		FROM posting_lots pl JOIN postings p ON p.id = pl.posting_id
		WHERE pl.lot_id = ANY($1) AND pl.points < 0`, ids).Scan(&expired, &refunded)
	if err != nil {
		return 0, fmt.Errorf("read expired and refunded parts: %w", err)
	}
	amount := o.points + o.pending
	if spent := amount - left - expired - refunded; spent > 0 {
		return 0, core.Errorf(core.Conflict, field, "the posting credited a member since "+
			"merged into this one, and %d of its %d points were spent; a partly spent credit "+
			"of a merged member is not reversed: take back the %d points left with a negative "+
			"adjustment of this member, and settle the %d spent as the program decides",
			spent, amount, left, spent)
	}
	var p posting
	moves := []core.LotMove{}
	due := max(0, amount-expired-refunded) // never more than the credit gave
	for _, c := range copies {
		x := min(c.remaining, due)
		if x == 0 {
			continue
		}
		due -= x
		moves = append(moves, core.LotMove{LotID: c.id, Points: core.Points(-x)})
		if c.pending {
			p.pendingDelta -= x
		} else {
			p.points -= x
		}
	}
	id := o.id
	p.kind, p.reason, p.reversesID, p.moves = core.PostReversal, in.Reason, &id, moves
	if _, err := t.post(ctx, m, p); err != nil {
		return 0, err
	}
	if err := t.applyMoves(ctx, moves); err != nil {
		return 0, err
	}
	t.lastMoves = moves
	return p.points + p.pendingDelta, nil
}

// settleReturns lowers moves, points on their way back to lots, by what
// is still written off on those lots: a credit reversed after its points
// were spent wrote off what it could not take (reverseCredit), and points
// of that spending that come back settle it before they are the member's
// again; older write-offs settle first. With covers set it then sends the
// rest of the points coming back to a reversed credit's lot to the lots
// that covered its spending (lot_covers), settling what is written off on
// those, and so on along chains of covers: the moves it returns then name
// those lots. Covers to the lots of notTo are left alone (a partner's
// refund: its recount of a payment's lots would count such points twice).
//
// The write-off settles before the covers get their points back: when only
// part of the spending comes back, the member is owed nothing yet (what the
// reversal wrote off is more than what came back), and the covering lots
// waiting does not hand the member points of a reversed credit. (Covers
// first gave them back at once, the write-off staying open, and a program
// that forbids debt ended richer than one that allows it.)
//
// It returns the points settled, and by lot what did not land where it
// was going (settled, or sent to a cover), which recordRecovered keeps with
// the posting that brought it back.
func (t *txn) settleReturns(ctx context.Context, moves []core.LotMove, covers bool,
	notTo []int64) (int64, []core.LotMove, []core.LotMove, error) {
	var by []core.LotMove
	var total int64
	t.coverBack = nil
	for range 64 {
		n, settled, err := t.settleWriteOffs(ctx, moves)
		if err != nil {
			return 0, nil, nil, err
		}
		total += n
		by = append(by, settled...)
		if !covers {
			break
		}
		var step []core.LotMove
		if moves, step, err = t.returnCoversOnce(ctx, moves, notTo); err != nil {
			return 0, nil, nil, err
		}
		if len(step) == 0 {
			break
		}
		by = append(by, step...)
	}
	return total, by, moves, nil
}

// repayDebt takes debt points out of what moves bring back. Points coming
// back to a lot whose spending left a debt (lot_debts) repay it first: a
// program that forbids debt settles its write-off from them the same way.
// What is still owed then comes from the other lots, from the end of
// moves, first of all from lots whose credit was reversed (a debt made
// before lot_debts is tied to no lot, and comes from such a reversal); each
// lot that repays a debt of another in its place covers it (repaidBy). It
// returns, by lot, the points that repaid a debt instead of landing: a
// partner's refund in parts counts them as given back to their lot
// (recordRecovered), as it does points that settled a write-off.
func (t *txn) repayDebt(ctx context.Context, m *member, moves []core.LotMove,
	debt int64) ([]core.LotMove, error) {
	if debt <= 0 {
		return nil, nil
	}
	before := slices.Clone(moves)
	debt, err := t.settleDebts(ctx, moves, debt)
	if err == nil && debt > 0 {
		err = t.repayDebtFrom(ctx, m, moves, debt)
	}
	if err != nil {
		return nil, err
	}
	var repaid []core.LotMove
	for i := range moves {
		if x := before[i].Points - moves[i].Points; x > 0 {
			repaid = append(repaid, core.LotMove{LotID: moves[i].LotID, Points: x})
		}
	}
	return repaid, nil
}

// repayDebtFrom is repayDebt once the debts tied to the lots moves bring
// points back to are settled: debt is what is still owed.
func (t *txn) repayDebtFrom(ctx context.Context, m *member, moves []core.LotMove,
	debt int64) error {
	reversed := map[int64]bool{}
	rows, err := t.tx.Query(ctx, `SELECT l.id FROM lots l
		WHERE l.id = ANY($1) AND EXISTS (SELECT 1 FROM postings r
			WHERE r.reverses_id = l.posting_id)`, receiving(moves))
	if err != nil {
		return fmt.Errorf("read reversed lots: %w", err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		reversed[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for pass := range 2 {
		for i := len(moves) - 1; i >= 0 && debt > 0; i-- {
			if pass == 0 && !reversed[moves[i].LotID] {
				continue
			}
			x := min(debt, max(0, int64(moves[i].Points)))
			if x == 0 {
				continue
			}
			moves[i].Points -= core.Points(x)
			debt -= x
			tied, err := t.repaidBy(ctx, m, moves[i].LotID, x)
			if err != nil {
				return err
			}
			// Points a cover got back that repay a debt tied to no lot
			// are not back with it: the cover stays owed them, so that
			// the rest of the spending, when it comes back, goes there.
			if err := t.unreturnCovers(ctx, moves[i].LotID, x-tied); err != nil {
				return err
			}
		}
	}
	return nil
}

// settleDebts repays, from the points moves bring back to lots whose
// spending left a debt, those debts, oldest first, up to debt points in
// all. It returns what is still owed.
func (t *txn) settleDebts(ctx context.Context, moves []core.LotMove, debt int64) (int64,
	error) {
	rows, err := t.tx.Query(ctx, `SELECT id, lot_id, points - repaid FROM lot_debts
		WHERE lot_id = ANY($1) AND repaid < points ORDER BY id FOR UPDATE`, receiving(moves))
	if err != nil {
		return 0, fmt.Errorf("read debts: %w", err)
	}
	type owed struct{ id, lot, points int64 }
	due, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (owed, error) {
		var o owed
		return o, r.Scan(&o.id, &o.lot, &o.points)
	})
	if err != nil {
		return 0, fmt.Errorf("read debts: %w", err)
	}
	for _, o := range due {
		i := slices.IndexFunc(moves, func(mv core.LotMove) bool {
			return mv.LotID == o.lot && mv.Points > 0
		})
		if i < 0 || debt == 0 {
			continue
		}
		x := min(o.points, int64(moves[i].Points), debt)
		moves[i].Points -= core.Points(x)
		debt -= x
		_, err := t.tx.Exec(ctx, `UPDATE lot_debts SET repaid = repaid + $2 WHERE id = $1`,
			o.id, x)
		if err != nil {
			return 0, fmt.Errorf("repay debt: %w", err)
		}
	}
	return debt, nil
}

// repaidBy records that n points of lot, which would have been m's to
// spend, repaid what m owed instead: they repay m's debts tied to lots
// (lot_debts), oldest first, and lot covers each of those lots for what
// it repaid (lot_covers), as if a reversal had taken the points from it:
// the spending that left the debt, if undone, brings its points back to
// lot. It returns the part of n that repaid such debts; the rest repaid
// a debt tied to no lot. Every place where a credit, a maturing lot, a
// release or points coming back repay a debt calls it.
func (t *txn) repaidBy(ctx context.Context, m *member, lot, n int64) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	rows, err := t.tx.Query(ctx, `SELECT id, reversal_id, lot_id, points - repaid FROM lot_debts
		WHERE member_id = $1 AND repaid < points ORDER BY id FOR UPDATE`, m.id)
	if err != nil {
		return 0, fmt.Errorf("read debts: %w", err)
	}
	type owed struct{ id, reversal, lot, points int64 }
	due, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (owed, error) {
		var o owed
		return o, r.Scan(&o.id, &o.reversal, &o.lot, &o.points)
	})
	if err != nil {
		return 0, fmt.Errorf("read debts: %w", err)
	}
	var tied int64
	for _, o := range due {
		if tied == n {
			break
		}
		x := min(o.points, n-tied)
		tied += x
		_, err := t.tx.Exec(ctx, `UPDATE lot_debts SET repaid = repaid + $2 WHERE id = $1`,
			o.id, x)
		if err != nil {
			return 0, fmt.Errorf("repay debt: %w", err)
		}
		if o.lot == lot {
			continue // the lot's own points came back: settled, as settleDebts does
		}
		_, err = t.tx.Exec(ctx, `INSERT INTO lot_covers (reversal_id, lot_id, cover_lot_id,
			points) VALUES ($1, $2, $3, $4)`, o.reversal, o.lot, lot, x)
		if err != nil {
			return 0, fmt.Errorf("record cover: %w", err)
		}
	}
	return tied, nil
}

// coverReturn is points settleReturns sent from a reversed credit's lot
// (from) to the lot that covered it (to), by the lot_covers row id.
type coverReturn struct{ id, from, to, points int64 }

// unreturnCovers takes n points that the last settleReturns sent to lot
// back off the covers that sent them, latest first, and along the chain
// of covers that brought them there.
func (t *txn) unreturnCovers(ctx context.Context, lot, n int64) error {
	for i := len(t.coverBack) - 1; i >= 0 && n > 0; i-- {
		c := &t.coverBack[i]
		if c.to != lot || c.points == 0 {
			continue
		}
		y := min(n, c.points)
		c.points -= y
		n -= y
		_, err := t.tx.Exec(ctx, `UPDATE lot_covers SET returned = returned - $2
			WHERE id = $1`, c.id, y)
		if err != nil {
			return fmt.Errorf("take back cover return: %w", err)
		}
		if err := t.unreturnCovers(ctx, c.from, y); err != nil {
			return err
		}
	}
	return nil
}

// receiving lists the lots moves bring points back to.
func receiving(moves []core.LotMove) []int64 {
	ids := make([]int64, 0, len(moves))
	for _, mv := range moves {
		if mv.Points > 0 {
			ids = append(ids, mv.LotID)
		}
	}
	return ids
}

// returnCoversOnce sends what moves bring back to lots whose credit's
// reversal took points from other lots, up to those points, to those lots,
// oldest cover first: one step along the covers (settleReturns).
func (t *txn) returnCoversOnce(ctx context.Context, moves []core.LotMove,
	notTo []int64) ([]core.LotMove, []core.LotMove, error) {
	ids := receiving(moves)
	if len(ids) == 0 {
		return moves, nil, nil
	}
	if notTo == nil {
		notTo = []int64{} // <> ALL of NULL would match no cover
	}
	rows, err := t.tx.Query(ctx, `SELECT id, lot_id, cover_lot_id, points - returned
		FROM lot_covers WHERE lot_id = ANY($1) AND returned < points
		  AND cover_lot_id <> ALL($2::bigint[])
		ORDER BY id FOR UPDATE`, ids, notTo)
	if err != nil {
		return nil, nil, fmt.Errorf("read covers: %w", err)
	}
	type cover struct{ id, lot, to, points int64 }
	var cs []cover
	for rows.Next() {
		var c cover
		if err := rows.Scan(&c.id, &c.lot, &c.to, &c.points); err != nil {
			rows.Close()
			return nil, nil, err
		}
		cs = append(cs, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	var by []core.LotMove
	for _, c := range cs {
		i := slices.IndexFunc(moves, func(mv core.LotMove) bool {
			return mv.LotID == c.lot && mv.Points > 0
		})
		if i < 0 {
			continue
		}
		x := min(c.points, int64(moves[i].Points))
		moves[i].Points -= core.Points(x)
		if j := slices.IndexFunc(moves, func(mv core.LotMove) bool {
			return mv.LotID == c.to
		}); j >= 0 {
			moves[j].Points += core.Points(x)
		} else {
			moves = append(moves, core.LotMove{LotID: c.to, Points: core.Points(x)})
		}
		by = append(by, core.LotMove{LotID: c.lot, Points: core.Points(x)})
		t.coverBack = append(t.coverBack, coverReturn{id: c.id, from: c.lot, to: c.to,
			points: x})
		_, err := t.tx.Exec(ctx, `UPDATE lot_covers SET returned = returned + $2
			WHERE id = $1`, c.id, x)
		if err != nil {
			return nil, nil, fmt.Errorf("return cover: %w", err)
		}
	}
	return moves, by, nil
}

// settleWriteOffs settles the write-offs on the lots moves bring points
// back to (settleReturns).
func (t *txn) settleWriteOffs(ctx context.Context, moves []core.LotMove) (int64,
	[]core.LotMove, error) {
	ids := receiving(moves)
	if len(ids) == 0 {
		return 0, nil, nil
	}
	rows, err := t.tx.Query(ctx, `SELECT id, lot_id, points - recovered
		FROM written_off WHERE lot_id = ANY($1) AND recovered < points
		ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return 0, nil, fmt.Errorf("read write-offs: %w", err)
	}
	type owed struct{ id, lot, points int64 }
	var due []owed
	for rows.Next() {
		var o owed
		if err := rows.Scan(&o.id, &o.lot, &o.points); err != nil {
			rows.Close()
			return 0, nil, err
		}
		due = append(due, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	var total int64
	var by []core.LotMove
	for _, o := range due {
		for i := range moves {
			if moves[i].LotID != o.lot || moves[i].Points <= 0 {
				continue
			}
			x := min(o.points, int64(moves[i].Points))
			moves[i].Points -= core.Points(x)
			total += x
			by = append(by, core.LotMove{LotID: o.lot, Points: core.Points(x)})
			_, err := t.tx.Exec(ctx, `UPDATE written_off SET recovered = recovered + $2
				WHERE id = $1`, o.id, x)
			if err != nil {
				return 0, nil, fmt.Errorf("settle write-off: %w", err)
			}
			break
		}
	}
	return total, by, nil
}

// recordRecovered keeps, with posting pid, the points it brought back that
// settled write-offs, repaid debts or went back to lots a reversal had
// covered from, by lot (a partner's later refund of the same payment counts
// them as given back to their lot), and recovered, the part that settled
// write-offs (what the statement shows beside the posting).
func (t *txn) recordRecovered(ctx context.Context, pid int64, by []core.LotMove,
	recovered int64) error {
	if recovered > 0 {
		_, err := t.tx.Exec(ctx, `INSERT INTO written_off_settled (posting_id, points)
			VALUES ($1, $2)`, pid, recovered)
		if err != nil {
			return fmt.Errorf("record settled write-off: %w", err)
		}
	}
	for _, mv := range by {
		_, err := t.tx.Exec(ctx, `INSERT INTO written_off_recoveries (posting_id, lot_id, points)
			VALUES ($1, $2, $3) ON CONFLICT (posting_id, lot_id)
			DO UPDATE SET points = written_off_recoveries.points + EXCLUDED.points`,
			pid, mv.LotID, int64(mv.Points))
		if err != nil {
			return fmt.Errorf("record recovered write-off: %w", err)
		}
	}
	return nil
}
