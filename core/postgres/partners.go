package postgres

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// isConstraint reports whether err is a PostgreSQL error about the named
// constraint.
func isConstraint(err error, name string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.ConstraintName == name
}

func (t *txn) upsertPartner(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.Partner
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if in.Program != "" || in.UpdatedAt != nil {
		return nil, core.Errorf(core.Invalid, "program", "is set by Puntos")
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	active := in.Active == nil || *in.Active
	var maxEarn *string
	if in.MaxEarnAmount != "" {
		maxEarn = &in.MaxEarnAmount
	}
	var ok bool
	err := t.tx.QueryRow(ctx, `INSERT INTO partners (id, program_id, code, name, currency,
			point_value, can_burn, can_earn, max_burn_points, max_earn_amount, hold_ttl_seconds,
			active, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6::numeric, $7, $8, $9, $10::numeric, $11, $12, $13, $13)
		ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, currency = EXCLUDED.currency,
			point_value = EXCLUDED.point_value, can_burn = EXCLUDED.can_burn,
			can_earn = EXCLUDED.can_earn, max_burn_points = EXCLUDED.max_burn_points,
			max_earn_amount = EXCLUDED.max_earn_amount,
			hold_ttl_seconds = EXCLUDED.hold_ttl_seconds, active = EXCLUDED.active,
			updated_at = EXCLUDED.updated_at
		WHERE partners.program_id = EXCLUDED.program_id
		RETURNING true`, uuid.Must(uuid.NewV7()).String(), prog.ID, in.Code, in.Name,
		in.Currency, in.PointValue, in.CanBurn, in.CanEarn, int64(in.MaxBurnPoints), maxEarn,
		in.HoldTTLSeconds, active, t.now).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.Conflict, "code", "partner %q belongs to another program",
			in.Code)
	}
	if err != nil {
		return nil, fmt.Errorf("upsert partner: %w", err)
	}
	// A deactivated partner can no longer capture or void: its open holds
	// run out now, so that their points come back to the members (the sweep
	// releases them; balances count them free at once) instead of staying
	// reserved until their own end, up to months away.
	if !active {
		_, err = t.tx.Exec(ctx, `UPDATE holds SET expires_at = $2
			WHERE source = $1 AND status = 'open' AND expires_at > $2`,
			core.PartnerSourcePrefix+in.Code, t.now)
		if err != nil {
			return nil, fmt.Errorf("end the partner's holds: %w", err)
		}
	}
	p, _, err := readPartner(ctx, t.tx, prog.Code, in.Code)
	return p, err
}

func (t *txn) createPartnerKey(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.CreatePartnerKey
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	digest, err := hex.DecodeString(in.Digest)
	if err != nil || len(digest) != 32 {
		return nil, core.Errorf(core.Invalid, "digest", "must be a hex SHA-256 digest")
	}
	if _, err := uuid.Parse(in.KeyID); err != nil {
		return nil, core.Errorf(core.Invalid, "key_id", "must be a UUID")
	}
	if len(in.Scopes) == 0 {
		return nil, core.Errorf(core.Invalid, "scopes", "name at least one operation")
	}
	for _, s := range in.Scopes {
		if !slices.Contains(core.Scopes, s) {
			return nil, core.Errorf(core.Invalid, "scopes", "unknown scope %q", s)
		}
	}
	var partnerID string
	err = t.tx.QueryRow(ctx, `SELECT id FROM partners WHERE program_id = $1 AND code = $2`,
		prog.ID, in.Partner).Scan(&partnerID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "partner", "no partner %q in this program",
			in.Partner)
	}
	if err != nil {
		return nil, fmt.Errorf("read partner: %w", err)
	}
	_, err = t.tx.Exec(ctx, `INSERT INTO partner_keys (id, partner_id, prefix, digest, scopes,
		created_at) VALUES ($1, $2, $3, $4, $5, $6)`, in.KeyID, partnerID, in.Prefix, digest,
		in.Scopes, t.now)
	if isConstraint(err, "partner_keys_digest_key") || isConstraint(err, "partner_keys_pkey") {
		return nil, core.Errorf(core.Conflict, "key_id", "this key exists already")
	}
	if err != nil {
		return nil, fmt.Errorf("insert partner key: %w", err)
	}
	return core.PartnerKey{ID: in.KeyID, Partner: in.Partner, Prefix: in.Prefix,
		Scopes: in.Scopes, CreatedAt: t.now}, nil
}

func (t *txn) revokePartnerKey(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.RevokePartnerKey
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(in.KeyID); err != nil {
		return nil, core.Errorf(core.NotFound, "key_id", "no such key")
	}
	k := core.PartnerKey{ID: in.KeyID, Partner: in.Partner}
	err := t.tx.QueryRow(ctx, `UPDATE partner_keys k
		SET revoked_at = coalesce(k.revoked_at, $4)
		FROM partners p
		WHERE k.id = $1 AND p.id = k.partner_id AND p.program_id = $2 AND p.code = $3
		RETURNING k.prefix, k.scopes, k.created_at, k.revoked_at`, in.KeyID, prog.ID,
		in.Partner, t.now).Scan(&k.Prefix, &k.Scopes, &k.CreatedAt, &k.RevokedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "key_id", "no such key of partner %q", in.Partner)
	}
	if err != nil {
		return nil, fmt.Errorf("revoke partner key: %w", err)
	}
	return k, nil
}

// purchaseCurrency is the currency of a partner's purchase or purchase
// refund as the ledger reads it: the one the command names, else, for a
// command a partner sent, the partner's settlement currency. The gateway
// sends the body as the partner wrote it, so that a retry stays the same
// request whatever the partner's settings became in between.
func (t *txn) purchaseCurrency(ctx context.Context, prog *program, cmd *bus.Command,
	given string) (string, error) {
	if c := strings.TrimSpace(given); c != "" {
		return c, nil
	}
	code := partnerOf(cmd.Source)
	if code == "" {
		return "", nil
	}
	var cur string
	err := t.tx.QueryRow(ctx, `SELECT currency FROM partners
		WHERE program_id = $1 AND code = $2`, prog.ID, code).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read partner currency: %w", err)
	}
	return cur, nil
}

// checkPurchaseCurrency refuses a partner's purchase or refund whose money
// (purchaseCurrency) is not the program's.
func (t *txn) checkPurchaseCurrency(ctx context.Context, prog *program, cmd *bus.Command,
	given string) error {
	cur, err := t.purchaseCurrency(ctx, prog, cmd, given)
	if err != nil {
		return err
	}
	if cur != "" && !strings.EqualFold(cur, prog.Currency) {
		return core.Errorf(core.Invalid, "currency", "the program counts in %s", prog.Currency)
	}
	return nil
}

// partnerOf is the partner code of a command source, or "".
func partnerOf(source string) string {
	code, ok := strings.CutPrefix(source, core.PartnerSourcePrefix)
	if !ok {
		return ""
	}
	return code
}

// partnerRefund gives back part or all of what a partner captured, to the
// lots the capture took, latest expiry first. The refunds of a hold never
// add up to more than it captured: they are summed under the hold's row
// lock. The first refund of a capture is recorded as its reversal, so that
// the capture cannot also be reversed whole afterwards (nor refunded after
// a whole reversal).
//
// A payment of a member since merged into m is m's: the capture's lots were
// emptied by the merge, so the points come back to m in new lots with those
// lots' dates (see creditCopies).
func (t *txn) partnerRefund(ctx context.Context, prog *program, m *member,
	cmd *bus.Command) (any, error) {
	var in core.PartnerRefund
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if in.Points < 0 || in.Points > core.MaxPoints {
		return nil, core.Errorf(core.Invalid, "points", "must be between 0 (all that is left) "+
			"and %d", core.MaxPoints)
	}
	if in.HoldTxnID == "" {
		return nil, core.Errorf(core.Invalid, "hold_txn_id", "is required")
	}
	if err := mustBe(m, "member", "active", "suspended"); err != nil {
		return nil, err
	}
	var holdID, memberID, status string
	var captured int64
	err := t.tx.QueryRow(ctx, `SELECT id, member_id, status, captured FROM holds
		WHERE source = $1 AND txn_id = $2 FOR UPDATE`, cmd.Source, in.HoldTxnID).Scan(
		&holdID, &memberID, &status, &captured)
	merged := false
	if err == nil && memberID != m.id {
		if merged, err = mergedFrom(ctx, t.tx, memberID, m.id); err == nil && !merged {
			err = pgx.ErrNoRows
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "hold_txn_id", "no payment %q for this member",
			in.HoldTxnID)
	}
	if err != nil {
		return nil, fmt.Errorf("lock hold: %w", err)
	}
	if status != "captured" || captured == 0 {
		return nil, core.Errorf(core.Conflict, "hold_txn_id",
			"only a captured payment can be refunded; this one is %s", status)
	}
	var refunded int64
	err = t.tx.QueryRow(ctx, `SELECT coalesce(sum(points), 0) FROM partner_refunds
		WHERE hold_id = $1`, holdID).Scan(&refunded)
	if err != nil {
		return nil, fmt.Errorf("sum refunds: %w", err)
	}
	left := captured - refunded
	n := int64(in.Points)
	if n == 0 {
		n = left
	}
	if left == 0 {
		return nil, core.Errorf(core.Conflict, "hold_txn_id",
			"the payment of %d points is refunded in full already", captured)
	}
	if n > left {
		return nil, core.Errorf(core.Invalid, "points",
			"%d exceeds what is left to refund: %d of %d captured", n, left, captured)
	}

	// What each lot of the capture still has to get back, latest expiry first.
	var captureID int64
	err = t.tx.QueryRow(ctx, `SELECT id FROM postings WHERE hold_id = $1 AND kind = 'capture'`,
		holdID).Scan(&captureID)
	if err != nil {
		return nil, fmt.Errorf("read capture: %w", err)
	}
	// The first refund reverses the capture. When the operator reversed it
	// first, the member has the points back already; the partner names the
	// payment, not the posting, so the refusal is about hold_txn_id.
	if refunded == 0 {
		var reversed bool
		err = t.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM postings
			WHERE reverses_id = $1)`, captureID).Scan(&reversed)
		if err != nil {
			return nil, fmt.Errorf("read reversal of capture: %w", err)
		}
		if reversed {
			return nil, errReversedByOperator(in.HoldTxnID)
		}
	}
	// The refunds made since the merge went to new lots of m, not to the
	// capture's lots, in the same order: they are passed over first, but
	// for what they settled of write-offs, which the capture's lots count
	// already (written_off_recoveries).
	var since int64
	if merged {
		err = t.tx.QueryRow(ctx, `SELECT coalesce(sum(r.points - coalesce((
				SELECT sum(rc.points) FROM written_off_recoveries rc
				WHERE rc.posting_id = r.posting_id), 0)), 0)
			FROM partner_refunds r JOIN postings p ON p.id = r.posting_id
			WHERE r.hold_id = $1 AND p.member_id <> $2`, holdID, memberID).Scan(&since)
		if err != nil {
			return nil, fmt.Errorf("sum refunds since the merge: %w", err)
		}
	}
	// What each lot of the capture is still owed: what the capture took of
	// it, less what earlier refunds gave back to it or settled of its
	// write-off (written_off_recoveries).
	rows, err := t.tx.Query(ctx, `SELECT pl.lot_id, -pl.points - coalesce((
			SELECT sum(rl.points) FROM partner_refunds r
			JOIN posting_lots rl ON rl.posting_id = r.posting_id AND rl.lot_id = pl.lot_id
			WHERE r.hold_id = $2), 0) - coalesce((
			SELECT sum(rc.points) FROM partner_refunds r
			JOIN written_off_recoveries rc ON rc.posting_id = r.posting_id
				AND rc.lot_id = pl.lot_id
			WHERE r.hold_id = $2), 0), l.earned_at, l.spendable_from, l.expires_at
		FROM posting_lots pl JOIN lots l ON l.id = pl.lot_id
		WHERE pl.posting_id = $1 AND pl.points < 0
		ORDER BY l.expires_at DESC NULLS FIRST, l.earned_at DESC, l.id DESC`, captureID, holdID)
	if err != nil {
		return nil, fmt.Errorf("read capture lots: %w", err)
	}
	var moves []core.LotMove
	var copies []lotRow
	var captureLots []int64
	need := n
	for rows.Next() {
		var l lotRow
		var open int64
		if err := rows.Scan(&l.id, &open, &l.earned, &l.spendable, &l.expires); err != nil {
			rows.Close()
			return nil, err
		}
		captureLots = append(captureLots, l.id)
		skip := min(max(open, 0), since)
		open -= skip
		since -= skip
		if x := min(open, need); x > 0 {
			moves = append(moves, core.LotMove{LotID: l.id, Points: core.Points(x)})
			l.remaining = x
			copies = append(copies, l)
			need -= x
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if need > 0 {
		return nil, fmt.Errorf("refund: the capture's lots lack %d points", need)
	}
	// Points of a credit reversed since they were spent settle its
	// write-off first (the lots of a member since merged included), and
	// those of a credit whose reversal took other lots' points go back to
	// those lots (the member's own only), but for lots of the capture: a
	// refund in parts recounts each lot of the capture by what refunds
	// brought to it, and would count such points twice.
	recovered, settled, moves, err := t.settleReturns(ctx, moves, !merged, captureLots)
	if err != nil {
		return nil, err
	}
	if merged {
		for i := range copies {
			copies[i].remaining = int64(moves[i].Points)
		}
		return t.refundToSurvivor(ctx, m, cmd, in, holdID, captureID, refunded, n, recovered,
			settled, copies)
	}
	// While the member owes points, what comes back repays the debt next;
	// a later refund counts those points as given back to their lots.
	repaid, err := t.repayDebt(ctx, m, moves, max(0, -m.available))
	if err != nil {
		return nil, err
	}
	settled = append(settled, repaid...)
	kept := moves[:0]
	for _, mv := range moves {
		if mv.Points > 0 {
			kept = append(kept, mv)
		}
	}
	if _, err := t.lockLots(ctx, kept); err != nil {
		return nil, err
	}
	p := posting{kind: core.PostReversal, points: n - recovered, reason: in.Reason,
		holdID: &holdID, partner: partnerOf(cmd.Source), moves: kept}
	if p.reason == "" {
		p.reason = "partner refund"
	}
	if refunded == 0 {
		p.reversesID = &captureID
	}
	pid, err := t.post(ctx, m, p)
	if e, ok := core.AsError(err); ok && e.Field == "posting_id" {
		return nil, errReversedByOperator(in.HoldTxnID)
	}
	if err != nil {
		return nil, err
	}
	if err := t.applyMoves(ctx, kept); err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(ctx, `INSERT INTO partner_refunds (id, hold_id, source, txn_id, points,
		posting_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		uuid.Must(uuid.NewV7()).String(), holdID, cmd.Source, cmd.TxnID, n, pid, t.now)
	if err != nil {
		return nil, fmt.Errorf("insert refund: %w", err)
	}
	t.lastMoves = kept
	if err := t.recordRecovered(ctx, pid, settled, recovered); err != nil {
		return nil, err
	}
	if err := t.expireDue(ctx, m); err != nil {
		return nil, err
	}
	out := t.outcome(m, n-recovered)
	out.HoldID = holdID
	out.Recovered = core.Points(recovered)
	return out, nil
}

// refundToSurvivor is partnerRefund for a payment of a member since merged
// into m: the n points come back to m in new lots, copies of the capture's
// lots with the points each is owed.
func (t *txn) refundToSurvivor(ctx context.Context, m *member, cmd *bus.Command,
	in core.PartnerRefund, holdID string, captureID, refunded, n, recovered int64,
	settled []core.LotMove, copies []lotRow) (any, error) {
	p := posting{kind: core.PostReversal, reason: in.Reason, holdID: &holdID,
		partner: partnerOf(cmd.Source)}
	if p.reason == "" {
		p.reason = "partner refund"
	}
	if refunded == 0 {
		p.reversesID = &captureID
	}
	pid, back, err := t.creditCopies(ctx, m, p, copies)
	if e, ok := core.AsError(err); ok && e.Field == "posting_id" {
		return nil, errReversedByOperator(in.HoldTxnID)
	}
	if err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(ctx, `INSERT INTO partner_refunds (id, hold_id, source, txn_id, points,
		posting_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		uuid.Must(uuid.NewV7()).String(), holdID, cmd.Source, cmd.TxnID, n, pid, t.now)
	if err != nil {
		return nil, fmt.Errorf("insert refund: %w", err)
	}
	t.lastMoves = back
	if err := t.recordRecovered(ctx, pid, settled, recovered); err != nil {
		return nil, err
	}
	out := t.outcome(m, n-recovered)
	out.HoldID = holdID
	out.Recovered = core.Points(recovered)
	return out, nil
}

// errReversedByOperator refuses a partner's refund of a payment whose
// capture the operator has reversed: the points are back with the member.
func errReversedByOperator(holdTxnID string) error {
	return core.Errorf(core.Conflict, "hold_txn_id", "the payment %q was already reversed "+
		"by the operator; its points are back with the member", holdTxnID)
}

// partnerClawback takes back the points that a refunded money purchase
// earned: the refunded amount converts at the program's rate and rounding,
// and the points come from the lots the partner's purchases made (pending,
// then spendable, newest first), then from the member's other spendable
// points soonest expiry first. What the member no longer has is written
// off, or owed when the program allows a negative balance.
//
// A partner takes back no more than its purchases gave the member, less
// what it took back before, what the operator reversed of them and what
// expired of them: a refund, whatever its amount, never reaches points the
// member earned elsewhere. A refund the member's free points cannot cover
// while some of the member's points are held by open payments is refused
// (conflict): those points may come back.
func (t *txn) partnerClawback(ctx context.Context, prog *program, m *member,
	cmd *bus.Command) (any, error) {
	var in core.PartnerClawback
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	amount, err := core.ParseAmount("amount", in.Amount)
	if err != nil {
		return nil, err
	}
	if amount.Sign() <= 0 {
		return nil, core.Errorf(core.Invalid, "amount", "must be positive: the money refunded")
	}
	if err := t.checkPurchaseCurrency(ctx, prog, cmd, in.Currency); err != nil {
		return nil, err
	}
	if err := core.CheckAmountDigits("amount", in.Amount, prog.Currency); err != nil {
		return nil, err
	}
	if err := mustBe(m, "member", "active", "suspended"); err != nil {
		return nil, err
	}
	text, rounding := prog.rateAt(cmd.OccurredAt)
	rate, err := core.ParseRate("points_per_unit", text)
	if err != nil {
		return nil, err
	}
	n64, err := core.Convert(amount, rate, rounding)
	if err != nil {
		return nil, err
	}
	left, err := t.partnerPointsLeft(ctx, m, partnerOf(cmd.Source))
	if err != nil {
		return nil, err
	}
	n := min(int64(n64), left)
	if n <= 0 {
		return t.outcome(m, 0), nil
	}
	// The partner's own points still pending go first: taking spendable
	// points instead would leave those to become spendable later.
	pending, err := t.partnerPendingLots(ctx, m, partnerOf(cmd.Source))
	if err != nil {
		return nil, err
	}
	pendingMoves, rest := take(pending, n)
	// Then its spendable ones, and only then the member's other points,
	// soonest expiry first. Taking those first left the purchase's points
	// standing for the member's spending, and a credit reversed later
	// counted the refund as spending of its own lot: written off there,
	// it was never settled by the purchase's points coming back.
	own, err := t.partnerLots(ctx, m, partnerOf(cmd.Source))
	if err != nil {
		return nil, err
	}
	moves, rest2 := take(own, rest)
	short := rest2
	var fromOthers []core.LotMove
	if rest2 > 0 {
		var ownFree int64
		taken := map[int64]bool{}
		for _, l := range own {
			ownFree += l.remaining - l.held
			taken[l.id] = true
		}
		lots, err := t.usableLots(ctx, m, rest2+ownFree)
		if err != nil {
			return nil, err
		}
		others := lots[:0]
		for _, l := range lots {
			if !taken[l.id] {
				others = append(others, l)
			}
		}
		fromOthers, short = take(others, rest2)
		moves = append(moves, fromOthers...)
	}
	// Points reserved by open holds are still the member's: a payment may
	// release them. Writing the shortfall off now would let that release
	// hand them back, and the refunded purchase's points would stay.
	if short > 0 && m.held > 0 {
		return nil, core.Errorf(core.Conflict, "member",
			"the refund takes back %d points; the member has %d free and %d held by open "+
				"payments: send the refund again, under a new transaction id, once those "+
				"payments are captured or released", n, n-short, m.held)
	}
	p := posting{kind: core.PostReversal, points: -(rest - short),
		pendingDelta: -(n - rest), partner: partnerOf(cmd.Source), reason: in.Reason,
		moves:       append(pendingMoves, moves...),
		ruleVersion: "program-rate:" + text + ":" + string(rounding)}
	moves = p.moves
	if p.reason == "" {
		p.reason = "partner purchase refunded"
	}
	var written, owed int64
	if short > 0 {
		if prog.NegativeBalance == core.NegativeAllow {
			p.points -= short
			owed = short
		} else {
			written = short
		}
	}
	if err := t.applyMoves(ctx, moves); err != nil {
		return nil, err
	}
	var posting *int64
	if p.points != 0 || p.pendingDelta != 0 {
		id, err := t.post(ctx, m, p)
		if err != nil {
			return nil, err
		}
		posting = &id
	}
	// The points taken from the member's other lots, and what was written
	// off or is owed, stand for spent points of the lots the partner's
	// purchases made: points of theirs that come back (an order cancelled,
	// a redemption reversed) go back to the lots taken, then settle the
	// write-off or the debt, instead of returning to the member.
	if len(fromOthers) > 0 || written+owed > 0 {
		if err := t.chargePartnerLots(ctx, m, partnerOf(cmd.Source), posting, fromOthers,
			written+owed, owed > 0); err != nil {
			return nil, err
		}
	}
	// The whole claim is recorded, written-off part included, so that the
	// same points are not claimed twice.
	_, err = t.tx.Exec(ctx, `INSERT INTO partner_clawbacks (member_id, partner, points,
		posting_id, created_at) VALUES ($1, $2, $3, $4, $5)`, m.id, partnerOf(cmd.Source), n,
		posting, t.now)
	if err != nil {
		return nil, fmt.Errorf("record clawback: %w", err)
	}
	t.lastMoves = moves
	out := t.outcome(m, p.points+p.pendingDelta)
	out.Written = core.Points(written)
	return out, nil
}

// partnerPointsLeft is what a partner may still take back from m: the
// points its purchases gave m, pending ones included, less the operator's
// reversals of those purchases (what they wrote off included), the
// partner's earlier claims (partner_clawbacks) and what expired of the
// lots its purchases made:
// expired points are gone from the member already, and taking them again
// would reach points earned elsewhere. Members merged into m count as m: their purchases
// were merged with their points.
func (t *txn) partnerPointsLeft(ctx context.Context, m *member, partner string) (int64, error) {
	var left int64
	err := t.tx.QueryRow(ctx, mergedMembers+`SELECT
			coalesce((SELECT sum(a.points + a.pending_delta) FROM postings a
				WHERE a.member_id IN (SELECT id FROM merged) AND a.partner = $2
				  AND a.kind = 'accrual'), 0)
			+ coalesce((SELECT sum(r.points + r.pending_delta) FROM postings r
				JOIN postings a ON a.id = r.reverses_id
				WHERE r.member_id IN (SELECT id FROM merged) AND a.partner = $2
				  AND a.kind = 'accrual'), 0)
			- coalesce((SELECT sum(c.points) FROM partner_clawbacks c
				WHERE c.member_id IN (SELECT id FROM merged) AND c.partner = $2), 0)
			+ coalesce((SELECT sum(pl.points) FROM postings e
				JOIN posting_lots pl ON pl.posting_id = e.id
				JOIN lots l ON l.id = pl.lot_id
				WHERE e.member_id IN (SELECT id FROM merged) AND e.kind = 'expiry'
				  AND `+partnerLot+`), 0)
			- coalesce((SELECT sum(w.points) FROM written_off w
				JOIN postings r ON r.id = w.reversal_id
				JOIN postings a ON a.id = r.reverses_id
				WHERE r.member_id IN (SELECT id FROM merged) AND a.partner = $2
				  AND a.kind = 'accrual'), 0)`,
		m.id, partner).Scan(&left)
	if err != nil {
		return 0, fmt.Errorf("read partner's points: %w", err)
	}
	return left, nil
}

// partnerPendingLots are m's lots still pending that the partner's
// purchases made, newest first, locked.
func (t *txn) partnerPendingLots(ctx context.Context, m *member, partner string) ([]lotRow,
	error) {
	rows, err := t.tx.Query(ctx, `SELECT l.id, l.earned_at, l.spendable_from, l.expires_at,
			l.pending, l.original, l.remaining, l.held
		FROM lots l
		WHERE l.member_id = $1 AND l.pending AND l.remaining > l.held AND `+partnerLot+`
		ORDER BY l.earned_at DESC, l.id DESC
		FOR UPDATE OF l`, m.id, partner)
	if err != nil {
		return nil, fmt.Errorf("select partner's pending lots: %w", err)
	}
	return scanLots(rows)
}

// partnerLot tells, in a query over lots l with the partner's code as $2,
// whether l was made by a purchase of that partner: itself, or as a copy
// of such a lot, a merge's or an undo's for a member since merged
// (origin_lot_id, followed up to 16 copies back).
const partnerLot = `EXISTS (WITH RECURSIVE up(lot, origin, posting, depth) AS (
			SELECT l.id, l.origin_lot_id, l.posting_id, 0
			UNION ALL
			SELECT y.id, y.origin_lot_id, y.posting_id, up.depth + 1
			FROM lots y JOIN up ON y.id = up.origin WHERE up.depth < 16)
		SELECT 1 FROM up JOIN postings a ON a.id = up.posting
		WHERE a.partner = $2 AND a.kind = 'accrual')`

// partnerLots locks m's spendable lots that partner's purchases made,
// newest first: those a refund of a purchase takes back first.
func (t *txn) partnerLots(ctx context.Context, m *member, partner string) ([]lotRow,
	error) {
	rows, err := t.tx.Query(ctx, `SELECT l.id, l.earned_at, l.spendable_from, l.expires_at,
			l.pending, l.original, l.remaining, l.held
		FROM lots l
		WHERE l.member_id = $1 AND NOT l.pending AND l.remaining > l.held
		  AND (l.expires_at IS NULL OR l.expires_at > $3) AND `+partnerLot+`
		ORDER BY l.earned_at DESC, l.id DESC
		FOR UPDATE OF l`, m.id, partner, t.now)
	if err != nil {
		return nil, fmt.Errorf("select partner's lots: %w", err)
	}
	return scanLots(rows)
}

// readPartner reads a partner and its keys. Errors: not_found.
func readPartner(ctx context.Context, q pgxQuerier, programCode,
	code string) (*core.Partner, []core.PartnerKey, error) {
	p := &core.Partner{}
	var id string
	var active bool
	var updated time.Time
	var maxBurn int64
	err := q.QueryRow(ctx, `SELECT pa.id, pa.code, pa.name, pa.currency, pa.point_value::text,
			pa.can_burn, pa.can_earn, pa.max_burn_points, coalesce(pa.max_earn_amount::text, ''),
			pa.hold_ttl_seconds, pa.active, pr.code, pa.updated_at
		FROM partners pa JOIN programs pr ON pr.id = pa.program_id
		WHERE pr.code = $1 AND pa.code = $2`, programCode, code).Scan(&id, &p.Code, &p.Name,
		&p.Currency, &p.PointValue, &p.CanBurn, &p.CanEarn, &maxBurn, &p.MaxEarnAmount,
		&p.HoldTTLSeconds, &active, &p.Program, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, core.Errorf(core.NotFound, "partner", "no partner %q in program %q",
			code, programCode)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read partner: %w", err)
	}
	p.PointValue, p.MaxEarnAmount = trimDecimal(p.PointValue), trimDecimal(p.MaxEarnAmount)
	p.MaxBurnPoints, p.Active = core.Points(maxBurn), &active
	u := updated.UTC()
	p.UpdatedAt = &u
	rows, err := q.Query(ctx, `SELECT id, prefix, scopes, created_at, revoked_at
		FROM partner_keys WHERE partner_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, nil, fmt.Errorf("read partner keys: %w", err)
	}
	defer rows.Close()
	keys := []core.PartnerKey{}
	for rows.Next() {
		k := core.PartnerKey{Partner: p.Code}
		if err := rows.Scan(&k.ID, &k.Prefix, &k.Scopes, &k.CreatedAt, &k.RevokedAt); err != nil {
			return nil, nil, err
		}
		keys = append(keys, k)
	}
	return p, keys, rows.Err()
}

// pgxQuerier is what both a pool and a transaction offer for reads.
type pgxQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// chargePartnerLots records what a partner's purchase refund could not take
// from the lots the partner's purchases made for m, against those lots, by
// what of each was spent and is not accounted for yet, newest lots first:
// first the points it took from m's other lots instead (taken: each a cover
// of the purchase lot by that lot, lot_covers), then short, written off, or
// owed (lot_debts) when owed is set. pid is the refund's posting, nil when
// it posted nothing (then nothing was taken).
func (t *txn) chargePartnerLots(ctx context.Context, m *member, partner string, pid *int64,
	taken []core.LotMove, short int64, owed bool) error {
	// What of each lot was spent (by a debit, which may be undone: not by
	// expiry, a merge, another refund or reversal) or taken to cover a
	// reversed credit's spending or repay a debt (lot_covers naming it as
	// the cover: undone, it comes back here) and has not come back, less
	// what is written off, owed or covered by other lots on it already.
	rows, err := t.tx.Query(ctx, mergedMembers+`SELECT l.id,
			coalesce((SELECT -sum(pl.points) FROM posting_lots pl
					JOIN postings p ON p.id = pl.posting_id
					WHERE pl.lot_id = l.id AND pl.points < 0
					  AND p.kind IN ('redemption', 'capture', 'adjustment', 'transfer_out')), 0)
				+ coalesce((SELECT sum(lc.points) FROM lot_covers lc
					WHERE lc.cover_lot_id = l.id), 0)
				- coalesce((SELECT sum(pl.points) FROM posting_lots pl
					JOIN postings p ON p.id = pl.posting_id
					WHERE pl.lot_id = l.id AND pl.points > 0 AND p.kind = 'reversal'), 0)
				- coalesce((SELECT sum(w.points - w.recovered)
				FROM written_off w WHERE w.lot_id = l.id), 0)
				- coalesce((SELECT sum(d.points - d.repaid)
				FROM lot_debts d WHERE d.lot_id = l.id), 0)
				- coalesce((SELECT sum(lc.points - lc.returned)
				FROM lot_covers lc WHERE lc.lot_id = l.id), 0) AS open
		FROM lots l
		WHERE l.member_id IN (SELECT id FROM merged) AND `+partnerLot+`
		ORDER BY l.earned_at DESC, l.id DESC`, m.id, partner)
	if err != nil {
		return fmt.Errorf("read partner's lots: %w", err)
	}
	type spent struct{ lot, open int64 }
	lots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (spent, error) {
		var s spent
		return s, r.Scan(&s.lot, &s.open)
	})
	if err != nil {
		return fmt.Errorf("read partner's lots: %w", err)
	}
	// charge hands out n points over the lots' open points, in order.
	i := 0
	charge := func(n int64, record func(lot, x int64) error) error {
		for ; n > 0 && i < len(lots); i++ {
			x := min(n, lots[i].open)
			if x > 0 {
				if err := record(lots[i].lot, x); err != nil {
					return err
				}
				lots[i].open -= x
				n -= x
			}
			if lots[i].open > 0 {
				break // n is spent
			}
		}
		return nil
	}
	for _, mv := range taken {
		err := charge(-int64(mv.Points), func(lot, x int64) error {
			_, err := t.tx.Exec(ctx, `INSERT INTO lot_covers (reversal_id, lot_id, cover_lot_id,
				points) VALUES ($1, $2, $3, $4)`, pid, lot, mv.LotID, x)
			if err != nil {
				return fmt.Errorf("record cover: %w", err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return charge(short, func(lot, x int64) error {
		q := `INSERT INTO written_off (reversal_id, lot_id, points) VALUES ($1, $2, $3)`
		args := []any{pid, lot, x}
		if owed {
			q = `INSERT INTO lot_debts (member_id, reversal_id, lot_id, points)
				VALUES ($1, $2, $3, $4)`
			args = []any{m.id, pid, lot, x}
		}
		if _, err := t.tx.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("record partner write-off: %w", err)
		}
		return nil
	})
}
