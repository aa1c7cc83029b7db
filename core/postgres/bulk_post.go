package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// This file posts the lines of a bulk load a chunk at a time, set-based.
//
// A chunk runs in one transaction. Its members are locked once, in id
// order; the credits and debits of the members whose state is plain (active,
// no debt, nothing due to mature, release or expire before a debit) are
// worked out in memory, exactly as the command path would apply them one by
// one, and written with a handful of statements: COPY of the postings, the
// new lots, the lot moves, the commands and the outbox events, one UPDATE of
// the consumed lots and one of the members' balances. Every other line (a
// replayed transaction id, a closed, merged or unknown member, a debit of a
// member with holds, pending or due points...) goes through the command path
// itself, in the same transaction. The lines' outcomes and the batch's counts
// are recorded before the commit, so that a stop anywhere leaves the chunk
// either wholly applied and recorded or not at all.

// BulkChunk is one part of a batch to post in one transaction.
type BulkChunk struct {
	// BatchID is the batch the lines belong to.
	BatchID string
	// Lines are valid lines of the batch, in file order; PostBatchLines sets
	// their status (posted or rejected), error and replayed flag.
	Lines []core.BatchLine
	// Commands holds the ledger command of each line, Commands[i] for Lines[i].
	Commands []bus.Command
	// Through, when positive, moves the batch's posted_through mark to it.
	Through int64
	// BeforeCommit, when set, runs in the transaction just before it commits;
	// an error rolls the whole chunk back (tests stop a load there).
	BeforeCommit func(ctx context.Context) error
}

// PostBatchLines applies the commands of a chunk and records each line's
// outcome and the batch's counts in the same transaction. A command the
// ledger refuses leaves its line rejected with the ledger's reason; a
// transaction id the ledger already holds is answered as a replay. An error
// return means nothing of the chunk committed.
func (l *Ledger) PostBatchLines(ctx context.Context, c *BulkChunk) error {
	if len(c.Lines) != len(c.Commands) {
		return fmt.Errorf("post batch lines: %d lines, %d commands", len(c.Lines),
			len(c.Commands))
	}
	err := l.postChunk(ctx, c, true)
	var pe *pgconn.PgError
	if err != nil && ctx.Err() == nil && errors.As(err, &pe) &&
		(strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23")) {
		// A constraint the planned writes broke (a transaction id claimed
		// meanwhile by another load, a balance out of range): the command
		// path sorts out which line it was and why.
		l.log.Warn("Bulk chunk sent through the command path", "batch_id", c.BatchID,
			"error", err)
		err = l.postChunk(ctx, c, false)
	}
	return err
}

func (l *Ledger) postChunk(ctx context.Context, c *BulkChunk, fast bool) error {
	return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		t := l.newTxn(tx)
		applied, err := t.applyBulk(ctx, c.Commands, fast)
		if err != nil {
			return err
		}
		for i, a := range applied {
			x := &c.Lines[i]
			x.Replayed = a.Result.Replayed
			x.ErrorKind, x.ErrorField, x.Error = "", "", ""
			if a.Result.Status == bus.StatusOK {
				x.Status = core.LinePosted
				continue
			}
			x.Status = core.LineRejected
			if e := a.Result.Error; e != nil {
				x.ErrorKind, x.ErrorField, x.Error = e.Kind, e.Field, e.Message
			}
		}
		if err := recordOutcomes(ctx, tx, c.BatchID, c.Lines, c.Through); err != nil {
			return err
		}
		if c.BeforeCommit != nil {
			return c.BeforeCommit(ctx)
		}
		return nil
	})
}

// ApplyBulk applies credit and adjustment commands of one program in one
// transaction with the outcome ApplyBatch would give them, in far fewer
// statements (see PostBatchLines). A batch with commands of other kinds is
// applied as ApplyBatch applies it.
func (l *Ledger) ApplyBulk(ctx context.Context, cmds []bus.Command) ([]Applied, error) {
	var out []Applied
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var err error
		out, err = l.newTxn(tx).applyBulk(ctx, cmds, true)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// bulkMember is a locked member of a chunk and what the chunk does to it.
type bulkMember struct {
	*member
	slow     bool
	debits   int64           // points the member's debits of the chunk ask for
	lots     []lotRow        // spendable lots in taking order, as the chunk changes them
	consumed map[int64]int64 // points taken from lots that existed before the chunk
	newLots  map[int64]bool  // lots made by the chunk
	changed  bool            // a posting changes the balance row
	dAvail   int64
	dPending int64
}

// bulkOp is one command of a chunk that the set-based path applies.
type bulkOp struct {
	i         int
	m         *bulkMember
	credit    bool
	points    int64 // the amount, positive for credits and debits alike
	reason    string
	earned    time.Time
	spendable time.Time
	expires   *time.Time
	pending   bool
	// Set by the plan.
	rejected  string // insufficient points message
	lotID     int64  // credit: the new lot
	moves     []core.LotMove
	postingID int64
	balance   core.Balance
}

// applyBulk applies cmds in order inside t's transaction and returns one
// outcome per command. With fast unset, every command takes the command path.
func (t *txn) applyBulk(ctx context.Context, cmds []bus.Command, fast bool) ([]Applied, error) {
	out := make([]Applied, len(cmds))
	var ops []*bulkOp
	slow := make([]bool, len(cmds))
	if fast {
		var err error
		ops, err = t.planBulk(ctx, cmds, slow)
		if err != nil {
			return nil, err
		}
	} else {
		for i := range slow {
			slow[i] = true
		}
	}

	// The command path for what the plan left out, in file order.
	for i := range cmds {
		if !slow[i] {
			continue
		}
		a, err := t.apply(ctx, &cmds[i])
		if err != nil {
			return nil, fmt.Errorf("command %s/%s: %w", cmds[i].Source, cmds[i].TxnID, err)
		}
		out[i] = a
	}
	if err := t.flushEvents(ctx); err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return out, nil
	}
	if err := t.writeBulk(ctx, cmds, ops, out); err != nil {
		return nil, err
	}
	return out, nil
}

// planBulk decides which commands the set-based path takes, locks every
// member the chunk names and works out the set-based commands in memory. It
// marks the others in slow.
func (t *txn) planBulk(ctx context.Context, cmds []bus.Command, slow []bool) ([]*bulkOp, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	allSlow := func() ([]*bulkOp, error) {
		for i := range slow {
			slow[i] = true
		}
		return nil, nil
	}
	// A command of another kind may move points of a member it does not
	// name (a transfer, a merge): the whole chunk then takes the command path.
	for i := range cmds {
		if k := cmds[i].Kind; k != core.KindCredit && k != core.KindAdjust {
			return allSlow()
		}
	}
	code := cmds[0].Program
	prog, err := t.loadProgram(ctx, code)
	if err != nil {
		// The command path answers each command for a missing program.
		return allSlow()
	}

	// Read each command as the command path would; anything unusual, or a
	// transaction id repeated within the chunk, leaves the member to it.
	ops := make([]*bulkOp, len(cmds))
	slowRef := map[string]bool{}
	seen := make(map[string]int, len(cmds))
	var refs []string
	refSeen := map[string]bool{}
	for i := range cmds {
		c := &cmds[i]
		if !refSeen[c.Member] {
			refSeen[c.Member] = true
			refs = append(refs, c.Member)
		}
		key := c.Source + "\x00" + c.TxnID
		if j, dup := seen[key]; dup {
			slowRef[c.Member], slowRef[cmds[j].Member] = true, true
			continue
		}
		seen[key] = i
		op := t.readBulkOp(prog, c)
		if op == nil || c.Program != code {
			slowRef[c.Member] = true
			continue
		}
		op.i = i
		ops[i] = op
	}

	// Lock every member the chunk names, in id order, as the sweep does. The
	// commands of a merged member apply to the member it was merged into,
	// which the chunk may name too: such a chunk takes the command path.
	members, err := t.lockBulkMembers(ctx, prog, refs)
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if m.merged != nil {
			return allSlow()
		}
	}
	// A transaction id the ledger already holds is a replay (or a conflict):
	// the command path answers it. Read once the members are locked, so that
	// a load of the same lines racing this one is seen once it committed.
	sources, txns := make([]string, 0, len(cmds)), make([]string, 0, len(cmds))
	for i := range cmds {
		if ops[i] != nil {
			sources, txns = append(sources, cmds[i].Source), append(txns, cmds[i].TxnID)
		}
	}
	rows, err := t.tx.Query(ctx, `SELECT c.source, c.txn_id FROM commands c
		JOIN unnest($1::text[], $2::text[]) AS u(source, txn_id)
			ON c.source = u.source AND c.txn_id = u.txn_id`, sources, txns)
	if err != nil {
		return nil, fmt.Errorf("find known transaction ids: %w", err)
	}
	for rows.Next() {
		var src, txn string
		if err := rows.Scan(&src, &txn); err != nil {
			rows.Close()
			return nil, err
		}
		if i, ok := seen[src+"\x00"+txn]; ok {
			slowRef[cmds[i].Member] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find known transaction ids: %w", err)
	}

	for i, op := range ops {
		if op == nil {
			continue
		}
		m := members[cmds[i].Member]
		switch {
		case m == nil || slowRef[cmds[i].Member]:
			ops[i] = nil
			continue
		case m.available < 0:
			// A member who owes points repays the debt from its next credits.
			m.slow = true
		case op.credit && m.status != "active":
			m.slow = true
		case !op.credit && m.status != "active" && m.status != "suspended":
			m.slow = true
		case !op.credit && (m.pending != 0 || m.held != 0):
			// Before a debit the command path matures pending points and
			// releases holds past their time.
			m.slow = true
		}
		op.m = m
		if !op.credit {
			m.debits += op.points
		}
	}
	if err := t.loadBulkLots(ctx, members); err != nil {
		return nil, err
	}

	// Split, then work the set-based commands out in file order.
	var plan []*bulkOp
	for i, op := range ops {
		if op == nil || op.m.slow {
			slow[i] = true
			continue
		}
		plan = append(plan, op)
	}
	if err := t.planMoves(ctx, plan); err != nil {
		return nil, err
	}
	return plan, nil
}

// readBulkOp reads a credit or a debit adjustment as the command path
// would, or returns nil for a command it must apply itself: another kind,
// an unreadable or invalid payload, points that would expire at once.
func (t *txn) readBulkOp(prog *program, c *bus.Command) *bulkOp {
	if !core.ValidRef(c.Member) || c.OccurredAt.IsZero() {
		return nil
	}
	switch c.Kind {
	case core.KindCredit:
		var in core.Credit
		if decodeCredit(c.Payload, &in) != nil || core.CheckPoints("points", in.Points) != nil ||
			core.CheckReason(in.Reason, true) != nil || t.checkOccurred(c.OccurredAt) != nil {
			return nil
		}
		exp, err := creditExpiry(prog, &in, c.OccurredAt, t.now)
		if err != nil {
			return nil
		}
		earned := c.OccurredAt
		if exp == nil {
			exp = prog.ExpiresAt(earned)
		}
		if exp != nil && !exp.After(t.now) {
			return nil
		}
		spendable := prog.SpendableFrom(earned)
		return &bulkOp{credit: true, points: int64(in.Points), reason: in.Reason,
			earned: earned, spendable: spendable, expires: exp,
			pending: spendable.After(t.now)}
	case core.KindAdjust:
		var in core.Adjust
		if decodeAdjust(c.Payload, &in) != nil || in.Points >= 0 || in.Points < -core.MaxPoints ||
			core.CheckReason(in.Reason, true) != nil || strings.TrimSpace(c.Actor) == "" {
			return nil
		}
		return &bulkOp{points: -int64(in.Points), reason: in.Reason}
	}
	return nil
}

// decodeCredit reads a credit's payload as decode does. The shape a file
// line's credit has (points, a reason of plain ASCII, maybe an expiry, in
// that order) is read by hand; any other goes through decode.
func decodeCredit(raw []byte, in *core.Credit) error {
	if p, reason, exp, ok := readPlainPayload(raw, true); ok {
		*in = core.Credit{Points: p, Reason: reason, ExpiresAt: exp}
		return nil
	}
	return decode(raw, in)
}

// decodeAdjust reads an adjustment's payload as decode does, the common
// shape by hand.
func decodeAdjust(raw []byte, in *core.Adjust) error {
	if p, reason, _, ok := readPlainPayload(raw, false); ok {
		*in = core.Adjust{Points: p, Reason: reason}
		return nil
	}
	return decode(raw, in)
}

// readPlainPayload reads {"points":N,"reason":"R"} and, with expiry set,
// {"points":N,"reason":"R","expires_at":"T"}, exactly as encoding/json
// writes them for a plain reason. It declines (ok false) anything else:
// another order or field, spaces, escapes, a number of another form.
func readPlainPayload(raw []byte, expiry bool) (pts core.Points, reason string,
	exp *time.Time, ok bool) {
	rest, found := bytes.CutPrefix(raw, []byte(`{"points":`))
	if !found {
		return 0, "", nil, false
	}
	i := 0
	if i < len(rest) && rest[i] == '-' {
		i++
	}
	digits := i
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == digits || rest[digits] == '0' { // no number, a leading zero, or zero
		return 0, "", nil, false
	}
	n, err := strconv.ParseInt(string(rest[:i]), 10, 64)
	if err != nil {
		return 0, "", nil, false
	}
	if rest, found = bytes.CutPrefix(rest[i:], []byte(`,"reason":"`)); !found {
		return 0, "", nil, false
	}
	end := 0
	for end < len(rest) && rest[end] != '"' {
		if c := rest[end]; c < 0x20 || c > 0x7e || c == '\\' {
			return 0, "", nil, false
		}
		end++
	}
	if end == len(rest) {
		return 0, "", nil, false
	}
	reason, rest = string(rest[:end]), rest[end+1:]
	if after, found := bytes.CutPrefix(rest, []byte(`,"expires_at":`)); expiry && found {
		q := bytes.IndexByte(after[min(1, len(after)):], '"')
		if len(after) == 0 || after[0] != '"' || q < 0 {
			return 0, "", nil, false
		}
		var t time.Time
		if t.UnmarshalJSON(after[:q+2]) != nil {
			return 0, "", nil, false
		}
		exp, rest = &t, after[q+2:]
	}
	if string(rest) != "}" {
		return 0, "", nil, false
	}
	return core.Points(n), reason, exp, true
}

// lockBulkMembers locks the program's members known by refs, in id order,
// and returns them by reference; an unknown reference is missing.
func (t *txn) lockBulkMembers(ctx context.Context, prog *program,
	refs []string) (map[string]*bulkMember, error) {
	rows, err := t.tx.Query(ctx, `SELECT `+memberCols+` FROM members
		WHERE program_id = $1 AND customer_ref = ANY($2) ORDER BY id FOR UPDATE`,
		prog.ID, refs)
	if err != nil {
		return nil, fmt.Errorf("lock members: %w", err)
	}
	defer rows.Close()
	out := make(map[string]*bulkMember, len(refs))
	for rows.Next() {
		m, err := scanMember(rows)
		if err != nil {
			return nil, fmt.Errorf("lock members: %w", err)
		}
		out[m.ref] = &bulkMember{member: m}
	}
	return out, rows.Err()
}

// loadBulkLots reads, for the members with debits, their spendable lots in
// taking order (soonest expiry first), as far as the debits could reach:
// the lots after the point where the free points before them cover every
// debit of the chunk are never touched. A member with points due to expire
// is left to the command path, which expires them before the debit.
//
// The lots are not locked one by one: every writer of a member's lots holds
// the member's row lock first, and the chunk holds it.
func (t *txn) loadBulkLots(ctx context.Context, members map[string]*bulkMember) error {
	var ids []string
	byID := map[string]*bulkMember{}
	for _, m := range members {
		if m.debits > 0 && !m.slow {
			ids = append(ids, m.id)
			byID[m.id] = m
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := t.tx.Query(ctx, `SELECT DISTINCT member_id FROM lots
		WHERE member_id = ANY($1) AND remaining > 0 AND remaining > held AND expires_at <= $2`,
		uuidArg(ids), t.now)
	if err != nil {
		return fmt.Errorf("find due lots: %w", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		byID[id].slow = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find due lots: %w", err)
	}

	// The first few lots of each member, in taking order, cover most debits;
	// the members whose first lots do not are read again in full.
	if err := t.readBulkLots(ctx, byID, ids, bulkLotsHead); err != nil {
		return err
	}
	var more []string
	for _, id := range ids {
		m := byID[id]
		var free int64
		for _, l := range m.lots {
			free += l.remaining - l.held
		}
		if len(m.lots) == bulkLotsHead && free < m.debits {
			m.lots, more = nil, append(more, id)
		}
	}
	if len(more) == 0 {
		return nil
	}
	return t.readBulkLots(ctx, byID, more, 0)
}

// bulkLotsHead is how many lots of a member are read first.
const bulkLotsHead = 8

// readBulkLots appends to the members ids their spendable lots in taking
// order, at most limit of each (0 for all).
func (t *txn) readBulkLots(ctx context.Context, byID map[string]*bulkMember, ids []string,
	limit int) error {
	var lim any
	if limit > 0 {
		lim = limit
	}
	rows, err := t.tx.Query(ctx, `SELECT u.member_id, l.id, l.earned_at, l.spendable_from,
			l.expires_at, l.pending, l.original, l.remaining, l.held
		FROM unnest($1::uuid[]) AS u(member_id)
		CROSS JOIN LATERAL (SELECT * FROM lots
			WHERE member_id = u.member_id AND remaining > 0 AND remaining > held
				AND NOT pending AND (expires_at IS NULL OR expires_at > $2)
			ORDER BY expires_at NULLS LAST, earned_at, id LIMIT $3) l`, uuidArg(ids), t.now, lim)
	if err != nil {
		return fmt.Errorf("select lots: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var l lotRow
		if err := rows.Scan(&id, &l.id, &l.earned, &l.spendable, &l.expires, &l.pending,
			&l.original, &l.remaining, &l.held); err != nil {
			return fmt.Errorf("scan lot: %w", err)
		}
		m := byID[id]
		m.lots = append(m.lots, l)
	}
	return rows.Err()
}

// lotBefore is the taking order of the command path: soonest expiry first
// (never last), then earliest earned, then oldest lot.
func lotBefore(a, b *lotRow) bool {
	switch {
	case a.expires == nil && b.expires != nil:
		return false
	case a.expires != nil && b.expires == nil:
		return true
	case a.expires != nil && !a.expires.Equal(*b.expires):
		return a.expires.Before(*b.expires)
	case !a.earned.Equal(b.earned):
		return a.earned.Before(b.earned)
	}
	return a.id < b.id
}

// planMoves works the commands out in file order: each credit makes a lot
// (the debits after it may take from it), each debit takes from the
// member's lots in taking order or is refused for want of points. Lot and
// posting ids come from their sequences, so that the ids grow in file order
// as they would one command at a time.
func (t *txn) planMoves(ctx context.Context, ops []*bulkOp) error {
	credits := 0
	for _, op := range ops {
		if op.credit {
			credits++
		}
	}
	var lotIDs, postingIDs []int64
	err := t.tx.QueryRow(ctx, `SELECT
			array(SELECT nextval('lots_id_seq') FROM generate_series(1, $1)),
			array(SELECT nextval('postings_id_seq') FROM generate_series(1, $2))`,
		credits, len(ops)).Scan(&lotIDs, &postingIDs)
	if err != nil {
		return fmt.Errorf("allocate ids: %w", err)
	}
	slices.Sort(lotIDs)
	slices.Sort(postingIDs)

	nextLot, nextPosting := 0, 0
	for _, op := range ops {
		m := op.m
		if op.credit {
			op.lotID = lotIDs[nextLot]
			nextLot++
			if op.pending {
				m.dPending += op.points
				m.pending += op.points
			} else {
				m.dAvail += op.points
				m.available += op.points
				if m.debits > 0 {
					if m.newLots == nil {
						m.newLots = map[int64]bool{}
					}
					m.newLots[op.lotID] = true
					m.insertLot(lotRow{id: op.lotID, earned: op.earned.Truncate(time.Microsecond),
						expires: microseconds(op.expires), original: op.points,
						remaining: op.points})
				}
			}
			op.moves = []core.LotMove{{LotID: op.lotID, Points: core.Points(op.points)}}
		} else {
			moves, short := takeLots(m.lots, op.points)
			if short > 0 {
				op.rejected = fmt.Sprintf("%s asked, %d available",
					core.PointsText(op.points), op.points-short)
				continue
			}
			for _, mv := range moves {
				if m.newLots[mv.LotID] {
					continue // written with what is left of it
				}
				if m.consumed == nil {
					m.consumed = map[int64]int64{}
				}
				m.consumed[mv.LotID] += int64(-mv.Points)
			}
			op.moves = moves
			m.dAvail -= op.points
			m.available -= op.points
		}
		m.changed = true
		op.postingID = postingIDs[nextPosting]
		nextPosting++
		op.balance = m.balance()
	}
	return nil
}

// microseconds is t as the database keeps it, to order new lots among
// stored ones exactly as the database would.
func microseconds(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	x := t.Truncate(time.Microsecond)
	return &x
}

// insertLot adds a new lot to the member's spendable lots in taking order.
func (m *bulkMember) insertLot(l lotRow) {
	i := len(m.lots)
	for i > 0 && lotBefore(&l, &m.lots[i-1]) {
		i--
	}
	m.lots = slices.Insert(m.lots, i, l)
}

// takeLots takes n points from lots in their order, as take plans it, and
// changes the lots' remaining points; short is what it could not find, and
// then no lot changes.
func takeLots(lots []lotRow, n int64) (moves []core.LotMove, short int64) {
	moves, short = take(lots, n)
	if short > 0 {
		return nil, short
	}
	at := 0
	for _, mv := range moves {
		for lots[at].id != mv.LotID {
			at++
		}
		lots[at].remaining += int64(mv.Points)
	}
	return moves, 0
}

// bulkWrite is what one applied command of the plan writes beyond its
// posting: the ids in the wire form COPY takes, and the stored result and
// event.
type bulkWrite struct {
	op        *bulkOp
	cmd       *bus.Command
	commandID pgtype.UUID
	kind      string // posting kind
	points    int64  // posting points and pending delta
	pendingD  int64
	occurred  time.Time
	res       bus.Result
	result    []byte // res as stored
	eventID   pgtype.UUID
	event     []byte
}

// writeBulk writes what the plan worked out: postings, lots, lot moves,
// balances, commands with their results, and the ledger events. Each table's
// rows are built in COPY's binary form, one table at a time.
func (t *txn) writeBulk(ctx context.Context, cmds []bus.Command, ops []*bulkOp,
	out []Applied) error {
	taken := map[int64]int64{} // points taken from the chunk's own lots
	ws := make([]bulkWrite, 0, len(ops))
	members := map[*bulkMember]pgtype.UUID{}
	for _, op := range ops {
		if op.rejected == "" && !op.credit {
			for _, mv := range op.moves {
				taken[mv.LotID] += int64(-mv.Points)
			}
		}
		if _, ok := members[op.m]; !ok {
			members[op.m] = pgUUID(op.m.id)
		}
	}
	// The results and events of the chunk share one buffer.
	arena := make([]byte, 0, len(ops)*720)
	for _, op := range ops {
		w, err := t.bulkResult(cmds, op, &arena)
		if err != nil {
			return err
		}
		out[op.i] = Applied{Result: w.res}
		ws = append(ws, w)
	}
	program := pgUUID(ops[0].m.programID)
	conn := t.tx.Conn()

	// Postings, then the lots they made, then the moves of the debits.
	cp := newBinCopy("postings", []string{"id", "program_id", "member_id", "kind",
		"points", "held_delta", "pending_delta", "source", "txn_id", "command_id", "reason",
		"rule_version", "actor", "partner", "channel", "reverses_id", "hold_id", "occurred_at",
		"recorded_at"}, len(ws)*200)
	for i := range ws {
		w := &ws[i]
		if w.op.rejected != "" {
			continue
		}
		c := w.cmd
		cp.row()
		cp.int8(w.op.postingID)
		cp.uuid(program)
		cp.uuid(members[w.op.m])
		cp.text(w.kind)
		cp.int8(w.points)
		cp.int8(0)
		cp.int8(w.pendingD)
		cp.text(c.Source)
		cp.text(c.TxnID)
		cp.uuid(w.commandID)
		cp.text(w.op.reason)
		cp.text("")
		cp.text(c.Actor)
		cp.text("")
		cp.text(c.Channel)
		cp.null()
		cp.null()
		cp.timestamptz(w.occurred)
		cp.timestamptz(t.now)
	}
	if err := cp.send(ctx, conn); err != nil {
		return err
	}
	for _, w := range ws {
		if w.op.credit && taken[w.op.lotID] > w.op.points {
			return fmt.Errorf("plan took %d from a lot of %d", taken[w.op.lotID], w.op.points)
		}
	}
	cp = newBinCopy("lots", []string{"id", "member_id", "posting_id", "earned_at",
		"spendable_from", "expires_at", "pending", "original", "remaining", "held"},
		len(ws)*120)
	for i := range ws {
		op := ws[i].op
		if op.rejected != "" || !op.credit {
			continue
		}
		cp.row()
		cp.int8(op.lotID)
		cp.uuid(members[op.m])
		cp.int8(op.postingID)
		cp.timestamptz(op.earned)
		cp.timestamptz(op.spendable)
		cp.timestamptzOrNull(op.expires)
		cp.bool(op.pending)
		cp.int8(op.points)
		cp.int8(op.points - taken[op.lotID])
		cp.int8(0)
	}
	if err := cp.send(ctx, conn); err != nil {
		return err
	}
	if err := t.consumeLots(ctx, ops); err != nil {
		return err
	}
	cp = newBinCopy("posting_lots", []string{"posting_id", "lot_id", "points", "held"}, 0)
	for _, op := range ops {
		if op.rejected == "" && !op.credit {
			for _, mv := range op.moves {
				cp.row()
				cp.int8(op.postingID)
				cp.int8(mv.LotID)
				cp.int8(int64(mv.Points))
				cp.int8(0)
			}
		}
	}
	if err := cp.send(ctx, conn); err != nil {
		return err
	}
	if err := t.updateBulkBalances(ctx, ops); err != nil {
		return err
	}

	// The commands with their results, and the events for the outbox.
	size := 0
	for i := range ws {
		size += len(ws[i].result) + 120
	}
	cp = newBinCopy("commands", []string{"source", "txn_id", "command_id", "kind", "hash",
		"status", "result"}, size)
	for i := range ws {
		w := &ws[i]
		c := w.cmd
		status := bus.StatusOK
		if w.op.rejected != "" {
			status = bus.StatusRejected
		}
		cp.row()
		cp.text(c.Source)
		cp.text(c.TxnID)
		cp.uuid(w.commandID)
		cp.text(c.Kind)
		cp.text(c.Hash)
		cp.text(status)
		cp.jsonb(w.result)
	}
	if err := cp.send(ctx, conn); err != nil {
		return err
	}
	size = 0
	for i := range ws {
		size += len(ws[i].event) + 60
	}
	cp = newBinCopy("outbox", []string{"event_id", "subject", "body"}, size)
	for i := range ws {
		w := &ws[i]
		if w.event == nil {
			continue
		}
		cp.row()
		cp.uuid(w.eventID)
		cp.text(bus.EventSubject(w.cmd.Program, w.kind))
		cp.json(w.event)
	}
	return cp.send(ctx, conn)
}

// bulkResult is the result of one planned command and what it writes. The
// stored result and event are appended to arena.
func (t *txn) bulkResult(cmds []bus.Command, op *bulkOp, arena *[]byte) (bulkWrite, error) {
	var r bulkWrite
	c := &cmds[op.i]
	m := op.m
	r.op, r.cmd, r.commandID = op, c, pgUUID(c.ID)
	r.res = bus.Result{CommandID: c.ID, Source: c.Source, TxnID: c.TxnID, Kind: c.Kind}
	var outcome *core.Outcome
	if op.rejected != "" {
		r.res.Status = bus.StatusRejected
		r.res.Error = &bus.Error{Kind: string(core.Insufficient), Field: "points",
			Message: op.rejected}
	} else {
		r.kind, r.points, r.occurred = core.PostAdjustment, -op.points, t.now
		signed := -op.points
		if op.credit {
			r.kind, r.points, r.occurred, signed = core.PostCredit, op.points, op.earned,
				op.points
			if op.pending {
				r.points, r.pendingD = 0, op.points
			}
		}
		outcome = &core.Outcome{Member: m.ref, PostingIDs: []int64{op.postingID},
			Points: core.Points(signed), Balance: op.balance, Lots: op.moves}
		r.res.Status = bus.StatusOK
		id := uuid.Must(uuid.NewV7())
		r.eventID = pgtype.UUID{Bytes: id, Valid: true}
		at := len(*arena)
		b, err := appendEvent(*arena, &bus.Event{ID: id.String(),
			Kind: r.kind, Program: c.Program, Member: m.id, MemberRef: m.ref,
			Points: r.points + r.pendingD, OccurredAt: r.occurred.UTC(), RecordedAt: t.now,
			Source: c.Source, TxnID: c.TxnID, Channel: c.Channel, PostingID: op.postingID,
			Tier: m.tier})
		if err != nil {
			return r, err
		}
		r.event, *arena = b[at:len(b):len(b)], b
	}

	// The stored result holds the outcome as its data; the result handed back
	// shares those bytes.
	start := len(*arena)
	b := appendResultHead(*arena, &r.res)
	if outcome != nil {
		b = append(b, `,"data":`...)
		at := len(b)
		b = appendOutcome(b, outcome)
		r.res.Data = b[at:len(b):len(b)]
	}
	b = append(b, '}')
	r.result, *arena = b[start:len(b):len(b)], b
	return r, nil
}

// pgUUID is a uuid in the binary form COPY sends without a detour through
// text; an unreadable one stays invalid and the database refuses it.
func pgUUID(s string) pgtype.UUID {
	u, err := uuid.Parse(s)
	if err != nil {
		return pgtype.UUID{}
	}
	return pgtype.UUID{Bytes: u, Valid: true}
}

// consumeLots takes from the lots that existed before the chunk what its
// debits took, one change per lot.
func (t *txn) consumeLots(ctx context.Context, ops []*bulkOp) error {
	var ids, dr []int64
	done := map[*bulkMember]bool{}
	for _, op := range ops {
		m := op.m
		if done[m] || len(m.consumed) == 0 {
			continue
		}
		done[m] = true
		for id, x := range m.consumed {
			ids, dr = append(ids, id), append(dr, -x)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	tag, err := t.tx.Exec(ctx, `UPDATE lots l SET remaining = l.remaining + v.dr
		FROM unnest($1::bigint[], $2::bigint[]) AS v(id, dr) WHERE l.id = v.id`, ids, dr)
	if err != nil {
		return fmt.Errorf("update lots: %w", err)
	}
	if int(tag.RowsAffected()) != len(ids) {
		return fmt.Errorf("update lots: %d of %d rows", tag.RowsAffected(), len(ids))
	}
	return nil
}

// updateBulkBalances adds each member's change to its cached figures, in one
// statement.
func (t *txn) updateBulkBalances(ctx context.Context, ops []*bulkOp) error {
	var ids []string
	var da, dp []int64
	done := map[*bulkMember]bool{}
	for _, op := range ops {
		m := op.m
		if done[m] || !m.changed {
			continue
		}
		done[m] = true
		ids, da, dp = append(ids, m.id), append(da, m.dAvail), append(dp, m.dPending)
	}
	if len(ids) == 0 {
		return nil
	}
	_, err := t.tx.Exec(ctx, `UPDATE members m
		SET available = m.available + v.da, pending = m.pending + v.dp, updated_at = $4
		FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS v(id, da, dp)
		WHERE m.id = v.id`, uuidArg(ids), da, dp, t.now)
	if err != nil {
		return fmt.Errorf("update balances: %w", pgError(err))
	}
	return nil
}
