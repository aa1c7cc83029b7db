package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// The set-based path applies a run of accruals and credits with a few
// statements for the whole run instead of about ten per command:
//
//  1. one round trip reads the run's programs, looks up which transaction
//     ids of the run are recorded already, locks every member it names (in
//     id order, so that two runs
//     never wait on each other in a cycle), reads its programs' rules
//     revisions and tiers, its members' attributes, the counters of capped
//     rules in the windows its accruals fall in, in programs with tier
//     levels the qualification of each accrual's member in the window
//     ending at its occurred_at, locks its programs' budget rows (in rule
//     code order), and reserves ids for the postings and lots the run may
//     make; rules the process has no copy of at that revision cost one more
//     round trip;
//  2. each command is then checked and worked out in memory, in order,
//     against the locked members' figures and tiers, the rules in force at
//     its occurred_at, the counters and qualifications as the run's earlier
//     accruals left them;
//  3. one more round trip writes the postings, lots, accrual amounts,
//     counters, balances and tiers, tier changes, outbox events, and the
//     commands with their results, each command's row written once; a run
//     of defaultCopyRuns commands or more writes the postings, lots,
//     commands and events with a COPY per table after that round trip
//     instead. A transaction that records one of the run's transaction ids
//     first, while this one works, makes the commands' INSERT come short
//     (or their COPY fail on the key): the transaction fails with
//     ErrCommandRaced and is tried again, and then finds the id recorded
//     and replays it.
//
// Only the plain case is handled here: a command not recorded yet, an active member
// that was not merged, a payload the per-command path would accept, an
// accrual whose rules evaluate without error and whose counters (and, in a
// program with tier levels, qualification) were read, points that do not
// expire on arrival. Anything else (a replay, a refusal, a merged member, a
// budget row not made yet) goes to the per-command path in its place in
// the order, after what the run has worked out so far is written, so that
// the ledger ends up exactly as if every command had taken that path.

// setBasedCandidates marks the commands that may take the set-based path:
// accruals and credits, the first of the batch with their transaction id,
// with a command id PostgreSQL reads as a uuid, an occurrence time and a
// well-formed member reference. Later copies of a transaction id replay
// what the first one stored, on the per-command path.
func (l *Ledger) setBasedCandidates(cmds []bus.Command) []bool {
	out := make([]bool, len(cmds))
	if l.rowByRow {
		return out
	}
	seen := make(map[[2]string]bool, len(cmds))
	for i := range cmds {
		c := &cmds[i]
		key := [2]string{c.Source, c.TxnID}
		first := !seen[key]
		seen[key] = true
		kind := c.Kind == core.KindAccrue || c.Kind == core.KindCredit
		_, idErr := uuid.Parse(c.ID)
		out[i] = first && kind && len(c.ID) == 36 && idErr == nil && !c.OccurredAt.IsZero() &&
			core.ValidRef(c.Member)
	}
	return out
}

// runPlan is one accrual or credit of a run, worked out in memory.
type runPlan struct {
	at      int // index of the command in the run
	cmd     *bus.Command
	m       *member
	points  int64        // what the outcome reports
	balance core.Balance // the member's figures after the command
	// The posting and its lot, when the command earns points.
	post        bool
	kind        string
	n           int64
	pending     bool
	earned      time.Time
	spendable   time.Time
	expires     *time.Time
	remaining   int64
	reason      string
	partner     string
	ruleVersion string
	amount      *big.Rat     // the money amount of an accrual
	counts      []counterAdd // what the accrual adds to rule counters
	// tier is the member's tier level once the command is applied (its
	// ledger event carries it); change is the tier change the accrual made.
	tier   string
	change *tierChange
}

// tierChange is a row of member_tiers that an accrual of a run adds.
type tierChange struct {
	from, to      string
	qualification int64
	spend         *string   // nil unless the tiers' basis is spend
	at            time.Time // when the review saw it
}

// runState is what the first round trip of a run reads.
type runState struct {
	ids     idPool             // posting and lot ids for the run
	progs   []*program         // nil for a program that does not exist
	fresh   []bool             // not recorded yet: the run records it
	members map[string]*member // by program id and customer reference
	// What accruals need, by program id: its tier levels (nil when it has
	// none), its rules revision (nil when it never had a rule) and its
	// rules as of this transaction.
	tiers map[string]*core.Tiers
	revs  map[string]*int64
	rules map[string]*ruleSnapshot
	// quals are the qualifications the run read, by member and instant, of
	// the accruals in programs with tier levels; accrued holds what the
	// run's accruals added since (by member id), which the reads miss.
	quals   map[qualKey]qualSums
	accrued map[string][]runAccrual
	// now is the transaction's time: a late accrual's member is reviewed
	// with the qualification that ends then (reviewTier).
	now time.Time
	// attrs are the stored attributes of the members, by member id.
	attrs map[string][]byte
	// counters are the rule counters the run read, as its accruals leave
	// them. Budget rows in it are locked. A member's counter missing here
	// reads 0 when the run read that rule's counters of that kind for the
	// window (capped, wins); any other counter was not read, and an accrual
	// that needs it goes to the per-command path.
	counters map[counterKey]int64
	capped   map[cappedKey]bool
	wins     map[string]bool
	// ruleReads is set when the run reads attributes and counters,
	// qualReads when it reads tier qualifications.
	ruleReads, qualReads bool
	// fired is the list of fired rules the run's evaluations share: an
	// evaluation's list is read (for the counters) before the next one.
	fired []core.Fired
}

// qualKey names a member's qualification window ending at an instant (in
// microseconds, PostgreSQL's precision).
type qualKey struct {
	member string
	at     int64
}

// qualSums is what the ledger held of a member's accruals in a window:
// points, and spend when the tiers' basis is spend (nil otherwise).
type qualSums struct {
	points int64
	spend  *big.Rat
}

// runAccrual is an accrual the run posted, as qualification counts it.
type runAccrual struct {
	at     int64 // occurred_at, in microseconds
	points int64
	amount *big.Rat
}

// counterKey names a row of rule_counters.
type counterKey struct{ program, code, scope, win string }

// cappedKey names a rule capped per member in windows of a kind ("d", "m"
// or "y").
type cappedKey struct{ program, code, kind string }

func memberKey(programID, ref string) string { return programID + "\x00" + ref }

// applyRun applies a run of set-based candidates, writing their results to
// out (one per command, in order).
func (t *txn) applyRun(ctx context.Context, cmds []bus.Command, out []Applied) error {
	st, err := t.readAndLock(ctx, cmds)
	if err != nil {
		return err
	}

	// Sized for the whole run: a plan is large, and a bus run holds
	// thousands, so growing the slice by doubling copied them all again.
	plans := make([]runPlan, 0, len(cmds))
	for i := range cmds {
		c := &cmds[i]
		if prog := st.progs[i]; st.fresh[i] && prog != nil {
			m := st.members[memberKey(prog.ID, c.Member)]
			if p, ok := t.plan(c, prog, m, st); ok {
				p.at = i
				plans = append(plans, p)
				continue
			}
		}

		// The per-command path, after what the run worked out so far. Its
		// postings draw later ids than the run's reserve: the reserve is
		// dropped, so that the run's later postings still follow it.
		if err := t.writePlans(ctx, plans, &st.ids, out); err != nil {
			return err
		}
		plans = plans[:0]
		st.ids = idPool{}
		a, err := t.apply(ctx, c)
		if err != nil {
			return fmt.Errorf("command %s/%s: %w", c.Source, c.TxnID, err)
		}
		out[i] = a
		// A command that applied may have changed members and counters the
		// rest of the run works on: read them again.
		if a.Result.Status == bus.StatusOK && !a.Result.Replayed && i+1 < len(cmds) {
			if err := t.readRunAgain(ctx, cmds[i+1:], st); err != nil {
				return err
			}
		}
	}
	return t.writePlans(ctx, plans, &st.ids, out)
}

// readAndLock reads the run's programs (those the transaction has not read
// yet), which of its transaction ids are recorded, locks its members and
// reads what its accruals need, in one round trip (two when the process
// lacks a program's rules at their current revision).
func (t *txn) readAndLock(ctx context.Context, cmds []bus.Command) (*runState, error) {
	st := &runState{fresh: make([]bool, len(cmds)), progs: make([]*program, len(cmds)),
		tiers: map[string]*core.Tiers{}, revs: map[string]*int64{},
		rules: map[string]*ruleSnapshot{},
		attrs: map[string][]byte{}, counters: map[counterKey]int64{},
		capped: map[cappedKey]bool{}, wins: map[string]bool{},
		quals: map[qualKey]qualSums{}, accrued: map[string][]runAccrual{}, now: t.now}
	b := &pgx.Batch{}

	// The programs, once per transaction like loadProgram.
	var codes []string
	for i := range cmds {
		code := cmds[i].Program
		if _, ok := t.programs[code]; !ok && !slices.Contains(codes, code) {
			codes = append(codes, code)
		}
	}
	if len(codes) > 0 {
		b.Queue(`SELECT `+programCols+` FROM programs WHERE code = ANY($1)`, codes).Query(
			func(rows pgx.Rows) error {
				for rows.Next() {
					p, err := scanProgram(rows)
					if err != nil {
						return fmt.Errorf("read programs: %w", err)
					}
					t.programs[p.Code] = p
				}
				return rows.Err()
			})
	}

	// Which transaction ids are recorded already (replays, and conflicts
	// with another request); the others are fresh, and the run records them.
	sources, txns := make([]string, len(cmds)), make([]string, len(cmds))
	at := make(map[[2]string]int, len(cmds))
	for i := range cmds {
		c := &cmds[i]
		sources[i], txns[i] = c.Source, c.TxnID
		at[[2]string{c.Source, c.TxnID}] = i
		st.fresh[i] = true
	}
	b.Queue(recordedRun, sources, txns).Query(func(rows pgx.Rows) error {
		var source, txn string
		_, err := pgx.ForEachRow(rows, []any{&source, &txn}, func() error {
			if i, ok := at[[2]string{source, txn}]; ok {
				st.fresh[i] = false
			}
			return nil
		})
		return err
	})

	st.ruleReads, st.qualReads = expectShape(cmds)
	queueRunReads(b, cmds, st)
	st.ids.queue(b, len(cmds))

	// The rules revisions and tiers of the programs of the run's accruals.
	if codes := accrualPrograms(cmds); len(codes) > 0 {
		b.Queue(runProgramRules, codes).Query(func(rows pgx.Rows) error {
			var id string
			var rev *int64
			var tiers []byte
			_, err := pgx.ForEachRow(rows, []any{&id, &rev, &tiers}, func() error {
				if tiers != nil {
					var tt core.Tiers
					if err := json.Unmarshal(tiers, &tt); err != nil {
						return fmt.Errorf("decode tiers: %w", err)
					}
					if len(tt.Levels) > 0 {
						st.tiers[id] = &tt
					}
				}
				st.revs[id] = rev
				return nil
			})
			return err
		})
	}

	if err := t.tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("read run: %w", err)
	}
	for i := range cmds {
		st.progs[i] = t.programs[cmds[i].Program]
	}

	// A program that has rules or tier levels after all: read what its
	// accruals need.
	rules, tiers := t.rememberShape(cmds, st)
	if b := (&pgx.Batch{}); (rules && !st.ruleReads) || (tiers && !st.qualReads) {
		if rules && !st.ruleReads {
			st.ruleReads = true
			queueRuleReads(b, cmds, st)
		}
		if tiers && !st.qualReads {
			st.qualReads = true
			queueQualifications(b, cmds, st)
		}
		if err := t.tx.SendBatch(ctx, b).Close(); err != nil {
			return nil, fmt.Errorf("read run: %w", err)
		}
	}

	// The rules, as the per-command path would find them.
	for id, rev := range st.revs {
		snap, ok := t.ruleCache.snapshots[id]
		if !ok {
			var err error
			if snap, err = t.ruleSnapshotAt(ctx, id, rev); err != nil {
				return nil, err
			}
		}
		st.rules[id] = snap
	}
	return st, nil
}

// accrualPrograms lists the programs of the accruals of cmds, once each.
func accrualPrograms(cmds []bus.Command) []string {
	var codes []string
	for i := range cmds {
		code := cmds[i].Program
		if cmds[i].Kind == core.KindAccrue && !slices.Contains(codes, code) {
			codes = append(codes, code)
		}
	}
	return codes
}

// programShapes remembers, for the whole process, whether each program (by
// code) had rules and tier levels when a run last looked. A run whose
// accruals are all in programs that had none skips reading attributes,
// rule counters and tier qualifications in its first round trip; should
// one of them have some by then (the run reads every program's rules
// revision and tiers anyway), a second round trip reads them.
var programShapes sync.Map // program code -> programShape

type programShape struct{ rules, tiers bool }

// expectShape reports whether a program of the accruals of cmds had rules,
// and whether one had tier levels, when last seen; a program never seen
// counts as having both.
func expectShape(cmds []bus.Command) (rules, tiers bool) {
	for _, code := range accrualPrograms(cmds) {
		v, ok := programShapes.Load(code)
		if !ok {
			return true, true
		}
		sh := v.(programShape)
		rules, tiers = rules || sh.rules, tiers || sh.tiers
	}
	return rules, tiers
}

// rememberShape records which programs of the accruals of cmds have rules
// and tier levels now, and reports whether any has each.
func (t *txn) rememberShape(cmds []bus.Command, st *runState) (rules, tiers bool) {
	for _, code := range accrualPrograms(cmds) {
		prog := t.programs[code]
		if prog == nil {
			continue
		}
		sh := programShape{rules: st.revs[prog.ID] != nil, tiers: st.tiers[prog.ID] != nil}
		if old, ok := programShapes.Load(code); !ok || old.(programShape) != sh {
			programShapes.Store(code, sh) // only on a change: every run passes here
		}
		rules, tiers = rules || sh.rules, tiers || sh.tiers
	}
	return rules, tiers
}

// queueRunReads queues on b the lock of the members cmds name and, when
// st.qualReads is set, the qualifications their accruals in programs with
// tier levels need (queueQualifications), when st.ruleReads is set, what
// they need for rules (queueRuleReads); st receives them when b runs.
func queueRunReads(b *pgx.Batch, cmds []bus.Command, st *runState) {
	queueLockMembers(b, cmds, &st.members)
	if st.qualReads {
		queueQualifications(b, cmds, st)
	}
	if st.ruleReads {
		queueRuleReads(b, cmds, st)
	}
}

// queueRuleReads queues on b, for the accruals of cmds, the members'
// attributes, the counters of capped rules and the lock of the programs'
// budget rows; st receives them when b runs.
func queueRuleReads(b *pgx.Batch, cmds []bus.Command, st *runState) {
	st.attrs = map[string][]byte{}
	st.counters = map[counterKey]int64{}
	st.capped = map[cappedKey]bool{}
	st.wins = map[string]bool{}
	codes := accrualPrograms(cmds)
	if len(codes) == 0 {
		return
	}

	var refs, wins []string
	seen := map[string]bool{}
	for i := range cmds {
		c := &cmds[i]
		if c.Kind != core.KindAccrue {
			continue
		}
		if !seen[c.Member] {
			seen[c.Member] = true
			refs = append(refs, c.Member)
		}
		for _, win := range candidateWindows(c.OccurredAt) {
			if !st.wins[win] {
				st.wins[win] = true
				wins = append(wins, win)
			}
		}
	}

	b.Queue(runAttributes, codes, refs).Query(func(rows pgx.Rows) error {
		var id string
		var attrs []byte
		_, err := pgx.ForEachRow(rows, []any{&id, &attrs}, func() error {
			st.attrs[id] = attrs
			return nil
		})
		if err != nil {
			return fmt.Errorf("read attributes: %w", err)
		}
		return nil
	})
	readCounters := func(rows pgx.Rows) error {
		var k counterKey
		var points int64
		_, err := pgx.ForEachRow(rows, []any{&k.program, &k.code, &k.scope, &k.win, &points},
			func() error {
				if kind, ok := strings.CutPrefix(k.win, "cap:"); ok && k.scope == "" {
					st.capped[cappedKey{k.program, k.code, kind}] = true
					return nil
				}
				st.counters[k] = points
				return nil
			})
		if err != nil {
			return fmt.Errorf("read rule counters: %w", err)
		}
		return nil
	}
	b.Queue(runMemberCounters, codes, refs, wins).Query(readCounters)
	b.Queue(lockRunBudgets, codes).Query(readCounters)
}

// queueQualifications queues on b the read of the qualification of each
// accrual of cmds in a program with tier levels: what its member accrued
// in the window ending at its occurred_at, as tierQualification reads it,
// and in the window ending now (st.now), which its tier review reads. It
// forgets what the run added before: the read sees it.
func queueQualifications(b *pgx.Batch, cmds []bus.Command, st *runState) {
	st.quals = map[qualKey]qualSums{}
	st.accrued = map[string][]runAccrual{}
	var codes, refs []string
	var ats []time.Time
	for i := range cmds {
		c := &cmds[i]
		if c.Kind == core.KindAccrue {
			codes, refs, ats = append(codes, c.Program, c.Program),
				append(refs, c.Member, c.Member), append(ats, c.OccurredAt, st.now)
		}
	}
	if len(codes) == 0 {
		return
	}
	b.Queue(runQualifications, codes, refs, ats).Query(func(rows pgx.Rows) error {
		var id string
		var at time.Time
		var points int64
		var spend *string
		_, err := pgx.ForEachRow(rows, []any{&id, &at, &points, &spend}, func() error {
			s := qualSums{points: points}
			if spend != nil {
				var ok bool
				if s.spend, ok = new(big.Rat).SetString(*spend); !ok {
					return fmt.Errorf("bad spend %q", *spend)
				}
			}
			st.quals[qualKey{id, at.UnixMicro()}] = s
			return nil
		})
		if err != nil {
			return fmt.Errorf("read qualifications: %w", err)
		}
		return nil
	})
}

// runQualifications reads, for each (program code, member reference,
// instant) of $1, $2, $3 in a program with tier levels, the member's
// qualification in the tier window ending at the instant: points, and
// spend when the basis is spend, counted as qualification and
// spendQualification count them. The programs with tier levels and their
// members are picked first, so that a run without any costs next to
// nothing whatever plan the statement gets. A member's windows (an
// accrual's and the one ending now, which overlap but for milliseconds)
// are read together: the part common to all of them, (mid, first], is
// summed once, and those in (lo, mid] and (first, last], outside it but
// inside some window (none or a few for events on time, all of them when
// the windows do not overlap), are read into arrays each window adds from.
// One window read at a time cost an index and heap probe per accrual per
// window, which grows with the member's accruals in the window. Laterals
// keep the plan per member (a join of the instants with the accruals read
// was planned as a nested loop over both); OFFSET 0 keeps the sum from
// being merged into a join.
var runQualifications = `WITH t AS MATERIALIZED (
		SELECT p.id, p.code, pt.body->>'basis' = 'spend' AS by_spend,
			make_interval(hours => 24 * (pt.body->>'window_days')::int) AS len
		FROM programs p JOIN program_tiers pt ON pt.program_id = p.id
		WHERE p.code = ANY ($1::text[]) AND pt.body->'levels'->0 IS NOT NULL
	), m AS MATERIALIZED (
		SELECT id, program_id, customer_ref FROM members
		WHERE program_id = ANY (ARRAY(SELECT id FROM t)) AND customer_ref = ANY ($2::text[])
	), v AS MATERIALIZED (
		SELECT DISTINCT m.id, u.at, t.len, t.by_spend
		FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(code, ref, at)
		JOIN t ON t.code = u.code
		JOIN m ON m.program_id = t.id AND m.customer_ref = u.ref
	), w AS MATERIALIZED (
		SELECT id, len, by_spend, array_agg(at) AS ats, min(at) - len AS lo,
			least(max(at) - len, min(at)) AS mid, min(at) AS first, max(at) AS last
		FROM v GROUP BY id, len, by_spend
	)
	SELECT w.id, u.at, (c.points + q.points)::bigint,
		CASE WHEN w.by_spend THEN (c.spend + q.spend)::text END
	FROM w CROSS JOIN LATERAL (
		SELECT COALESCE(sum(a.points), 0) AS points, COALESCE(sum(a.amount), 0) AS spend
		FROM (` + windowAccruals("w.mid", "w.first") + `
			OFFSET 0) AS a) AS c
	CROSS JOIN LATERAL (
		SELECT array_agg(f.occurred_at) AS occurred, array_agg(f.points) AS points,
			array_agg(f.amount) AS amounts
		FROM (` + windowAccruals("w.lo", "w.mid") + `
		UNION ALL
		` + windowAccruals("w.first", "w.last") + `) AS f) AS f
	CROSS JOIN LATERAL unnest(w.ats) AS u(at)
	CROSS JOIN LATERAL (
		SELECT COALESCE(sum(e.points), 0), COALESCE(sum(e.amount), 0)
		FROM unnest(f.occurred, f.points, f.amounts) AS e(occurred_at, points, amount)
		WHERE e.occurred_at > u.at - w.len AND e.occurred_at <= u.at) AS q(points, spend)`

// windowAccruals selects, for the member w of runQualifications, its
// accruals in (from, to] that no reversal undid: when, their points
// (pending ones included) and, when the tiers go by spend, their amount.
func windowAccruals(from, to string) string {
	return `SELECT p.occurred_at, p.points + p.pending_delta AS points,
				(SELECT a.amount FROM accrual_amounts a
					WHERE w.by_spend AND a.posting_id = p.id) AS amount
			FROM postings p
			WHERE p.member_id = w.id AND p.kind = 'accrual'
			  AND p.occurred_at > ` + from + ` AND p.occurred_at <= ` + to + `
			  AND NOT EXISTS (SELECT 1 FROM postings r WHERE r.reverses_id = p.id)`
}

// candidateWindows are the counter windows an event at may fall in,
// whatever its program's time zone (UTC offsets stay within a day): the
// local day is the UTC one or one either side.
func candidateWindows(at time.Time) []string {
	u := at.UTC()
	out := make([]string, 0, 7)
	for _, d := range []time.Time{u.AddDate(0, 0, -1), u, u.AddDate(0, 0, 1)} {
		day, month := core.Windows(d, time.UTC)
		for _, w := range []string{"d:" + day, "m:" + month, "y:" + core.YearOf(month)} {
			if !slices.Contains(out, w) {
				out = append(out, w)
			}
		}
	}
	return out
}

// readRunAgain locks again the members cmds name and reads again what
// their accruals need of members and counters, after a command on the
// per-command path changed them.
func (t *txn) readRunAgain(ctx context.Context, cmds []bus.Command, st *runState) error {
	b := &pgx.Batch{}
	queueRunReads(b, cmds, st)
	if b.Len() == 0 {
		return nil
	}
	if err := t.tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("read run: %w", err)
	}
	return nil
}

// recordedRun lists which of a run's transaction ids the commands table
// holds.
const recordedRun = `SELECT c.source, c.txn_id
	FROM unnest($1::text[], $2::text[]) AS v(source, txn_id)
	JOIN commands c ON c.source = v.source AND c.txn_id = v.txn_id`

// lockRunMembers locks the members of a run, in id order, merged or not.
// The two lists make one scan of the program-and-reference index (a join
// on pairs makes one probe per member, far slower for a few hundred). When
// a run spans several programs, a member of one whose reference the run
// names in another is locked too; it is not changed.
const lockRunMembers = `SELECT ` + memberCols + ` FROM members
	WHERE program_id = ANY (ARRAY(SELECT id FROM programs WHERE code = ANY ($1::text[])))
	  AND customer_ref = ANY ($2::text[])
	ORDER BY id FOR UPDATE`

// runProgramRules reads, per program, its rules revision (null when it
// never had a rule) and its tiers.
const runProgramRules = `SELECT p.id, v.revision,
		(SELECT body FROM program_tiers pt WHERE pt.program_id = p.id)
	FROM programs p LEFT JOIN rule_revisions v ON v.program_id = p.id
	WHERE p.code = ANY($1)`

// runPrograms are the programs named by codes $1.
const runPrograms = `SELECT p.id FROM programs p WHERE p.code = ANY ($1::text[])`

// runAttributes reads the attributes of the members a run locked.
const runAttributes = `SELECT id, attributes FROM members
	WHERE program_id = ANY (ARRAY(` + runPrograms + `))
	  AND customer_ref = ANY ($2::text[])`

// runMemberCounters reads the rules of programs $1 capped per member by
// day, month or year (a rule is capped when any of its versions is), as
// rows of empty scope and window 'cap:d', 'cap:m' or 'cap:y', and the existing
// counters of those rules for members $2 in windows $3. Both come from one
// statement, so that they agree. Each member's counters are looked up on
// their own (OFFSET 0 keeps the planner from merging the lookup into a
// join), so that stale table statistics cannot turn them into a scan.
const runMemberCounters = `WITH capped AS MATERIALIZED (
		SELECT DISTINCT r.program_id, r.code, k.kind FROM rules r
		CROSS JOIN LATERAL (VALUES ('d', r.body->'caps'->>'per_day'),
			('m', r.body->'caps'->>'per_month'), ('y', r.body->'caps'->>'per_year'))
			AS k(kind, cap)
		WHERE r.program_id = ANY (ARRAY(` + runPrograms + `))
		  AND COALESCE(k.cap::bigint, 0) > 0
	)
	SELECT program_id, code, '', 'cap:' || kind, 0::bigint FROM capped
	UNION ALL
	SELECT rc.program_id, rc.rule_code, rc.scope, rc.win, rc.points
	FROM members m
	JOIN (SELECT DISTINCT program_id, code FROM capped) c ON c.program_id = m.program_id
	CROSS JOIN LATERAL (
		SELECT * FROM rule_counters rc WHERE rc.program_id = c.program_id
		  AND rc.rule_code = c.code AND rc.scope = m.id::text AND rc.win = ANY ($3::text[])
		OFFSET 0) rc
	WHERE m.program_id = ANY (ARRAY(` + runPrograms + `))
	  AND m.customer_ref = ANY ($2::text[])`

// lockRunBudgets locks the budget rows of the budgeted rules (any version)
// of the programs $1, in program and rule code order, so that two runs
// never wait on each other in a cycle. A budget row not made yet is left
// to the per-command path, which makes it.
const lockRunBudgets = `SELECT program_id, rule_code, scope, win, points FROM rule_counters
	WHERE scope = '' AND win = 'budget'
	  AND (program_id, rule_code) IN (SELECT r.program_id, r.code FROM rules r
		WHERE r.program_id = ANY (ARRAY(` + runPrograms + `))
		  AND COALESCE((r.body->'caps'->>'budget')::bigint, 0) > 0)
	ORDER BY program_id, rule_code FOR UPDATE`

// queueLockMembers queues the lock of the members cmds name; *into receives
// them when the batch runs.
func queueLockMembers(b *pgx.Batch, cmds []bus.Command, into *map[string]*member) {
	var codes, refs []string
	seen := map[string]bool{}
	for i := range cmds {
		if p := "p\x00" + cmds[i].Program; !seen[p] {
			seen[p] = true
			codes = append(codes, cmds[i].Program)
		}
		if r := "r\x00" + cmds[i].Member; !seen[r] {
			seen[r] = true
			refs = append(refs, cmds[i].Member)
		}
	}
	*into = make(map[string]*member, len(refs))
	if len(refs) == 0 {
		return
	}
	b.Queue(lockRunMembers, codes, refs).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			m, err := scanMember(rows)
			if err != nil {
				return fmt.Errorf("lock members: %w", err)
			}
			(*into)[memberKey(m.programID, m.ref)] = m
		}
		return rows.Err()
	})
}

// plan works a command out in memory, updating the member's figures and
// tier and the run's counters. It reports false, changing nothing, for
// anything the per-command path must decide: a refusal, a merged member, an
// evaluation that fails or needs what the run did not read, points that
// expire on arrival. Every check is the one the per-command path makes.
func (t *txn) plan(cmd *bus.Command, prog *program, m *member, st *runState) (runPlan, bool) {
	p := runPlan{cmd: cmd, m: m, earned: cmd.OccurredAt}
	var q qualSums // the member's qualification before an accrual
	// A member who owes points repays the debt from the credit, which
	// newLot ties to the lots the debt came from.
	if m == nil || m.merged != nil || m.status != "active" || m.available < 0 {
		return p, false
	}
	if t.checkOccurred(cmd.OccurredAt) != nil {
		return p, false
	}
	switch cmd.Kind {
	case core.KindAccrue:
		var in core.Accrue
		if decodeAccrue(cmd.Payload, &in) != nil || in.EventType == "" {
			return p, false
		}
		if in.Currency != "" && !strings.EqualFold(in.Currency, prog.Currency) {
			return p, false
		}
		// A partner's purchase without a currency is in the partner's
		// own (purchaseCurrency): the command path reads it.
		if in.Currency == "" && partnerOf(cmd.Source) != "" {
			return p, false
		}
		amount, err := core.ParseAmount("amount", in.Amount)
		if err != nil || amount.Sign() < 0 || strings.HasPrefix(strings.TrimSpace(in.Amount), "-") ||
			core.CheckAmountDigits("amount", in.Amount, prog.Currency) != nil {
			return p, false
		}
		// What accrualPoints gives: the tier the member's qualification
		// reaches at the event, which rules may use, then the evaluation.
		var lvl *core.TierLevel
		if tiers := st.tiers[prog.ID]; tiers != nil {
			var read bool
			if q, read = st.qualify(tiers, m, cmd.OccurredAt); !read {
				return p, false
			}
			lvl = tiers.Reached(core.Points(q.points), q.spend)
		}
		e, counts, ok := st.evaluate(prog, m, lvl, core.EventFacts{Type: in.EventType,
			Amount: amount, AmountText: in.Amount, Channel: cmd.Channel, Partner: in.Partner,
			OccurredAt: cmd.OccurredAt},
			strings.HasPrefix(cmd.Source, core.PartnerSourcePrefix))
		if !ok || e.Points < 0 {
			return p, false
		}
		p.kind, p.n, p.amount, p.counts = core.PostAccrual, int64(e.Points), amount, counts
		p.reason, p.partner, p.ruleVersion = in.EventType, in.Partner, e.RuleVersion
		p.expires = prog.ExpiresAt(p.earned)
	case core.KindCredit:
		var in core.Credit
		if decode(cmd.Payload, &in) != nil || core.CheckPoints("points", in.Points) != nil ||
			core.CheckReason(in.Reason, true) != nil {
			return p, false
		}
		exp, err := creditExpiry(prog, &in, cmd.OccurredAt, t.now)
		if err != nil {
			return p, false
		}
		if exp == nil {
			exp = prog.ExpiresAt(p.earned)
		}
		p.kind, p.n, p.reason, p.expires = core.PostCredit, int64(in.Points), in.Reason, exp
	default:
		return p, false
	}
	p.points = p.n
	if p.n == 0 {
		st.count(m.programID, p.counts)
		p.balance = m.balance()
		p.tier = m.tier
		return p, true
	}
	// Points that reach the ledger already expired are expired at once by
	// the per-command path.
	if p.expires != nil && !p.expires.After(t.now) {
		return p, false
	}
	// The tier review (reviewTier): at the event, or, for a late one, now,
	// the event counted when it falls in the window that ends now.
	tiers := st.tiers[prog.ID]
	review := tiers != nil && p.kind == core.PostAccrual
	rq, counted := q, true
	if review && p.earned.Before(t.now) {
		var read bool
		if rq, read = st.qualify(tiers, m, t.now); !read {
			return p, false
		}
		counted = p.earned.After(tiers.WindowStart(t.now)) // the window is (start, now]
	}
	st.count(m.programID, p.counts)
	if review {
		st.review(tiers, &p, rq, counted)
	}

	p.post = true
	p.spendable = prog.SpendableFrom(p.earned)
	p.pending = p.spendable.After(t.now)
	p.remaining = p.n
	if p.pending {
		m.pending += p.n
	} else {
		m.available += p.n // never in debt here: see above
	}
	if p.remaining > 0 {
		t.touched[m.id] = true
	}
	p.balance = m.balance()
	p.tier = m.tier
	return p, true
}

// qualify is tierQualification in memory: the qualification the run read
// for m's window ending at at, plus what the run's accruals since added to
// that window. It reports false when the run did not read it.
func (st *runState) qualify(tiers *core.Tiers, m *member, at time.Time) (qualSums, bool) {
	read, ok := st.quals[qualKey{m.id, at.UnixMicro()}]
	if !ok || tiers.BySpend() != (read.spend != nil) {
		return qualSums{}, false
	}
	q := qualSums{points: read.points}
	if read.spend != nil {
		q.spend = new(big.Rat).Set(read.spend)
	}
	// The window is (start, at], as qualification bounds it.
	from, to := tiers.WindowStart(at).UnixMicro(), at.UnixMicro()
	for _, a := range st.accrued[m.id] {
		if a.at > from && a.at <= to {
			q.points += a.points
			if q.spend != nil {
				q.spend.Add(q.spend, a.amount)
			}
		}
	}
	return q, true
}

// review is reviewTier in memory for the accrual p, which earns points:
// the level the qualification q before it, plus the accrual when counted,
// reaches becomes the member's tier, a change of tier is recorded with p,
// and the accrual counts in the qualification of the run's later accruals.
func (st *runState) review(tiers *core.Tiers, p *runPlan, q qualSums, counted bool) {
	m := p.m
	if counted {
		q.points += p.n
		if q.spend != nil {
			q.spend.Add(q.spend, p.amount)
		}
	}
	next := ""
	if lvl := tiers.Reached(core.Points(q.points), q.spend); lvl != nil {
		next = lvl.Code
	}
	if next != m.tier {
		at := st.now // reviewTier records a late event's change now
		if p.earned.After(at) {
			at = p.earned
		}
		p.change = &tierChange{from: m.tier, to: next, qualification: q.points, at: at}
		if q.spend != nil {
			text := spendText(q.spend)
			p.change.spend = &text
		}
		m.tier = next
	}
	st.accrued[m.id] = append(st.accrued[m.id], runAccrual{at: p.earned.UnixMicro(),
		points: p.n, amount: p.amount})
}

// errNotRead stops an evaluation that needs a counter the run did not read.
var errNotRead = errors.New("rule counter not read by the run")

// evaluate is accrualEval and the counting of usageAdds in memory: the
// points an event earns m, whose qualification reaches tier level lvl (nil
// for none), by the program's rules (its flat rate while it has none) and
// what they add to the rule counters. It reports false for
// an evaluation that fails, or that needs attributes or counters the run
// did not read: the per-command path then decides.
func (st *runState) evaluate(prog *program, m *member, lvl *core.TierLevel,
	ev core.EventFacts, byPartner bool) (core.Evaluation, []counterAdd, bool) {
	snap := st.rules[prog.ID]
	if snap == nil {
		return core.Evaluation{}, nil, false
	}
	if len(snap.versions) == 0 || snap.flatRateFor(ev.Type, byPartner) {
		e, err := standInEval(prog, ev)
		return e, nil, err == nil
	}
	if snap.knows(ev.Type) != nil {
		return core.Evaluation{}, nil, false // refused by the command path
	}
	attrs, ok := st.attrs[m.id]
	if !ok {
		return core.Evaluation{}, nil, false
	}
	mf, err := plainMemberFacts(prog, m, attrs, ev.OccurredAt)
	if err != nil {
		return core.Evaluation{}, nil, false
	}
	if lvl != nil {
		// As memberFacts: the level the member's qualification reaches.
		mf.Tier = lvl.Code
		mf.TierMultiplier, _ = new(big.Rat).SetString(lvl.Multiplier)
	}

	// Usage as ruleUsage reads it, from the counters the run read.
	counter := func(code, scope, win string) (core.Points, error) {
		if v, ok := st.counters[counterKey{prog.ID, code, scope, win}]; ok {
			return core.Points(v), nil
		}
		kind, _, _ := strings.Cut(win, ":")
		if scope != "" && st.capped[cappedKey{prog.ID, code, kind}] && st.wins[win] {
			return 0, nil // read, and not made yet
		}
		return 0, errNotRead
	}
	usage := func(r *core.CompiledRule, day, month string) (core.Usage, error) {
		var u core.Usage
		var err error
		if r.Caps.PerDay > 0 {
			u.Day, err = counter(r.Code, m.id, "d:"+day)
		}
		if r.Caps.PerMonth > 0 && err == nil {
			u.Month, err = counter(r.Code, m.id, "m:"+month)
		}
		if r.Caps.PerYear > 0 && err == nil {
			u.Year, err = counter(r.Code, m.id, "y:"+core.YearOf(month))
		}
		if r.Caps.Budget > 0 && err == nil {
			u.Budget, err = counter(r.Code, "", "budget")
		}
		return u, err
	}
	e, err := snap.inForce(ev.Type, ev.OccurredAt).EvaluateInto(st.fired, ev, *mf,
		prog.Location(), usage)
	if err != nil {
		return e, nil, false
	}
	st.fired = e.Fired
	caps := func(code string, version int) (core.Caps, error) {
		if c, ok := snap.byRef[ruleKey{code, version}]; ok {
			return c.Caps, nil
		}
		return core.Caps{}, errNotRead
	}
	adds, err := usageAdds(m.id, e, caps)
	return e, adds, err == nil
}

// count adds what an accrual of the run gave to the run's counters.
func (st *runState) count(programID string, adds []counterAdd) {
	for _, a := range adds {
		st.counters[counterKey{programID, a.code, a.scope, a.win}] += a.points
	}
}

// idPool holds posting and lot ids reserved for a run, in increasing order.
// New postings take them in command order, so that ids follow the order in
// which the ledger applied the commands, as on the per-command path; a
// command that earns nothing leaves a gap, as a sequence may.
type idPool struct {
	postings, lots []int64
	next           int
}

func (p *idPool) left() int { return len(p.postings) - p.next }

func (p *idPool) take() (postingID, lotID int64) {
	postingID, lotID = p.postings[p.next], p.lots[p.next]
	p.next++
	return postingID, lotID
}

// queue queues on b the reservation of n more posting and lot ids.
func (p *idPool) queue(b *pgx.Batch, n int) {
	b.Queue(`SELECT nextval('postings_id_seq'), nextval('lots_id_seq')
		FROM generate_series(1, $1)`, n).Query(func(rows pgx.Rows) error {
		var pid, lid int64
		_, err := pgx.ForEachRow(rows, []any{&pid, &lid}, func() error {
			p.postings, p.lots = append(p.postings, pid), append(p.lots, lid)
			return nil
		})
		if err != nil {
			return fmt.Errorf("reserve posting ids: %w", err)
		}
		slices.Sort(p.postings)
		slices.Sort(p.lots)
		return nil
	})
}

// writePlans writes what plans worked out: postings, lots, accrual amounts,
// the members' figures and the commands' results, and queues the events.
func (t *txn) writePlans(ctx context.Context, plans []runPlan, ids *idPool,
	out []Applied) error {
	if len(plans) == 0 {
		return nil
	}
	posts := 0
	for i := range plans {
		if plans[i].post {
			posts++
		}
	}
	if ids.left() < posts {
		// The run's reserve is spent or was dropped: reserve what these
		// plans need.
		b := &pgx.Batch{}
		*ids = idPool{}
		ids.queue(b, posts)
		if err := t.tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
	}

	var w runWrites
	w.grow(posts, len(plans))
	t.events = slices.Grow(t.events, posts)
	for i := range plans {
		p := &plans[i]
		var pid, lid int64
		if p.post {
			pid, lid = ids.take()
			w.addPosting(t, p, pid, lid)
		}
		a, body, err := p.result(pid, lid)
		if err != nil {
			return err
		}
		out[p.at] = a
		c := p.cmd
		rs := &w.results
		rs.source, rs.txn = append(rs.source, c.Source), append(rs.txn, c.TxnID)
		rs.id, rs.kind = append(rs.id, c.ID), append(rs.kind, c.Kind)
		rs.hash, rs.body = append(rs.hash, c.Hash), append(rs.body, string(body))
	}
	w.addMembers(plans)
	w.addTiers(plans)
	w.addCounters(plans)
	byCopy := len(plans) >= t.copyRuns
	b := w.batch(t, byCopy)
	if !byCopy {
		if err := t.queueEvents(b); err != nil {
			return err
		}
	}
	if b.Len() > 0 {
		if err := t.tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("write run: %w", pgError(err))
		}
	}
	if byCopy {
		if err := w.copy(ctx, t); err != nil {
			return err
		}
	}
	t.setBased += len(plans)
	return nil
}

// defaultCopyRuns is the length from which a run writes its postings, lots,
// commands and events by COPY rather than by INSERTs from arrays in its
// batch. COPY costs PostgreSQL about a tenth less per row and the process
// far less (no array parameters to encode and copy into growing buffers),
// but takes two round trips per table: worth it for the hundreds of
// commands of a bus or REST batch, not for the dozen of gathered single
// requests.
const defaultCopyRuns = 64

// copy writes the run's postings, lots and commands, and the transaction's
// queued events, each table with one COPY.
func (w *runWrites) copy(ctx context.Context, t *txn) error {
	conn := t.tx.Conn()
	uuids := map[string]pgtype.UUID{} // program and member ids, parsed once
	uuidOf := func(s string) pgtype.UUID {
		u, ok := uuids[s]
		if !ok {
			u = pgUUID(s)
			uuids[s] = u
		}
		return u
	}
	ps := &w.postings
	if len(ps.id) > 0 {
		cp := newBinCopy("postings", []string{"id", "program_id", "member_id", "kind", "points",
			"pending_delta", "source", "txn_id", "command_id", "reason", "rule_version", "actor",
			"partner", "channel", "occurred_at", "recorded_at"}, len(ps.id)*240)
		for i := range ps.id {
			cp.row()
			cp.int8(ps.id[i])
			cp.uuid(uuidOf(ps.program[i]))
			cp.uuid(uuidOf(ps.member[i]))
			cp.text(ps.kind[i])
			cp.int8(ps.points[i])
			cp.int8(ps.pendingDelta[i])
			cp.text(ps.source[i])
			cp.text(ps.txn[i])
			cp.uuid(pgUUID(ps.command[i]))
			cp.text(ps.reason[i])
			cp.text(ps.ruleVersion[i])
			cp.text(ps.actor[i])
			cp.text(ps.partner[i])
			cp.text(ps.channel[i])
			cp.timestamptz(ps.occurred[i])
			cp.timestamptz(t.now)
		}
		if err := cp.send(ctx, conn); err != nil {
			return err
		}
		ls := &w.lots
		cp = newBinCopy("lots", []string{"id", "member_id", "posting_id", "earned_at",
			"spendable_from", "expires_at", "pending", "original", "remaining"}, len(ls.id)*110)
		for i := range ls.id {
			cp.row()
			cp.int8(ls.id[i])
			cp.uuid(uuidOf(ls.member[i]))
			cp.int8(ls.posting[i])
			cp.timestamptz(ls.earned[i])
			cp.timestamptz(ls.spendable[i])
			cp.timestamptzOrNull(ls.expires[i])
			cp.bool(ls.pending[i])
			cp.int8(ls.original[i])
			cp.int8(ls.remaining[i])
		}
		if err := cp.send(ctx, conn); err != nil {
			return err
		}
	}

	// The commands in key order, byte by byte as the batch's INSERT sorts
	// them, so that racing transactions queue the same way either way. A key
	// another transaction recorded first makes the COPY fail on the primary
	// key once that transaction commits: the transaction is refused, to be
	// tried again.
	rs := &w.results
	order := make([]int, len(rs.txn))
	size := 0
	for i := range order {
		order[i] = i
		size += len(rs.body[i]) + 140
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(strings.Compare(rs.source[a], rs.source[b]),
			strings.Compare(rs.txn[a], rs.txn[b]))
	})
	cp := newBinCopy("commands", []string{"source", "txn_id", "command_id", "kind", "hash",
		"status", "result"}, size)
	for _, i := range order {
		cp.row()
		cp.text(rs.source[i])
		cp.text(rs.txn[i])
		cp.uuid(pgUUID(rs.id[i]))
		cp.text(rs.kind[i])
		cp.text(rs.hash[i])
		cp.text(bus.StatusOK)
		cp.jsonbText(rs.body[i])
	}
	if err := cp.send(ctx, conn); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "commands_pkey" {
			return fmt.Errorf("%w: %s", ErrCommandRaced, pe.Detail)
		}
		return err
	}
	return t.flushEvents(ctx)
}

// result is the command's stored result, as the per-command path makes it.
func (p *runPlan) result(postingID, lotID int64) (Applied, []byte, error) {
	o := core.Outcome{Member: p.m.ref, Points: core.Points(p.points), Balance: p.balance}
	if p.post {
		o.PostingIDs = []int64{postingID}
		o.Lots = []core.LotMove{{LotID: lotID, Points: core.Points(p.n)}}
	}
	c := p.cmd
	res := bus.Result{CommandID: c.ID, Source: c.Source, TxnID: c.TxnID, Kind: c.Kind,
		Status: bus.StatusOK}
	// Written by hand, as encoding/json would (bulk_json.go): the outcome,
	// then the result around it. 224 bytes hold an accrual's outcome with
	// its member's reference: one allocation instead of four growing ones.
	res.Data = appendOutcome(make([]byte, 0, 224+len(o.Member)), &o)
	body := appendResult(make([]byte, 0, 160+len(res.Data)), &res)
	return Applied{Result: res, Encoded: body}, body, nil
}

// grow makes room for posts postings (with their lots and accrual amounts)
// and n results, so that a long run's columns are allocated once instead
// of doubling their way up.
func (w *runWrites) grow(posts, n int) {
	ps, ls := &w.postings, &w.lots
	for _, c := range []*[]int64{&ps.id, &ps.points, &ps.pendingDelta, &ls.id, &ls.posting,
		&ls.original, &ls.remaining, &w.amounts.posting} {
		*c = slices.Grow(*c, posts)
	}
	for _, c := range []*[]string{&ps.program, &ps.member, &ps.kind, &ps.source, &ps.txn,
		&ps.command, &ps.reason, &ps.ruleVersion, &ps.actor, &ps.partner, &ps.channel,
		&ls.member, &w.amounts.amount} {
		*c = slices.Grow(*c, posts)
	}
	ps.occurred = slices.Grow(ps.occurred, posts)
	ls.earned = slices.Grow(ls.earned, posts)
	ls.spendable = slices.Grow(ls.spendable, posts)
	ls.expires = slices.Grow(ls.expires, posts)
	ls.pending = slices.Grow(ls.pending, posts)
	rs := &w.results
	for _, c := range []*[]string{&rs.source, &rs.txn, &rs.id, &rs.kind, &rs.hash, &rs.body} {
		*c = slices.Grow(*c, n)
	}
}

// runWrites holds the rows of a run's writes, column by column.
type runWrites struct {
	postings struct {
		id, points, pendingDelta                            []int64
		program, member, kind, source, txn, command, reason []string
		ruleVersion, actor, partner, channel                []string
		occurred                                            []time.Time
	}
	lots struct {
		id, posting, original, remaining []int64
		member                           []string
		earned, spendable                []time.Time
		expires                          []*time.Time
		pending                          []bool
	}
	amounts struct {
		posting []int64
		amount  []string
	}
	members struct {
		id, tier                   []string
		available, pending         []int64 // changes
		wantAvailable, wantPending []int64 // figures after them
		wantHeld                   []int64
	}
	results struct {
		source, txn, id, kind, hash, body []string
	}
	tiers struct {
		member, from, to, reason []string
		qualification            []int64
		at                       []time.Time
		spend                    []*string
	}
	counters struct {
		program, code, scope, win []string
		points                    []int64
	}
}

func (w *runWrites) addPosting(t *txn, p *runPlan, postingID, lotID int64) {
	c, m := p.cmd, p.m
	ps := &w.postings
	points, pendingDelta := p.n, int64(0)
	if p.pending {
		points, pendingDelta = 0, p.n
	}
	ps.id = append(ps.id, postingID)
	ps.points = append(ps.points, points)
	ps.pendingDelta = append(ps.pendingDelta, pendingDelta)
	ps.program = append(ps.program, m.programID)
	ps.member = append(ps.member, m.id)
	ps.kind = append(ps.kind, p.kind)
	ps.source = append(ps.source, c.Source)
	ps.txn = append(ps.txn, c.TxnID)
	ps.command = append(ps.command, c.ID)
	ps.reason = append(ps.reason, p.reason)
	ps.ruleVersion = append(ps.ruleVersion, p.ruleVersion)
	ps.actor = append(ps.actor, c.Actor)
	ps.partner = append(ps.partner, p.partner)
	ps.channel = append(ps.channel, c.Channel)
	ps.occurred = append(ps.occurred, p.earned)

	ls := &w.lots
	ls.id = append(ls.id, lotID)
	ls.posting = append(ls.posting, postingID)
	ls.original = append(ls.original, p.n)
	ls.remaining = append(ls.remaining, p.remaining)
	ls.member = append(ls.member, m.id)
	ls.earned = append(ls.earned, p.earned)
	ls.spendable = append(ls.spendable, p.spendable)
	ls.expires = append(ls.expires, p.expires)
	ls.pending = append(ls.pending, p.pending)

	if p.amount != nil {
		w.amounts.posting = append(w.amounts.posting, postingID)
		w.amounts.amount = append(w.amounts.amount, p.amount.FloatString(6))
	}

	// The ledger event, queued in command order like the per-command path,
	// with the member's tier as the command left it.
	t.cmd = c
	at := *m
	at.tier = p.tier
	t.event(&at, postingID, posting{kind: p.kind, points: points, pendingDelta: pendingDelta,
		ruleVersion: p.ruleVersion, partner: p.partner, occurredAt: p.earned})
	t.cmd = nil
}

// addMembers sums the run's changes per member, in id order.
func (w *runWrites) addMembers(plans []runPlan) {
	type change struct {
		m                  *member
		available, pending int64
	}
	byID := map[string]*change{}
	for i := range plans {
		p := &plans[i]
		if !p.post {
			continue
		}
		c := byID[p.m.id]
		if c == nil {
			c = &change{m: p.m}
			byID[p.m.id] = c
		}
		if p.pending {
			c.pending += p.n
		} else {
			c.available += p.n
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ms := &w.members
	for _, id := range ids {
		c := byID[id]
		ms.id, ms.tier = append(ms.id, id), append(ms.tier, c.m.tier)
		ms.available = append(ms.available, c.available)
		ms.pending = append(ms.pending, c.pending)
		ms.wantAvailable = append(ms.wantAvailable, c.m.available)
		ms.wantPending = append(ms.wantPending, c.m.pending)
		ms.wantHeld = append(ms.wantHeld, c.m.held)
	}
}

// addTiers lists the tier changes of the run's accruals, in command order.
func (w *runWrites) addTiers(plans []runPlan) {
	ts := &w.tiers
	for i := range plans {
		p := &plans[i]
		if p.change == nil {
			continue
		}
		ts.member, ts.from = append(ts.member, p.m.id), append(ts.from, p.change.from)
		ts.to, ts.reason = append(ts.to, p.change.to), append(ts.reason, "accrual "+p.cmd.TxnID)
		ts.qualification = append(ts.qualification, p.change.qualification)
		ts.at, ts.spend = append(ts.at, p.change.at), append(ts.spend, p.change.spend)
	}
}

// addCounters sums what the run's accruals add to each rule counter, in
// key order.
func (w *runWrites) addCounters(plans []runPlan) {
	sums := map[counterKey]int64{}
	for i := range plans {
		p := &plans[i]
		for _, a := range p.counts {
			sums[counterKey{p.m.programID, a.code, a.scope, a.win}] += a.points
		}
	}
	keys := slices.SortedFunc(maps.Keys(sums), func(a, b counterKey) int {
		return cmp.Or(strings.Compare(a.program, b.program), strings.Compare(a.code, b.code),
			strings.Compare(a.scope, b.scope), strings.Compare(a.win, b.win))
	})
	cs := &w.counters
	for _, k := range keys {
		cs.program, cs.code = append(cs.program, k.program), append(cs.code, k.code)
		cs.scope, cs.win = append(cs.scope, k.scope), append(cs.win, k.win)
		cs.points = append(cs.points, sums[k])
	}
}

// batch queues the run's writes, to travel in one round trip.
func (w *runWrites) batch(t *txn, byCopy bool) *pgx.Batch {
	b := &pgx.Batch{}
	ps := &w.postings
	if len(ps.id) > 0 && !byCopy {
		b.Queue(`INSERT INTO postings (id, program_id, member_id, kind, points, pending_delta,
				source, txn_id, command_id, reason, rule_version, actor, partner, channel,
				occurred_at, recorded_at)
			SELECT id, program_id, member_id, kind, points, pending_delta, source, txn_id,
				command_id, reason, rule_version, actor, partner, channel, occurred_at, $16
			FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[],
				$6::bigint[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::text[],
				$12::text[], $13::text[], $14::text[], $15::timestamptz[])
				AS v(id, program_id, member_id, kind, points, pending_delta, source, txn_id,
					command_id, reason, rule_version, actor, partner, channel, occurred_at)`,
			ps.id, uuidArg(ps.program), uuidArg(ps.member), ps.kind, ps.points,
			ps.pendingDelta, ps.source, ps.txn, uuidArg(ps.command), ps.reason, ps.ruleVersion,
			ps.actor, ps.partner, ps.channel, ps.occurred, t.now)
		ls := &w.lots
		b.Queue(`INSERT INTO lots (id, member_id, posting_id, earned_at, spendable_from,
				expires_at, pending, original, remaining)
			SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bigint[], $4::timestamptz[],
				$5::timestamptz[], $6::timestamptz[], $7::boolean[], $8::bigint[], $9::bigint[])`,
			ls.id, uuidArg(ls.member), ls.posting, ls.earned, ls.spendable, ls.expires, ls.pending,
			ls.original, ls.remaining)
	}
	if len(w.amounts.posting) > 0 {
		b.Queue(`INSERT INTO accrual_amounts (posting_id, amount)
			SELECT p, a::numeric FROM unnest($1::bigint[], $2::text[]) AS v(p, a)`,
			w.amounts.posting, w.amounts.amount)
	}
	if cs := &w.counters; len(cs.code) > 0 {
		b.Queue(`INSERT INTO rule_counters (program_id, rule_code, scope, win, points)
			SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[])
			ON CONFLICT (program_id, rule_code, scope, win)
			DO UPDATE SET points = rule_counters.points + EXCLUDED.points`,
			uuidArg(cs.program), cs.code, cs.scope, cs.win, cs.points)
	}
	ms := &w.members
	if len(ms.id) > 0 {
		// The figures the run computed must be what the rows now hold: a
		// difference means someone changed a locked row, and the whole
		// transaction is refused rather than store wrong results.
		b.Queue(`UPDATE members m SET available = m.available + v.da,
				pending = m.pending + v.dp, tier = v.tier, updated_at = $4
			FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $5::text[]) AS v(id, da, dp, tier)
			WHERE m.id = v.id RETURNING m.id, m.available, m.pending, m.held`,
			uuidArg(ms.id), ms.available, ms.pending, t.now, ms.tier).Query(
			func(rows pgx.Rows) error { return w.checkMembers(rows) })
	}
	if ts := &w.tiers; len(ts.member) > 0 {
		b.Queue(`INSERT INTO member_tiers (member_id, from_tier, to_tier, qualification,
				changed_at, reason, spend)
			SELECT m, f, t, q, a, r, s::numeric
			FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[],
				$6::text[], $7::text[]) WITH ORDINALITY AS v(m, f, t, q, a, r, s, n)
			ORDER BY n`, uuidArg(ts.member), ts.from, ts.to, ts.qualification, ts.at, ts.reason,
			ts.spend)
	}
	if byCopy {
		return b
	}
	// The commands, in key order (byte by byte, as the COPY of a long run
	// sorts them) so that racing transactions queue the same way. A row
	// already there was recorded by a transaction that committed after this
	// one looked (readAndLock): the INSERT comes short and the transaction
	// is refused, to be tried again.
	rs := &w.results
	b.Queue(`INSERT INTO commands (source, txn_id, command_id, kind, hash, status, result)
		SELECT s, x, c::uuid, k, h, $7, r::jsonb
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
			AS v(s, x, c, k, h, r)
		ORDER BY s COLLATE "C", x COLLATE "C"
		ON CONFLICT DO NOTHING`,
		rs.source, rs.txn, rs.id, rs.kind, rs.hash, rs.body, bus.StatusOK).Exec(
		func(tag pgconn.CommandTag) error {
			if int(tag.RowsAffected()) != len(rs.txn) {
				return fmt.Errorf("%w: %d of %d commands recorded", ErrCommandRaced,
					tag.RowsAffected(), len(rs.txn))
			}
			return nil
		})
	return b
}

// checkMembers compares the members' updated figures with the run's.
func (w *runWrites) checkMembers(rows pgx.Rows) error {
	ms := &w.members
	want := make(map[string]int, len(ms.id))
	for i, id := range ms.id {
		want[id] = i
	}
	n := 0
	var id string
	var available, pending, held int64
	_, err := pgx.ForEachRow(rows, []any{&id, &available, &pending, &held}, func() error {
		i, ok := want[id]
		if !ok {
			return fmt.Errorf("member %s updated but not in the run", id)
		}
		if available != ms.wantAvailable[i] || pending != ms.wantPending[i] ||
			held != ms.wantHeld[i] {
			return fmt.Errorf("member %s: figures %d/%d/%d after the run, computed %d/%d/%d",
				id, available, pending, held, ms.wantAvailable[i], ms.wantPending[i],
				ms.wantHeld[i])
		}
		n++
		return nil
	})
	if err != nil {
		return fmt.Errorf("update balances: %w", err)
	}
	if n != len(ms.id) {
		return fmt.Errorf("update balances: %d of %d members", n, len(ms.id))
	}
	return nil
}
