package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/core"
)

// member is a member row locked for the length of a transaction.
type member struct {
	id        string
	programID string
	ref       string
	status    string
	channel   string
	tier      string // the tier level, '' for none; post refreshes it
	enrolled  time.Time
	merged    *string
	available int64
	pending   int64
	held      int64
}

func (m *member) balance() core.Balance {
	return core.Balance{Available: core.Points(m.available), Pending: core.Points(m.pending),
		Held: core.Points(m.held)}
}

const memberCols = `id, program_id, customer_ref, status, channel, enrolled_at, merged_into,
	available, pending, held, tier`

func scanMember(row pgx.Row) (*member, error) {
	m := &member{}
	err := row.Scan(&m.id, &m.programID, &m.ref, &m.status, &m.channel, &m.enrolled, &m.merged,
		&m.available, &m.pending, &m.held, &m.tier)
	return m, err
}

// lockMember locks the member known by ref in the program, following merges
// to the survivor.
func lockMember(ctx context.Context, tx pgx.Tx, programID, ref string) (*member, error) {
	m, err := scanMember(tx.QueryRow(ctx, `SELECT `+memberCols+` FROM members
		WHERE program_id = $1 AND customer_ref = $2 FOR UPDATE`, programID, ref))
	if err == pgx.ErrNoRows {
		return nil, core.Errorf(core.NotFound, "member", "no member %q in this program", ref)
	}
	if err != nil {
		return nil, fmt.Errorf("lock member: %w", err)
	}
	for hops := 0; m.merged != nil && hops < 16; hops++ {
		m, err = lockMemberID(ctx, tx, *m.merged)
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

func lockMemberID(ctx context.Context, tx pgx.Tx, id string) (*member, error) {
	m, err := scanMember(tx.QueryRow(ctx,
		`SELECT `+memberCols+` FROM members WHERE id = $1 FOR UPDATE`, id))
	if err != nil {
		return nil, fmt.Errorf("lock member %s: %w", id, err)
	}
	return m, nil
}

// posting is what a ledger operation asks to append.
type posting struct {
	kind         string
	points       int64
	heldDelta    int64
	pendingDelta int64
	reason       string
	ruleVersion  string
	partner      string
	reversesID   *int64
	holdID       *string
	occurredAt   time.Time
	moves        []core.LotMove
}

// lotRow is a lot as the operations read it.
type lotRow struct {
	id        int64
	earned    time.Time
	spendable time.Time
	expires   *time.Time
	pending   bool
	original  int64
	remaining int64
	held      int64
}

// usableLots locks the member's spendable lots, soonest expiry first, as
// many as it takes to find n free points: a first page of them, and the
// rest only when that page falls short (a member earning on every sale
// holds tens of thousands of lots, and a debit of a few points locked and
// read them all). Lots held whole are read too (take passes over them):
// asking for "remaining > held" let PostgreSQL pick the index of every
// member's lots in expiry order instead of the member's own (which
// "remaining > 0" lets serve the query), and walk other members' lots.
func (t *txn) usableLots(ctx context.Context, m *member, n int64) ([]lotRow, error) {
	const page = 64
	lots, err := t.usableLotsPage(ctx, m, "LIMIT "+strconv.Itoa(page))
	if err != nil || len(lots) < page {
		return lots, err
	}
	var free int64
	for _, l := range lots {
		free += l.remaining - l.held
	}
	if free >= n {
		return lots, nil
	}
	more, err := t.usableLotsPage(ctx, m, "OFFSET "+strconv.Itoa(page))
	return append(lots, more...), err
}

// usableLotsPage is one read of usableLots; the order is total (by id
// last), so that the pages neither overlap nor miss a lot.
func (t *txn) usableLotsPage(ctx context.Context, m *member, part string) ([]lotRow,
	error) {
	rows, err := t.tx.Query(ctx, `SELECT id, earned_at, spendable_from, expires_at, pending,
			original, remaining, held
		FROM lots
		WHERE member_id = $1 AND remaining > 0 AND NOT pending
		  AND (expires_at IS NULL OR expires_at > $2)
		ORDER BY expires_at NULLS LAST, earned_at, id `+part+`
		FOR UPDATE`, m.id, t.now)
	if err != nil {
		return nil, fmt.Errorf("select lots: %w", err)
	}
	return scanLots(rows)
}

func scanLots(rows pgx.Rows) ([]lotRow, error) {
	var out []lotRow
	for rows.Next() {
		var l lotRow
		err := rows.Scan(&l.id, &l.earned, &l.spendable, &l.expires, &l.pending, &l.original,
			&l.remaining, &l.held)
		if err != nil {
			return nil, fmt.Errorf("scan lot: %w", err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// take plans taking n points from lots, soonest expiry first. It returns the
// planned moves (negative points) and what it could not find.
func take(lots []lotRow, n int64) (moves []core.LotMove, short int64) {
	left := n
	for _, l := range lots {
		if left == 0 {
			break
		}
		free := l.remaining - l.held
		if free <= 0 {
			continue
		}
		x := min(free, left)
		moves = append(moves, core.LotMove{LotID: l.id, Points: core.Points(-x)})
		left -= x
	}
	return moves, left
}

// applyMoves changes the lots by the moves: Points to remaining, Held to held.
// Moves of the same lot are added up first: an UPDATE ... FROM applies only
// one of several source rows that match a row.
func (t *txn) applyMoves(ctx context.Context, moves []core.LotMove) error {
	if len(moves) == 0 {
		return nil
	}
	var ids, dr, dh []int64
	at := map[int64]int{}
	for _, mv := range moves {
		i, ok := at[mv.LotID]
		if !ok {
			i = len(ids)
			at[mv.LotID] = i
			ids, dr, dh = append(ids, mv.LotID), append(dr, 0), append(dh, 0)
		}
		dr[i] += int64(mv.Points)
		dh[i] += int64(mv.Held)
	}
	tag, err := t.tx.Exec(ctx, `UPDATE lots l
		SET remaining = l.remaining + v.dr, held = l.held + v.dh
		FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, dr, dh)
		WHERE l.id = v.id`, ids, dr, dh)
	if err != nil {
		return fmt.Errorf("update lots: %w", err)
	}
	if int(tag.RowsAffected()) != len(ids) {
		return fmt.Errorf("update lots: %d of %d rows", tag.RowsAffected(), len(ids))
	}
	return nil
}

// post appends a posting for m, records its lot moves, updates the member's
// cached figures and queues the ledger event. It returns the posting id.
func (t *txn) post(ctx context.Context, m *member, p posting) (int64, error) {
	// The gateways bound a caller's reason; a command put on the bus by
	// other means is held to the same bound here.
	if err := core.CheckReason(p.reason, false); err != nil {
		return 0, err
	}
	if p.occurredAt.IsZero() {
		p.occurredAt = t.now
	}
	var txnID *string
	var cmdID *string
	if t.cmd != nil {
		txnID, cmdID = &t.cmd.TxnID, &t.cmd.ID
	}
	source, actor, channel := "puntos", "", ""
	if t.cmd != nil {
		source, actor, channel = t.cmd.Source, t.cmd.Actor, t.cmd.Channel
	}
	if t.system != "" {
		source, txnID, cmdID = t.system, nil, nil
	}
	var id int64
	err := t.tx.QueryRow(ctx, `INSERT INTO postings (program_id, member_id, kind, points,
			held_delta, pending_delta, source, txn_id, command_id, reason, rule_version, actor,
			partner, channel, reverses_id, hold_id, occurred_at, recorded_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
		RETURNING id`,
		m.programID, m.id, p.kind, p.points, p.heldDelta, p.pendingDelta, source, txnID, cmdID,
		p.reason, p.ruleVersion, actor, p.partner, channel, p.reversesID, p.holdID,
		p.occurredAt, t.recordedAt()).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert posting: %w", pgError(err))
	}
	if len(p.moves) > 0 {
		lotIDs := make([]int64, len(p.moves))
		pts := make([]int64, len(p.moves))
		held := make([]int64, len(p.moves))
		for i, mv := range p.moves {
			lotIDs[i], pts[i], held[i] = mv.LotID, int64(mv.Points), int64(mv.Held)
		}
		_, err = t.tx.Exec(ctx, `INSERT INTO posting_lots (posting_id, lot_id, points, held)
			SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::bigint[])`,
			id, lotIDs, pts, held)
		if err != nil {
			return 0, fmt.Errorf("insert posting lots: %w", err)
		}
	}
	err = t.tx.QueryRow(ctx, `UPDATE members
		SET available = available + $2, held = held + $3, pending = pending + $4, updated_at = $5
		WHERE id = $1 RETURNING available, held, pending, tier`,
		m.id, p.points, p.heldDelta, p.pendingDelta, t.now).Scan(&m.available, &m.held, &m.pending,
		&m.tier)
	if err != nil {
		return 0, fmt.Errorf("update balance: %w", pgError(err))
	}
	t.event(m, id, p)
	t.postings = append(t.postings, id)
	return id, nil
}

// newLot creates the lot of a credit posting. While the member owes points
// (a negative available balance), the credit repays that first and the lot
// keeps only the rest.
func (t *txn) newLot(ctx context.Context, m *member, postingID int64, n int64, earned,
	spendable time.Time, expires *time.Time, pending bool) (int64, error) {
	remaining := n
	// m.available already includes this credit; the debt before it was
	// -(m.available - n), whether or not the credit pays all of it.
	if debt := n - m.available; !pending && debt > 0 {
		remaining = n - min(n, debt)
	}
	var id int64
	err := t.tx.QueryRow(ctx, `INSERT INTO lots (member_id, posting_id, earned_at, spendable_from,
			expires_at, pending, original, remaining)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
		m.id, postingID, earned, spendable, expires, pending, n, remaining).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert lot: %w", err)
	}
	if remaining > 0 {
		t.touched[m.id] = true
	}
	if _, err := t.repaidBy(ctx, m, id, n-remaining); err != nil {
		return 0, err
	}
	return id, nil
}

// credit posts a credit of n points to m as one new lot.
func (t *txn) credit(ctx context.Context, m *member, prog *program, kind string, n int64,
	earned time.Time, expires *time.Time, p posting) (int64, error) {
	spendable := prog.SpendableFrom(earned)
	pending := spendable.After(t.now)
	if expires == nil {
		expires = prog.ExpiresAt(earned)
	}
	p.kind = kind
	p.occurredAt = earned
	if pending {
		p.pendingDelta = n
	} else {
		p.points = n
	}
	id, err := t.post(ctx, m, p)
	if err != nil {
		return 0, err
	}
	lotID, err := t.newLot(ctx, m, id, n, earned, spendable, expires, pending)
	if err != nil {
		return 0, err
	}
	t.lastMoves = []core.LotMove{{LotID: lotID, Points: core.Points(n)}}
	// Points that reach the ledger after their expiry (a late event, an
	// expiry date already past) are expired at once.
	if expires != nil && !expires.After(t.now) {
		if err := t.expireByTime(ctx, m); err != nil {
			return 0, err
		}
	}
	return id, nil
}

// debit takes n spendable points from m, soonest expiry first, and posts it.
func (t *txn) debit(ctx context.Context, m *member, n int64, p posting) (int64, error) {
	lots, err := t.usableLots(ctx, m, n)
	if err != nil {
		return 0, err
	}
	moves, short := take(lots, n)
	if short > 0 {
		return 0, core.Errorf(core.Insufficient, "points",
			"%s asked, %d available", core.PointsText(n), n-short)
	}
	if err := t.applyMoves(ctx, moves); err != nil {
		return 0, err
	}
	p.points = -n
	p.moves = moves
	t.lastMoves = moves
	return t.post(ctx, m, p)
}
