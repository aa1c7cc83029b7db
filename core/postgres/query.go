package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Program returns the program with the given code. Errors: not_found.
func (l *Ledger) Program(ctx context.Context, code string) (*core.Program, error) {
	p, err := readProgram(ctx, l.pool, `code = $1`, code)
	if err != nil {
		return nil, err
	}
	return p.public(), nil
}

// public is the program as callers read it: the rate written as it was
// given (2.5, not the stored 2.500000).
func (p *program) public() *core.Program {
	out := p.Program
	out.PointsPerUnit = trimDecimal(out.PointsPerUnit)
	return &out
}

// memberChain finds the member known by ref ($2) in the program with code
// $1, following merges to the survivor; the query that includes it reads
// that member as m.
const memberChain = `WITH RECURSIVE chain(id, depth) AS (
		SELECT m.id, 0 FROM members m JOIN programs p ON p.id = m.program_id
		WHERE p.code = $1 AND m.customer_ref = $2
		UNION ALL
		SELECT m.merged_into, c.depth + 1 FROM members m JOIN chain c ON m.id = c.id
		WHERE m.merged_into IS NOT NULL AND c.depth < 16)
	`

// memberColumns are the columns of core.Member, read by scanMember.
const memberColumns = `m.id, $1, m.customer_ref, m.status, m.channel, m.enrolled_at,
	m.merged_into, m.available, m.pending, m.held`

func memberDest(m *core.Member, merged **string) []any {
	return []any{&m.ID, &m.Program, &m.CustomerRef, &m.Status, &m.Channel, &m.EnrolledAt,
		merged, &m.Balance.Available, &m.Balance.Pending, &m.Balance.Held}
}

// memberNotFound is the error of a read of a member that does not exist.
// An unknown program is named as such, so that a caller who mistyped the
// program's code does not go looking for the member instead.
func (l *Ledger) memberNotFound(ctx context.Context, programCode, ref string) error {
	var known bool
	err := l.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM programs WHERE code = $1)`,
		programCode).Scan(&known)
	if err == nil && !known {
		return core.Errorf(core.NotFound, "program", "no program %q", programCode)
	}
	return core.Errorf(core.NotFound, "member", "no member %q in program %q", ref, programCode)
}

// Member returns the member known by ref in the program, following merges.
// Errors: not_found.
func (l *Ledger) Member(ctx context.Context, programCode, ref string) (*core.Member, error) {
	var m core.Member
	var merged *string
	var d due
	err := l.pool.QueryRow(ctx, memberOfSurvivor, programCode, ref,
		l.Clock().UTC()).Scan(append(memberDest(&m, &merged), d.dest()...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, l.memberNotFound(ctx, programCode, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("read member: %w", err)
	}
	m.Balance = atInstant(m.Balance, d)
	return &m, nil
}

// BalanceView is a member's balance with the lots behind it, or without
// them (BalanceSummary).
type BalanceView struct {
	Member  string       `json:"member"`
	Program string       `json:"program"`
	Status  string       `json:"status"`
	Balance core.Balance `json:"balance"`
	// Lots are nil in a summary, and then left out of the JSON.
	Lots []core.Lot `json:"lots,omitzero"`
	// LotsTruncated says the member holds more live lots than the 1,000
	// listed (those expiring soonest): their points do not add up to the
	// balance.
	LotsTruncated bool           `json:"lots_truncated,omitempty"`
	NextExpiries  []ExpiryBucket `json:"next_expiries"`
	AsOf          time.Time      `json:"as_of"`
}

// ExpiryBucket is how many points expire at one instant.
type ExpiryBucket struct {
	ExpiresAt time.Time   `json:"expires_at"`
	Points    core.Points `json:"points"`
}

// lotsReleased reads a member's lots (l) with, as released, the part of
// each lot's held points that open holds past their time (as of $3)
// reserve: free once the next refresh releases them. The holds are read
// (by the index of the member's open holds, then what each reserved of the
// lot) only for a member holding points.
const lotsReleased = `(SELECT l.*, CASE WHEN m.held > 0 THEN (
				SELECT coalesce(sum(pl.held), 0) FROM holds h
				JOIN posting_lots pl ON pl.posting_id = h.posting_id AND pl.lot_id = l.id
				WHERE h.member_id = m.id AND h.status = 'open' AND h.expires_at <= $3)
				ELSE 0 END AS released
			FROM lots l WHERE l.member_id = m.id AND l.remaining > 0) l`

// balanceLots are the columns and the join that add a member's live lots,
// soonest expiry first, to a query reading the member as m, with
// balanceDue's figures. Each lot reads as the next refresh would leave it
// (the balance's figures are corrected so, balanceDue): the points of
// overdue holds freed, and a lot whose expiry is past keeps only what open
// holds still reserve (it is left out when that is nothing).
const balanceLots = `,
			l.id, l.earned_at, l.spendable_from, l.expires_at, l.pending, l.original,
			l.remaining, l.held
		FROM members m` + balanceDue + ` LEFT JOIN LATERAL (
			SELECT l.id, l.earned_at, l.spendable_from, l.expires_at, l.pending, l.original,
				CASE WHEN l.expires_at <= $3 THEN l.held - l.released ELSE l.remaining END
					AS remaining,
				l.held - l.released AS held
			FROM ` + lotsReleased + `
			WHERE l.expires_at IS NULL OR l.expires_at > $3 OR l.held > l.released
			ORDER BY l.expires_at NULLS LAST, l.earned_at, l.id
			LIMIT 1001) l ON true` // balanceLotsMax + 1

// balanceLotsMax is the most lots a balance lists; one more is read, to
// tell that there are more.
const balanceLotsMax = 1000

// balanceExpiries are the columns and the join that add, to a query reading
// the member as m, the points expiring at each of its next twelve expiry
// instants, soonest first: the free part (remaining less held, the points
// of overdue holds counted free) of its lots, pending ones included, as the
// lots' view adds them up. The member's
// partial index in expiry order serves it, and the walk stops at the
// thirteenth instant.
const balanceExpiries = `,
			e.expires_at, e.points
		FROM members m` + balanceDue + ` LEFT JOIN LATERAL (
			SELECT l.expires_at, sum(l.remaining - l.held + l.released)::bigint AS points
			FROM ` + lotsReleased + `
			WHERE l.expires_at > $3 AND l.remaining - l.held + l.released > 0
			GROUP BY l.expires_at ORDER BY l.expires_at LIMIT 12) e ON true`

// balanceDue adds to a query reading members as m what the member's next
// refresh would change by the passing of time alone (the sweep runs once a
// minute, and every command refreshes its member first), as of $3, the
// read's instant:
//
//   - d.lapsed, the free points of spendable lots whose expiry is past;
//   - dp.lapsed_pending, the points of pending lots whose expiry is past (a
//     lot ends after its holding period, so those have matured first);
//   - dp.matured, the points of pending lots whose holding period ended and
//     that have not lapsed;
//   - hh.released, the points of open holds past their time, and
//     hh.lapsed_released, the part of those reserved on lots that have
//     ended, which expires once freed (posting_lots keeps what each hold
//     reserved of each lot).
//
// The first reads the member's live lots up to $3 in expiry order (its
// partial index), usually none; the second runs only for a member with
// pending points, over its live lots (the end of the holding period is
// compared so that the index of every member's pending lots, which holds
// all those matured since the last sweep, is not used instead); the third
// only for one holding points (by the index of its open holds).
const balanceDue = `
		CROSS JOIN LATERAL (SELECT coalesce(sum(remaining - held), 0)::bigint AS lapsed
			FROM lots WHERE member_id = m.id AND remaining > 0 AND expires_at <= $3
				AND NOT pending) d
		CROSS JOIN LATERAL (SELECT
			coalesce(sum(remaining) FILTER (WHERE expires_at <= $3), 0)::bigint
				AS lapsed_pending,
			coalesce(sum(remaining) FILTER (WHERE expires_at IS NULL OR expires_at > $3),
				0)::bigint AS matured
			FROM lots WHERE m.pending > 0 AND member_id = m.id AND remaining > 0 AND pending
				AND (spendable_from <= $3) IS TRUE) dp
		CROSS JOIN LATERAL (SELECT coalesce(sum(h.amount - h.captured), 0)::bigint AS released,
			coalesce(sum((SELECT sum(pl.held) FROM posting_lots pl
				JOIN lots l ON l.id = pl.lot_id
				WHERE pl.posting_id = h.posting_id AND l.expires_at <= $3)), 0)::bigint
				AS lapsed_released
			FROM holds h WHERE m.held > 0 AND h.member_id = m.id AND h.status = 'open'
				AND h.expires_at <= $3) hh`

// dueColumns are balanceDue's figures, read after the member's columns. The
// laterals come before the lots or expiries in the join, and PostgreSQL
// works them out once per member, not once per lot row (a read of a
// member with a thousand lots and a thousand overdue holds elsewhere took
// 570 ms when the holds' sum sat in the select list, 4 ms now).
const dueColumns = `, d.lapsed, dp.lapsed_pending, dp.matured, hh.released, hh.lapsed_released`

// due is what balanceDue found for one member.
type due struct {
	lapsed, lapsedPending, matured, released, lapsedReleased core.Points
}

func (d *due) dest() []any {
	return []any{&d.lapsed, &d.lapsedPending, &d.matured, &d.released, &d.lapsedReleased}
}

// atInstant turns a member's stored figures into those at the read's
// instant, in the order a refresh applies them: pending points whose
// holding period ended become spendable and repay what the member owes;
// then the points of overdue holds are freed, and repay what is still
// owed; then the free points of every lot that has ended expire, those just
// freed included. Repayment takes from the lots that have ended first, as
// a refresh takes lots soonest expiry first (for matured lots, usually the
// oldest first), so what repays a debt does not also expire.
func atInstant(b core.Balance, d due) core.Balance {
	debt := max(0, -b.Available)
	fromMatured := min(debt, d.lapsedPending)
	stillOwed := max(0, -(b.Available + d.matured + d.lapsedPending))
	fromReleased := min(stillOwed, d.lapsedReleased)
	b.Available += d.matured + fromMatured + d.released - (d.lapsedReleased - fromReleased) -
		d.lapsed
	b.Pending -= d.matured + d.lapsedPending
	b.Held -= d.released
	return b
}

// ofRef and ofSurvivor finish a balance query: ofRef reads the member known
// by ref ($2) in the program with code $1, without following merges;
// ofSurvivor the member that ref ends up in after merges (after memberChain).
const (
	ofRef = `
		WHERE m.program_id = (SELECT id FROM programs WHERE code = $1) AND m.customer_ref = $2`
	ofSurvivor = `
		WHERE m.id = (SELECT id FROM chain ORDER BY depth DESC LIMIT 1)`
	lotsOrder   = ` ORDER BY l.expires_at NULLS LAST, l.earned_at, l.id`
	expiryOrder = ` ORDER BY e.expires_at`
)

// The balance queries: with the lots or with the expiries only, each by
// reference and by survivor.
var (
	balanceOfRef      = `SELECT ` + memberColumns + dueColumns + balanceLots + ofRef + lotsOrder
	balanceOfSurvivor = memberChain + `SELECT ` + memberColumns + dueColumns + balanceLots +
		ofSurvivor + lotsOrder
	summaryOfRef = `SELECT ` + memberColumns + dueColumns + balanceExpiries + ofRef +
		expiryOrder
	summaryOfSurvivor = memberChain + `SELECT ` + memberColumns + dueColumns + balanceExpiries +
		ofSurvivor + expiryOrder
	memberOfSurvivor = memberChain + `SELECT ` + memberColumns + dueColumns + ` FROM members m` +
		balanceDue + ofSurvivor
)

// Balance returns the member's figures, its live lots (soonest expiry first,
// up to 1000) and the points expiring at each upcoming instant, added up
// from all its lots. Errors: not_found.
func (l *Ledger) Balance(ctx context.Context, programCode, ref string) (*BalanceView, error) {
	v, err := l.readBalance(ctx, l.pool, programCode, ref, true)
	if err != nil || len(v.Lots) <= balanceLotsMax {
		return v, err
	}
	// The member may hold more lots than the view lists, and the expiries
	// added up from the listed ones could miss points: read the view again
	// with the summary's expiries, both from one snapshot. Only members
	// with a thousand live lots pay for it.
	err = pgx.BeginTxFunc(ctx, l.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead,
		AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if v, err = l.readBalance(ctx, tx, programCode, ref, true); err != nil {
			return err
		}
		sum, err := l.readBalance(ctx, tx, programCode, ref, false)
		if err != nil {
			return err
		}
		v.NextExpiries = sum.NextExpiries
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(v.Lots) > balanceLotsMax {
		v.Lots, v.LotsTruncated = v.Lots[:balanceLotsMax], true
	}
	return v, nil
}

// BalanceSummary returns what Balance does but the lots: the member's
// figures and the points expiring at each of the next twelve instants. It
// is the read an app, a till or an IVR makes at every turn; PostgreSQL
// returns one row per expiry instant instead of one per lot, and the answer
// stays small however many lots the member holds. Errors: not_found.
func (l *Ledger) BalanceSummary(ctx context.Context, programCode, ref string) (*BalanceView, error) {
	return l.readBalance(ctx, l.pool, programCode, ref, false)
}

func (l *Ledger) readBalance(ctx context.Context, q rowsQuerier, programCode, ref string,
	lots bool) (*BalanceView, error) {
	// One statement reads the member and its lots (or its expiries): one
	// round trip on the busiest read, and every figure from the same
	// snapshot. Most members were never merged, so the member is read by its
	// reference first; the recursive walk to a survivor costs PostgreSQL more
	// and runs only for a member merged into another.
	byRef, bySurvivor := summaryOfRef, summaryOfSurvivor
	if lots {
		byRef, bySurvivor = balanceOfRef, balanceOfSurvivor
	}
	v, merged, err := l.balance(ctx, q, byRef, programCode, ref, lots, false)
	if err == nil && merged {
		v, _, err = l.balance(ctx, q, bySurvivor, programCode, ref, lots, true)
	}
	return v, err
}

// balance runs one of the balance queries: with the member's lots if lots
// is set (the next expiries then added up from them), else with its expiry
// instants. merged tells whether the member it read was merged into
// another; the view is then left out, unless walked is set: the query
// followed the merges as far as the walk goes (16 steps, like Member), and
// its member is the answer even if merged further.
func (l *Ledger) balance(ctx context.Context, q rowsQuerier, query, programCode, ref string,
	lots, walked bool) (*BalanceView, bool, error) {
	at := l.Clock().UTC()
	rows, err := q.Query(ctx, query, programCode, ref, at)
	if err != nil {
		return nil, false, fmt.Errorf("read balance: %w", err)
	}
	defer rows.Close()
	var (
		m      core.Member
		merged *string
		v      *BalanceView

		d                                     due
		id, original, remaining, held, points pgtype.Int8
		earned, spendable, expires            pgtype.Timestamptz
		pending                               pgtype.Bool
	)
	extra := []any{&expires, &points}
	if lots {
		extra = []any{&id, &earned, &spendable, &expires, &pending, &original, &remaining, &held}
	}
	dest := append(memberDest(&m, &merged), d.dest()...)
	dest = append(dest, extra...)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, false, fmt.Errorf("read balance: %w", err)
		}
		if v == nil {
			if merged != nil && !walked {
				return nil, true, nil
			}
			v = &BalanceView{Member: m.CustomerRef, Program: programCode, Status: m.Status,
				Balance:      atInstant(m.Balance, d),
				NextExpiries: []ExpiryBucket{}, AsOf: at}
			if lots {
				v.Lots = []core.Lot{}
			}
			// Every row repeats the member's columns: skip them after the
			// first.
			for i := range len(dest) - len(extra) {
				dest[i] = nil
			}
		}
		if !lots {
			if expires.Valid { // else the LEFT JOIN's one row of member alone
				v.NextExpiries = append(v.NextExpiries, ExpiryBucket{ExpiresAt: expires.Time,
					Points: core.Points(points.Int64)})
			}
			continue
		}
		if !id.Valid {
			continue // no live lot: the LEFT JOIN's one row of member alone
		}
		lt := core.Lot{ID: id.Int64, EarnedAt: earned.Time, SpendableFrom: spendable.Time,
			Pending: pending.Bool, Original: core.Points(original.Int64),
			Remaining: core.Points(remaining.Int64), Held: core.Points(held.Int64)}
		if expires.Valid {
			end := expires.Time
			lt.ExpiresAt = &end
		}
		if lt.Pending && !lt.SpendableFrom.After(at) {
			lt.Pending = false // matured by now, as the balance counts it
		}
		v.Lots = append(v.Lots, lt)
		free := remaining.Int64 - held.Int64
		if lt.ExpiresAt == nil || free == 0 || !lt.ExpiresAt.After(at) {
			continue
		}
		n := len(v.NextExpiries)
		if n > 0 && v.NextExpiries[n-1].ExpiresAt.Equal(expires.Time) {
			v.NextExpiries[n-1].Points += core.Points(free)
		} else if n < 12 {
			v.NextExpiries = append(v.NextExpiries, ExpiryBucket{ExpiresAt: expires.Time,
				Points: core.Points(free)})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read balance: %w", err)
	}
	if v == nil {
		return nil, false, l.memberNotFound(ctx, programCode, ref)
	}
	return v, false, nil
}

// StatementPage is one page of a member's postings, newest first.
type StatementPage struct {
	Member   string         `json:"member"`
	Postings []core.Posting `json:"postings"`
	Next     string         `json:"next_cursor,omitempty"`
}

// Statement returns up to limit postings of the member older than cursor
// (an opaque value from a previous page; empty for the newest).
// Errors: not_found, invalid (a bad cursor).
func (l *Ledger) Statement(ctx context.Context, programCode, ref, cursor string,
	limit int) (*StatementPage, error) {
	m, err := l.Member(ctx, programCode, ref)
	if err != nil {
		return nil, err
	}
	before := int64(1<<63 - 1)
	if cursor != "" {
		c, err := strconv.ParseInt(cursor, 36, 64)
		if err != nil || c <= 0 {
			return nil, core.Errorf(core.Invalid, "cursor", "is not a cursor from a previous page")
		}
		before = c
	}
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	rows, err := l.pool.Query(ctx, `SELECT p.id, p.kind, p.points, p.held_delta, p.pending_delta,
			p.source, coalesce(p.txn_id, ''), p.reason, p.rule_version, p.actor, p.partner,
			coalesce(p.reverses_id, 0), p.occurred_at, p.recorded_at,
			coalesce((SELECT sum(w.points) FROM written_off w WHERE w.reversal_id = p.id), 0)::bigint,
			coalesce((SELECT s.points FROM written_off_settled s WHERE s.posting_id = p.id), 0),
			coalesce((SELECT json_agg(json_build_object('lot_id', pl.lot_id, 'points', pl.points,
				'held', pl.held) ORDER BY pl.lot_id) FROM posting_lots pl
				WHERE pl.posting_id = p.id), '[]')
		FROM postings p WHERE p.member_id = $1 AND p.id < $2
		ORDER BY p.id DESC LIMIT $3`, m.ID, before, limit+1)
	if err != nil {
		return nil, fmt.Errorf("read postings: %w", err)
	}
	defer rows.Close()
	page := &StatementPage{Member: m.CustomerRef, Postings: []core.Posting{}}
	for rows.Next() {
		var p core.Posting
		var lots []byte
		err := rows.Scan(&p.ID, &p.Kind, &p.Points, &p.HeldDelta, &p.PendingDelta, &p.Source,
			&p.TxnID, &p.Reason, &p.RuleVersion, &p.Actor, &p.Partner, &p.ReversesID,
			&p.OccurredAt, &p.RecordedAt, &p.WrittenOff, &p.Recovered, &lots)
		if err != nil {
			return nil, fmt.Errorf("scan posting: %w", err)
		}
		if err := json.Unmarshal(lots, &p.Lots); err != nil {
			return nil, err
		}
		page.Postings = append(page.Postings, p)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(page.Postings) > limit {
		page.Postings = page.Postings[:limit]
		page.Next = strconv.FormatInt(page.Postings[limit-1].ID, 36)
	}
	return page, nil
}

// storedResult reads what the ledger stored for the command (source, txn):
// the hash of the request it answered, its status and its result.
// Errors: not_found when the ledger has not applied it (yet).
func (l *Ledger) storedResult(ctx context.Context, source, txn string) (hash, status string,
	r *bus.Result, err error) {
	var body []byte
	err = l.pool.QueryRow(ctx, `SELECT hash, status, result FROM commands
		WHERE source = $1 AND txn_id = $2 AND status <> 'applying'`, source, txn).
		Scan(&hash, &status, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", nil, core.Errorf(core.NotFound, "txn_id",
			"no result for this transaction yet")
	}
	if err != nil {
		return "", "", nil, fmt.Errorf("read command: %w", err)
	}
	r = &bus.Result{}
	if err := json.Unmarshal(body, r); err != nil {
		return "", "", nil, err
	}
	return hash, status, r, nil
}

// CommandResult returns the stored result of the command (source, txn), or
// not_found when the ledger has not applied it (yet).
func (l *Ledger) CommandResult(ctx context.Context, source, txn string) (*bus.Result, error) {
	_, _, r, err := l.storedResult(ctx, source, txn)
	return r, err
}

// takeoverPossible reports whether a stored answer may still be taken over
// by another request under the same id: a refusal as invalid (see replay in
// ledger.go).
func takeoverPossible(status string, r *bus.Result) bool {
	return status == bus.StatusRejected && r.Error != nil && r.Error.Kind == string(core.Invalid)
}

// RequestDigits is how many hex digits of a command's hash a status URL
// carries to name the request (bus.MsgIDDigits, as its message id does).
const RequestDigits = bus.MsgIDDigits

// RequestResult is CommandResult for one request under the transaction id:
// request is the start of its hash (RequestDigits hex digits, as the
// status URL of a 202 answer carries). The stored result when it answers
// that request; not_found while there is none for it (none at all, or a
// refusal as invalid of another request, which a corrected request may
// follow); a conflict when the id was used for a different request, which
// then was never applied.
func (l *Ledger) RequestResult(ctx context.Context, source, txn, request string) (*bus.Result,
	error) {
	hash, status, r, err := l.storedResult(ctx, source, txn)
	switch {
	case err != nil:
		return nil, err
	case strings.HasPrefix(hash, request):
		return r, nil
	case takeoverPossible(status, r):
		return nil, core.Errorf(core.NotFound, "txn_id", "no result for this request yet")
	}
	return nil, core.Errorf(core.Conflict, "txn_id", "%s; this request was not applied",
		conflictMessage)
}

// conflictMessage is replay's answer to a different request under a used id.
const conflictMessage = "this transaction id was already used for a different request"

// ResultOf answers cmd from what the ledger stored under its transaction
// id, for a gateway that will not hear the answer on the bus (the bus held a
// copy of cmd already) or heard an answer given to another request with the
// same id. The stored result, flagged as a replay, when it is the answer to
// the same request (same hash); a conflict when the id was used for a
// different request; not_found while there is no final answer yet, or
// while the stored answer is a refusal as invalid, which the request may
// still take over (see replay in ledger.go).
func (l *Ledger) ResultOf(ctx context.Context, cmd bus.Command) (*bus.Result, error) {
	hash, status, r, err := l.storedResult(ctx, cmd.Source, cmd.TxnID)
	switch {
	case err != nil:
		return nil, err
	case hash == cmd.Hash:
		r.Replayed = true
		return r, nil
	case takeoverPossible(status, r):
		return nil, core.Errorf(core.NotFound, "txn_id", "no result for this request yet")
	}
	return &bus.Result{CommandID: cmd.ID, Source: cmd.Source, TxnID: cmd.TxnID, Kind: cmd.Kind,
		Status: bus.StatusRejected, Error: &bus.Error{Kind: string(core.Conflict),
			Field: "txn_id", Message: conflictMessage}}, nil
}

// Violation is one breach of the ledger's invariants.
type Violation struct {
	// Program is the member's program, when the breach is of a member's
	// figures.
	Program string `json:"program,omitempty"`
	// Member is the member's customer reference, or "member <id>" when the
	// member row is missing, or "unknown member" when no member is known.
	Member string `json:"member"`
	What   string `json:"what"`
}

// Check verifies the ledger's invariants for every member: the cached
// figures equal the sums of the postings; the lots' remaining points equal
// what is spendable (when not negative), held and pending; held parts of
// lots, and what its open holds reserve, equal the member's held figure; no lot is negative or over-reserved
// (the table's checks guarantee that). It also reports rows that refer to
// what does not exist, which no foreign key refuses on the ledger's busiest
// tables (migration 0015): a posting, lot, accrual amount or lot move whose
// member, program, posting or lot is missing, a posting whose member is in
// another program, and a lot whose member is not its posting's member. It
// reads whole tables and returns up to 100 breaches of each of the two kinds.
func (l *Ledger) Check(ctx context.Context) ([]Violation, error) {
	out, err := l.checkBalances(ctx)
	if err != nil {
		return nil, err
	}
	orphans, err := l.checkReferences(ctx)
	if err != nil {
		return nil, err
	}
	return append(out, orphans...), nil
}

// checkBalancesSQL lists the members whose cached figures differ from the
// sums of their postings or of their lots.
const checkBalancesSQL = `
	WITH p AS (
		SELECT member_id, sum(points) AS a, sum(held_delta) AS h, sum(pending_delta) AS pe
		FROM postings GROUP BY member_id),
	lo AS (
		SELECT member_id, sum(remaining) AS r, sum(held) AS h,
			sum(remaining) FILTER (WHERE pending) AS pe
		FROM lots GROUP BY member_id),
	ho AS (
		SELECT member_id, sum(amount - captured) AS h
		FROM holds WHERE status = 'open' GROUP BY member_id)
	SELECT g.code, m.customer_ref, m.available, m.held, m.pending,
		coalesce(p.a, 0), coalesce(p.h, 0), coalesce(p.pe, 0),
		coalesce(lo.r, 0), coalesce(lo.h, 0), coalesce(lo.pe, 0), coalesce(ho.h, 0)
	FROM members m JOIN programs g ON g.id = m.program_id
	LEFT JOIN p ON p.member_id = m.id LEFT JOIN lo ON lo.member_id = m.id
	LEFT JOIN ho ON ho.member_id = m.id
	WHERE m.available <> coalesce(p.a, 0) OR m.held <> coalesce(p.h, 0)
	   OR m.pending <> coalesce(p.pe, 0)
	   OR greatest(m.available, 0) + m.held + m.pending <> coalesce(lo.r, 0)
	   OR m.held <> coalesce(lo.h, 0) OR m.pending <> coalesce(lo.pe, 0)
	   OR m.held <> coalesce(ho.h, 0)
	LIMIT 100`

func (l *Ledger) checkBalances(ctx context.Context) ([]Violation, error) {
	rows, err := l.pool.Query(ctx, checkBalancesSQL)
	if err != nil {
		return nil, fmt.Errorf("check ledger: %w", err)
	}
	defer rows.Close()
	var out []Violation
	for rows.Next() {
		var prog, ref string
		var a, h, pe, pa, ph, ppe, lr, lh, lpe, oh int64
		if err := rows.Scan(&prog, &ref, &a, &h, &pe, &pa, &ph, &ppe, &lr, &lh, &lpe,
			&oh); err != nil {
			return nil, err
		}
		out = append(out, Violation{Program: prog, Member: ref, What: fmt.Sprintf(
			"cached available/held/pending %d/%d/%d; postings %d/%d/%d; lots remaining %d, "+
				"held %d, pending %d; open holds %d", a, h, pe, pa, ph, ppe, lr, lh, lpe, oh)})
	}
	return out, rows.Err()
}

// checkReferencesSQL lists the rows of postings, lots, accrual_amounts and
// posting_lots that refer to a missing or mismatched row, one pass over each
// table with hash joins. Each row gives the member and what is wrong.
const checkReferencesSQL = `
	SELECT coalesce(m.customer_ref, 'member ' || p.member_id),
		'posting ' || p.id || CASE
			WHEN m.id IS NULL THEN ': its member does not exist'
			WHEN g.id IS NULL THEN ': its program ' || p.program_id || ' does not exist'
			ELSE ': its program ' || p.program_id || ' is not its member''s program '
				|| m.program_id END
	FROM postings p
	LEFT JOIN members m ON m.id = p.member_id
	LEFT JOIN programs g ON g.id = p.program_id
	WHERE m.id IS NULL OR g.id IS NULL OR m.program_id <> p.program_id
	UNION ALL
	SELECT coalesce(m.customer_ref, 'member ' || l.member_id),
		'lot ' || l.id || CASE
			WHEN m.id IS NULL THEN ': its member does not exist'
			WHEN p.id IS NULL THEN ': its posting ' || l.posting_id || ' does not exist'
			ELSE ': its posting ' || l.posting_id || ' belongs to member ' || p.member_id
			END
	FROM lots l
	LEFT JOIN members m ON m.id = l.member_id
	LEFT JOIN postings p ON p.id = l.posting_id
	WHERE m.id IS NULL OR p.id IS NULL OR p.member_id <> l.member_id
	UNION ALL
	SELECT 'unknown member',
		'accrual amount of posting ' || a.posting_id || ': the posting does not exist'
	FROM accrual_amounts a
	WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.id = a.posting_id)
	UNION ALL
	SELECT coalesce(m.customer_ref, 'member ' || coalesce(p.member_id, l.member_id),
			'unknown member'),
		'lot move of posting ' || pl.posting_id || ' on lot ' || pl.lot_id || CASE
			WHEN p.id IS NULL THEN ': the posting does not exist'
			ELSE ': the lot does not exist' END
	FROM posting_lots pl
	LEFT JOIN postings p ON p.id = pl.posting_id
	LEFT JOIN lots l ON l.id = pl.lot_id
	LEFT JOIN members m ON m.id = coalesce(p.member_id, l.member_id)
	WHERE p.id IS NULL OR l.id IS NULL
	LIMIT 100`

func (l *Ledger) checkReferences(ctx context.Context) ([]Violation, error) {
	rows, err := l.pool.Query(ctx, checkReferencesSQL)
	if err != nil {
		return nil, fmt.Errorf("check ledger references: %w", err)
	}
	defer rows.Close()
	var out []Violation
	for rows.Next() {
		var v Violation
		if err := rows.Scan(&v.Member, &v.What); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
