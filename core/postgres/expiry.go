package postgres

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// sweepSource is the source of the postings and events of the ledger's own
// scheduled work.
const sweepSource = "puntos.sweep"

// creditExpiry is the expiry a credit command names: its expires_at, or the
// end of its expires_on day in the program's time zone. It returns nil when
// the credit names none, so that the program's policy applies. An end at
// or before now is refused. Errors: invalid.
func creditExpiry(prog *program, in *core.Credit, occurred, now time.Time) (*time.Time,
	error) {
	var exp time.Time
	field := "expires_at"
	switch {
	case in.ExpiresAt != nil && in.ExpiresOn != "":
		return nil, core.Errorf(core.Invalid, "expires_on",
			"give expires_at or expires_on, not both")
	case in.ExpiresAt != nil:
		exp = in.ExpiresAt.UTC()
	case in.ExpiresOn != "":
		e, err := prog.ExpiresOn(in.ExpiresOn)
		if err != nil {
			return nil, err
		}
		exp, field = e, "expires_on"
	default:
		return nil, nil
	}
	if err := core.CheckExpiry(field, exp); err != nil {
		return nil, err
	}
	if !exp.After(occurred) {
		return nil, core.Errorf(core.Invalid, field, "must be after occurred_at")
	}
	// Points given with an end already past would be credited and expired
	// in the same breath: the caller would read +n and the member get
	// nothing.
	if !exp.After(now) {
		return nil, core.Errorf(core.Invalid, field, "is in the past (%s): the points would "+
			"expire on arrival", exp.Format(time.RFC3339))
	}
	// Points that expire while still pending could never be spent.
	if spendable := prog.SpendableFrom(occurred); !exp.After(spendable) {
		return nil, core.Errorf(core.Invalid, field, "must be after %s, when the points "+
			"become spendable (the program holds new points %d days)",
			spendable.UTC().Format(time.RFC3339), prog.PendingDays)
	}
	return &exp, nil
}

// dueMembersSQL lists, once per sweep, every member with work due as of $1:
// unreserved points past their expiry, pending points past their holding
// period, open holds past their time. Each branch reads a partial index that
// holds only live rows, so the cost follows what is due, not the ledger's
// size.
const dueMembersSQL = `SELECT member_id FROM lots
		WHERE remaining > held AND expires_at <= $1
	UNION
	-- A pending lot emptied before it matured (reversed, expired, forfeited)
	-- has nothing to mature and stays pending.
	SELECT member_id FROM lots WHERE pending AND remaining > 0 AND spendable_from <= $1
	UNION
	SELECT member_id FROM holds WHERE status = 'open' AND expires_at <= $1
	ORDER BY 1`

// dueWorkMem is the sort memory of the due members' query: a sweep of
// millions of lots de-duplicates millions of member ids, which PostgreSQL's
// default of a few megabytes would spill to disk.
const dueWorkMem = "128MB"

// dueMembers returns the ids of the members with work due as of at, in
// order. It holds 16 bytes per member.
func dueMembers(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, at time.Time) ([][16]byte, error) {
	var ids [][16]byte
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL work_mem = '`+dueWorkMem+`'`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, dueMembersSQL, at)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id [16]byte
			if err := rows.Scan(&id); err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("select due members: %w", err)
	}
	return ids, nil
}

// sweepBatch brings the members ids up to date as of at, in the
// transaction tx. A member with pending points or holds goes through
// refresh, as a command would; the others (nearly all) only have lots to
// expire, which four set-based statements do for the whole batch, with the
// same postings, lot moves, balances and events refresh would make.
func (l *Ledger) sweepBatch(ctx context.Context, tx pgx.Tx, at time.Time, ids [][16]byte) error {
	t := l.newTxn(tx)
	// As of at; written now: an audit reads recorded_at as when it was.
	t.now, t.recorded = at.UTC(), l.Clock().UTC()
	if t.recorded.Before(t.now) {
		t.recorded = t.now
	}
	t.system = sweepSource

	// The planner cannot tell how many lots a batch holds and guesses high
	// enough to compile the statements to machine code, which costs more
	// than the whole batch saves: keep the plain executor.
	if _, err := tx.Exec(ctx, `SET LOCAL jit = off`); err != nil {
		return fmt.Errorf("sweep settings: %w", err)
	}

	// Lock the batch's members in id order, as every command locks them.
	rows, err := tx.Query(ctx, `SELECT `+memberCols+` FROM members WHERE id = ANY($1)
		ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return fmt.Errorf("lock members: %w", err)
	}
	var members []*member
	for rows.Next() {
		m, err := scanMember(rows)
		if err != nil {
			rows.Close()
			return fmt.Errorf("scan member: %w", err)
		}
		members = append(members, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("lock members: %w", err)
	}

	var plain []*member
	for _, m := range members {
		if m.pending == 0 && m.held == 0 {
			plain = append(plain, m)
			continue
		}
		prog, err := t.programByID(ctx, m.programID)
		if err != nil {
			return err
		}
		if err := t.refresh(ctx, prog, m); err != nil {
			return err
		}
	}
	if err := t.expireBulk(ctx, plain); err != nil {
		return err
	}
	return t.flushEvents(ctx)
}

// expireBulkSQL expires, in one statement, the due lots of the members $1
// (of the programs $2, in the same order) as of $3: it takes the unreserved
// points out of each lot, writes one expiry posting per member that had any
// (source $4, recorded at $5) and the lot moves that list what it took, and
// moves the members' cached figures. It returns each posting, in member order, with
// how many lots were due and how many it wrote. The caller holds the
// members' row locks, as every writer of their lots does, so the lots are
// read without locking each one (a lock record and a dirtied page per lot,
// 9% of the sweep's PostgreSQL CPU) and written where the read found them
// (by ctid: no second index search). Were a lot changed under the sweep
// all the same, its new version would not match the ctid and would be left
// out: the two counts then differ and the caller rolls the batch back.
const expireBulkSQL = `WITH due AS (
		SELECT l.tid, l.id, l.member_id, l.remaining - l.held AS x, l.pending, l.expires_at
		FROM unnest($1::uuid[]) AS m(id)
		CROSS JOIN LATERAL (
			SELECT ctid AS tid, id, member_id, remaining, held, pending, expires_at FROM lots
			WHERE member_id = m.id AND remaining > 0 AND remaining > held
			  AND expires_at <= $3) l),
	taken AS (
		UPDATE lots l SET remaining = l.held
		WHERE l.ctid = ANY (ARRAY(SELECT tid FROM due))
		RETURNING 1),
	sums AS (
		SELECT d.member_id, v.program_id,
			-coalesce(sum(d.x) FILTER (WHERE NOT d.pending), 0) AS points,
			-coalesce(sum(d.x) FILTER (WHERE d.pending), 0) AS pending_delta,
			least(max(d.expires_at), $3) AS occurred
		FROM due d JOIN unnest($1::uuid[], $2::uuid[]) AS v(member_id, program_id)
			ON v.member_id = d.member_id
		GROUP BY d.member_id, v.program_id),
	posted AS (
		INSERT INTO postings (program_id, member_id, kind, points, pending_delta, source,
			occurred_at, recorded_at)
		SELECT program_id, member_id, 'expiry', points, pending_delta, $4, occurred, $5::timestamptz
		FROM sums ORDER BY member_id
		RETURNING id, member_id, points, pending_delta, occurred_at),
	moves AS (
		INSERT INTO posting_lots (posting_id, lot_id, points)
		SELECT p.id, d.id, -d.x FROM due d JOIN posted p ON p.member_id = d.member_id
		ORDER BY p.id, d.id),
	balances AS (
		UPDATE members m SET available = m.available + p.points,
			pending = m.pending + p.pending_delta, updated_at = $3
		FROM posted p WHERE m.id = p.member_id)
	SELECT id, member_id, points, pending_delta, occurred_at,
		(SELECT count(*) FROM due), (SELECT count(*) FROM taken)
	FROM posted ORDER BY member_id`

// expireBulk expires the due lots of the locked members ms as refresh would
// (one expiry posting per member listing the lots it took, the member's
// figures moved by it, its event queued), in one statement for the whole
// batch: the lots never travel to this process and back.
func (t *txn) expireBulk(ctx context.Context, ms []*member) error {
	if len(ms) == 0 {
		return nil
	}
	byID := make(map[string]*member, len(ms))
	ids, progs := make([]string, len(ms)), make([]string, len(ms))
	for i, m := range ms {
		ids[i], progs[i], byID[m.id] = m.id, m.programID, m
	}
	rows, err := t.tx.Query(ctx, expireBulkSQL, uuidArg(ids), uuidArg(progs), t.now, t.system,
		t.recordedAt())
	if err != nil {
		return fmt.Errorf("expire lots: %w", err)
	}
	type expired struct {
		m                   *member
		posting             int64
		points, pendingDiff int64
		occurred            time.Time
	}
	var (
		done       []expired
		due, taken int64
	)
	for rows.Next() {
		var e expired
		var memberID string
		if err := rows.Scan(&e.posting, &memberID, &e.points, &e.pendingDiff, &e.occurred,
			&due, &taken); err != nil {
			rows.Close()
			return fmt.Errorf("scan expiry posting: %w", err)
		}
		if e.m = byID[memberID]; e.m == nil {
			rows.Close()
			return fmt.Errorf("expire lots: posting for member %s not in the batch", memberID)
		}
		done = append(done, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("expire lots: %w", pgError(err))
	}
	if due != taken {
		return fmt.Errorf("expire lots: %d of %d due lots changed during the sweep; "+
			"batch rolled back", due-taken, due)
	}

	// The members' figures as the statement left them, and the events.
	for _, e := range done {
		if _, err := t.programByID(ctx, e.m.programID); err != nil {
			return err
		}
		e.m.available += e.points
		e.m.pending += e.pendingDiff
		t.event(e.m, e.posting, posting{kind: core.PostExpiry, points: e.points,
			pendingDelta: e.pendingDiff, occurredAt: e.occurred})
	}
	return nil
}

// NoticeResult counts what one NotifyUpcoming run announced.
type NoticeResult struct {
	// Events is the number of expiry_notice events written, one per member
	// and threshold.
	Events int `json:"events"`
	// Lots is the number of (lot, threshold) notices recorded.
	Lots int `json:"lots"`
}

// noticeCandidates selects, for the members $5 (all when NULL), the lots
// whose unreserved points expire after $1 and within the largest threshold
// ($4), each with the smallest threshold ($2 days, ending at $3) it falls
// within.
const noticeCandidates = `SELECT l.id, l.member_id, l.expires_at, l.remaining - l.held AS pts,
		(SELECT min(t.days) FROM unnest($2::int[], $3::timestamptz[]) AS t(days, until)
		 WHERE l.expires_at <= t.until) AS days
	FROM lots l
	WHERE l.remaining > 0 AND l.remaining > l.held AND l.expires_at > $1 AND l.expires_at <= $4
	  AND ($5::uuid[] IS NULL OR l.member_id = ANY($5))`

// NotifyUpcoming announces on the bus the points that expire within each
// threshold (in days of 24 hours) after at: one expiry_notice event per
// member and threshold, written to the outbox in the transaction that
// records the notices, so the relay publishes them after commit. A lot is
// announced at most once per threshold, whatever runs at the same time or
// ran before: the notice_sent table's primary key decides. A lot found
// within several thresholds (a run missed, or a lot that came with a short
// life) is announced under the smallest only. It works in batches of
// members, one transaction each, and can be stopped and run again at any
// point. Errors: invalid (a bad threshold).
func (l *Ledger) NotifyUpcoming(ctx context.Context, at time.Time,
	thresholds []int) (NoticeResult, error) {
	var res NoticeResult
	if err := core.CheckNoticeDays(thresholds); err != nil {
		return res, err
	}
	if len(thresholds) == 0 {
		return res, nil
	}
	days := slices.Sorted(slices.Values(thresholds))
	at = at.UTC()
	until := make([]time.Time, len(days))
	for i, d := range days {
		until[i] = at.Add(time.Duration(d) * 24 * time.Hour)
	}
	last := until[len(until)-1]

	// The members with a lot to announce, read once.
	rows, err := l.pool.Query(ctx, `SELECT DISTINCT c.member_id FROM (`+noticeCandidates+`) c
		WHERE NOT EXISTS (SELECT 1 FROM notice_sent n
			WHERE n.lot_id = c.id AND n.threshold_days = c.days)
		ORDER BY 1`, at, days, until, last, nil)
	if err != nil {
		return res, fmt.Errorf("select members to notify: %w", err)
	}
	var ids [][16]byte
	for rows.Next() {
		var id [16]byte
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return res, fmt.Errorf("scan member: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("select members to notify: %w", err)
	}

	const batch = 1000
	for start := 0; start < len(ids); start += batch {
		chunk := ids[start:min(start+batch, len(ids))]
		var n NoticeResult
		err := retryDeadlock(func() error {
			var err error
			n, err = l.notifyBatch(ctx, at, days, until, last, chunk)
			return err
		})
		if err != nil {
			return res, err
		}
		res.Events += n.Events
		res.Lots += n.Lots
	}
	return res, nil
}

// notifyBatch records and announces the notices of the members ids in one
// transaction.
func (l *Ledger) notifyBatch(ctx context.Context, at time.Time, days []int, until []time.Time,
	last time.Time, ids [][16]byte) (NoticeResult, error) {
	var res NoticeResult
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		res = NoticeResult{}
		t := l.newTxn(tx)
		t.now = at
		// Notices are claimed in lot order, so that two runs over the same
		// lots wait for each other instead of deadlocking.
		rows, err := tx.Query(ctx, `WITH c AS (`+noticeCandidates+`),
			claimed AS (
				INSERT INTO notice_sent (lot_id, threshold_days, sent_at)
				SELECT id, days, $1 FROM c ORDER BY id
				ON CONFLICT DO NOTHING
				RETURNING lot_id, threshold_days)
			SELECT c.member_id, m.customer_ref, g.code, c.days, c.id, c.pts, c.expires_at
			FROM claimed k JOIN c ON c.id = k.lot_id AND c.days = k.threshold_days
			JOIN members m ON m.id = c.member_id JOIN programs g ON g.id = m.program_id
			ORDER BY c.member_id, c.days, c.expires_at, c.id`, at, days, until, last, ids)
		if err != nil {
			return fmt.Errorf("claim notices: %w", err)
		}
		defer rows.Close()
		var ev *bus.Event
		var notice core.ExpiryNotice
		emit := func() error {
			if ev == nil {
				return nil
			}
			detail, err := json.Marshal(notice)
			if err != nil {
				return err
			}
			ev.Detail = detail
			t.events = append(t.events, *ev)
			res.Events++
			return nil
		}
		for rows.Next() {
			var memberID, ref, code string
			var d int
			var lot core.NoticeLot
			if err := rows.Scan(&memberID, &ref, &code, &d, &lot.LotID, &lot.Points,
				&lot.ExpiresAt); err != nil {
				return fmt.Errorf("scan notice: %w", err)
			}
			lot.ExpiresAt = lot.ExpiresAt.UTC()
			res.Lots++
			if ev == nil || ev.Member != memberID || notice.ThresholdDays != d {
				if err := emit(); err != nil {
					return err
				}
				ev = &bus.Event{ID: uuid.Must(uuid.NewV7()).String(),
					Kind: core.EventExpiryNotice, Program: code, Member: memberID, MemberRef: ref,
					OccurredAt: at, RecordedAt: at, Source: sweepSource}
				notice = core.ExpiryNotice{ThresholdDays: d, AsOf: at, ExpiresAt: lot.ExpiresAt}
			}
			notice.Points += lot.Points
			notice.Lots = append(notice.Lots, lot)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("claim notices: %w", err)
		}
		if err := emit(); err != nil {
			return err
		}
		return t.flushEvents(ctx)
	})
	return res, err
}

// retryDeadlock runs f again, up to three times in all, while PostgreSQL
// broke a deadlock by failing it.
func retryDeadlock(f func() error) error {
	var err error
	for range 3 {
		err = f()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "40P01" {
			return err
		}
	}
	return err
}

// ExpiringMember is a member with points expiring within a window.
type ExpiringMember struct {
	Member         string      `json:"member"`
	Points         core.Points `json:"points"`
	EarliestExpiry time.Time   `json:"earliest_expiry"`
	Lots           int         `json:"lots"`
}

// ExpiringPage is one page of the members of a program with points expiring
// within a window, soonest first.
type ExpiringPage struct {
	Program string           `json:"program"`
	AsOf    time.Time        `json:"as_of"`
	Until   time.Time        `json:"until"`
	Members []ExpiringMember `json:"members"`
	Next    string           `json:"next_cursor,omitempty"`
}

// Expiring lists the members of the program whose points expire after now
// and within days days (of 24 hours): for each, the points that will expire
// (unreserved points of its lots) and the earliest expiry, in order of that
// expiry then customer reference. cursor is the Next of a previous page,
// empty for the first. Errors: not_found (program), invalid (days, cursor).
func (l *Ledger) Expiring(ctx context.Context, programCode string, days int, cursor string,
	limit int) (*ExpiringPage, error) {
	if days < 1 || days > core.MaxNoticeDays {
		return nil, core.Errorf(core.Invalid, "days", "must be between 1 and %d",
			core.MaxNoticeDays)
	}
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	prog, err := readProgram(ctx, l.pool, `code = $1`, programCode)
	if err != nil {
		return nil, err
	}
	now := l.Clock().UTC()
	page := &ExpiringPage{Program: prog.Code, AsOf: now,
		Until: now.Add(time.Duration(days) * 24 * time.Hour), Members: []ExpiringMember{}}
	afterAt, afterRef := now, ""
	if cursor != "" {
		afterAt, afterRef, err = decodeExpiringCursor(cursor)
		if err != nil {
			return nil, err
		}
	}
	rows, err := l.pool.Query(ctx, `SELECT m.customer_ref, sum(l.remaining - l.held)::bigint,
			min(l.expires_at), count(*)
		FROM lots l JOIN members m ON m.id = l.member_id
		WHERE m.program_id = $1 AND l.remaining > l.held
		  AND l.expires_at > $2 AND l.expires_at <= $3
		GROUP BY m.customer_ref
		HAVING (min(l.expires_at), m.customer_ref) > ($4::timestamptz, $5::text)
		ORDER BY min(l.expires_at), m.customer_ref
		LIMIT $6`, prog.ID, now, page.Until, afterAt, afterRef, limit+1)
	if err != nil {
		return nil, fmt.Errorf("read expiring points: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e ExpiringMember
		if err := rows.Scan(&e.Member, &e.Points, &e.EarliestExpiry, &e.Lots); err != nil {
			return nil, fmt.Errorf("scan expiring points: %w", err)
		}
		e.EarliestExpiry = e.EarliestExpiry.UTC()
		page.Members = append(page.Members, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read expiring points: %w", err)
	}
	if len(page.Members) > limit {
		page.Members = page.Members[:limit]
		last := page.Members[limit-1]
		page.Next = encodeExpiringCursor(last.EarliestExpiry, last.Member)
	}
	return page, nil
}

// The cursor of the expiring listing is the position of the last member
// shown: its earliest expiry (microseconds since 1970, PostgreSQL's
// precision) and its reference.
func encodeExpiringCursor(at time.Time, ref string) string {
	return base64.RawURLEncoding.EncodeToString(
		[]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + ref))
}

func decodeExpiringCursor(c string) (time.Time, string, error) {
	bad := core.Errorf(core.Invalid, "cursor", "is not a cursor from a previous page")
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", bad
	}
	micros, ref, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(micros, 10, 64)
	if !ok || err != nil || !core.ValidRef(ref) {
		return time.Time{}, "", bad
	}
	return time.UnixMicro(n).UTC(), ref, nil
}
