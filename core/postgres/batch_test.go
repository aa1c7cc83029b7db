package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"pgregory.net/rapid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// freshDB makes a migrated database of its own for one test and drops it
// at the end.
func freshDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin := testenv.AdminURL()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable (run `make services`): %v", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("puntos_tb_%d_%d", time.Now().Unix(), rand.IntN(1e6))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	pool, err := Open(ctx, u.String())
	if err == nil {
		err = Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	}
	t.Cleanup(func() {
		if pool != nil {
			pool.Close()
		}
		c, err := pgx.Connect(context.Background(), admin)
		if err != nil {
			t.Logf("drop %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(),
			"DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// twin sends the same commands to a ledger on the set-based path and to one
// on the per-command path, each on its own fresh database.
type twin struct {
	fast, slow *Ledger
	mu         sync.Mutex
	now        time.Time
	prog       string
	seq        int
}

func newTwin(t *testing.T) *twin {
	w := &twin{now: time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)}
	clock := func() time.Time {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.now
	}
	w.fast = New(freshDB(t), slog.New(slog.DiscardHandler))
	w.slow = New(freshDB(t), slog.New(slog.DiscardHandler))
	w.fast.Clock, w.slow.Clock = clock, clock
	w.slow.rowByRow = true
	// Runs of two commands or more write by COPY, single ones by INSERT:
	// both ways are held to the per-command path.
	w.fast.copyRuns = 2
	return w
}

func (w *twin) advance(d time.Duration) {
	w.mu.Lock()
	w.now = w.now.Add(d)
	w.mu.Unlock()
}

func (w *twin) command(kind, member string, payload any, at time.Time) bus.Command {
	body, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	w.seq++
	c := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, Source: "twin",
		TxnID: fmt.Sprintf("%s-%d", w.prog, w.seq), Program: w.prog, Member: member,
		Actor: "tester", Channel: "web", Payload: body, OccurredAt: at, ReceivedAt: at}
	c.Seal()
	return c
}

// apply sends cmds as one batch to both ledgers and fails on any
// difference between the two answers.
func (w *twin) apply(t tb, cmds []bus.Command) []bus.Result {
	t.Helper()
	ctx := context.Background()
	fa, err := w.fast.ApplyBatch(ctx, cmds)
	if err != nil {
		t.Fatalf("set-based batch: %v", err)
	}
	sa, err := w.slow.ApplyBatch(ctx, cmds)
	if err != nil {
		t.Fatalf("per-command batch: %v", err)
	}
	fn, sn := w.names(t, w.fast), w.names(t, w.slow)
	ids := w.ids(t)
	out := make([]bus.Result, len(cmds))
	for i := range cmds {
		f, s := fa[i], sa[i]
		// An answer encoded by the ledger is its result, as encoding/json
		// writes it; the per-command path leaves the encoding to the bus.
		for _, a := range []*Applied{&f, &s} {
			if len(a.Encoded) == 0 {
				continue
			}
			if want, _ := json.Marshal(a.Result); string(a.Encoded) != string(want) {
				t.Fatalf("command %d: encoded\n%s\nresult\n%s", i, a.Encoded, want)
			}
			a.Encoded = nil
		}
		fd := fn.Replace(ids.json(t, string(f.Result.Data)))
		sd := sn.Replace(identity.json(t, string(s.Result.Data)))
		f.Result.Data, s.Result.Data = nil, nil
		fj, _ := json.Marshal(f)
		sj, _ := json.Marshal(s)
		if fd != sd || string(fj) != string(sj) {
			t.Fatalf("command %d (%s %s %s) answers differ:\nset-based   %s %s\nper-command %s %s",
				i, cmds[i].Kind, cmds[i].Member, cmds[i].Payload, fj, fd, sj, sd)
		}
		out[i] = sa[i].Result
	}
	return out
}

// idMap maps the set-based database's posting and lot ids to the
// per-command one's. The set-based path reserves ids for a whole run, so a
// command that earns nothing leaves a gap; the order of the ids must be the
// same on both sides, their values need not.
type idMap struct {
	postings, lots map[int64]int64
}

var identity = idMap{}

// ids pairs the two databases' postings, and lots, in id order.
func (w *twin) ids(t tb) idMap {
	t.Helper()
	read := func(l *Ledger, table string) []int64 {
		rows, err := l.Pool().Query(context.Background(), `SELECT id FROM `+table+` ORDER BY id`)
		if err != nil {
			t.Fatalf("read ids: %v", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatalf("read ids: %v", err)
		}
		return ids
	}
	m := idMap{postings: map[int64]int64{}, lots: map[int64]int64{}}
	for table, into := range map[string]map[int64]int64{"postings": m.postings, "lots": m.lots} {
		f, s := read(w.fast, table), read(w.slow, table)
		if len(f) != len(s) {
			t.Fatalf("%d %s on the set-based path, %d on the per-command path", len(f), table,
				len(s))
		}
		for i := range f {
			into[f[i]] = s[i]
		}
	}
	return m
}

func (m idMap) posting(id int64) int64 {
	if to, ok := m.postings[id]; ok || m.postings == nil {
		if !ok {
			return id
		}
		return to
	}
	return -id // unknown: shows as a difference
}

func (m idMap) lot(id int64) int64 {
	if to, ok := m.lots[id]; ok || m.lots == nil {
		if !ok {
			return id
		}
		return to
	}
	return -id
}

// json rewrites the posting and lot ids of a JSON document (a result, an
// event) and prints it in a canonical form.
func (m idMap) json(t tb, doc string) string {
	t.Helper()
	if doc == "" {
		return ""
	}
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", doc, err)
	}
	var walk func(v any, key string) any
	walk = func(v any, key string) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e, k)
			}
		case []any:
			for i, e := range x {
				x[i] = walk(e, key)
			}
		case json.Number:
			n, err := x.Int64()
			if err != nil {
				return x
			}
			switch key {
			case "posting_id", "posting_ids", "reverses_id":
				return m.posting(n)
			case "lot_id":
				return m.lot(n)
			}
		}
		return v
	}
	out, err := json.Marshal(walk(v, ""))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// dumpQuery reads a table in a stable order; the columns listed hold
// posting ids, lot ids and JSON documents.
type dumpQuery struct {
	sql                 string
	postings, lots, doc []int
}

// dumpQueries read everything a command can change.
var dumpQueries = []dumpQuery{
	{sql: `SELECT m.id, m.customer_ref, m.status, m.available, m.pending, m.held, m.tier,
		-- set by the ledger to its clock, or by the database at enrollment
		CASE WHEN m.updated_at < '2026-09-01' THEN m.updated_at END,
		m.merged_into FROM members m ORDER BY m.customer_ref, m.id`},
	{sql: `SELECT id, program_id, member_id, kind, points, held_delta, pending_delta, source,
		txn_id, command_id, reason, rule_version, actor, partner, channel, reverses_id,
		hold_id IS NULL, occurred_at, recorded_at FROM postings ORDER BY id`,
		postings: []int{0, 15}},
	{sql: `SELECT id, member_id, posting_id, earned_at, spendable_from, expires_at, pending,
		original, remaining, held FROM lots ORDER BY id`, postings: []int{2}, lots: []int{0}},
	{sql: `SELECT posting_id, lot_id, points, held FROM posting_lots
		ORDER BY posting_id, lot_id`, postings: []int{0}, lots: []int{1}},
	{sql: `SELECT posting_id, amount::text FROM accrual_amounts ORDER BY posting_id`,
		postings: []int{0}},
	{sql: `SELECT source, txn_id, command_id, kind, hash, status, result::text FROM commands
		ORDER BY source, txn_id`, doc: []int{6}},
	{sql: `SELECT id > 0, subject, (body::jsonb - 'event_id')::text FROM outbox ORDER BY id`,
		doc: []int{2}},
	{sql: `SELECT member_id, from_tier, to_tier, qualification, changed_at, reason,
		spend::text FROM member_tiers ORDER BY id`},
	{sql: `SELECT program_id, rule_code, scope, win, points FROM rule_counters
		ORDER BY program_id, rule_code, scope, win`},
}

// names replaces the ids a database drew at random (members, programs)
// with the references they stand for.
func (w *twin) names(t tb, l *Ledger) *strings.Replacer {
	t.Helper()
	rows, err := l.Pool().Query(context.Background(), `SELECT id::text, 'member:' || customer_ref
		FROM members UNION ALL SELECT id::text, 'program:' || code FROM programs`)
	if err != nil {
		t.Fatalf("read ids: %v", err)
	}
	var pairs []string
	var id, name string
	_, err = pgx.ForEachRow(rows, []any{&id, &name}, func() error {
		pairs = append(pairs, id, name)
		return nil
	})
	if err != nil {
		t.Fatalf("read ids: %v", err)
	}
	return strings.NewReplacer(pairs...)
}

// dump describes a ledger's whole database as text, random ids replaced
// and posting and lot ids mapped by ids.
func (w *twin) dump(t tb, l *Ledger, ids idMap) []string {
	t.Helper()
	names := w.names(t, l)
	var out []string
	for _, q := range dumpQueries {
		rows, err := l.Pool().Query(context.Background(), q.sql)
		if err != nil {
			t.Fatalf("dump: %v", err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatalf("dump: %v", err)
			}
			for i, v := range vals {
				if b, ok := v.([16]byte); ok {
					vals[i] = uuid.UUID(b).String()
				}
			}
			for _, i := range q.postings {
				if id, ok := vals[i].(int64); ok {
					vals[i] = ids.posting(id)
				}
			}
			for _, i := range q.lots {
				if id, ok := vals[i].(int64); ok {
					vals[i] = ids.lot(id)
				}
			}
			for _, i := range q.doc {
				vals[i] = ids.json(t, vals[i].(string))
			}
			out = append(out, names.Replace(fmt.Sprintf("%v", vals)))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatalf("dump: %v", err)
		}
	}
	return out
}

// compare fails on the first difference between the two databases.
func (w *twin) compare(t tb) {
	t.Helper()
	f, s := w.dump(t, w.fast, w.ids(t)), w.dump(t, w.slow, identity)
	for i := range max(len(f), len(s)) {
		var a, b string
		if i < len(f) {
			a = f[i]
		}
		if i < len(s) {
			b = s[i]
		}
		if a != b {
			t.Fatalf("databases differ at row %d:\nset-based   %s\nper-command %s", i, a, b)
		}
	}
	for _, l := range []*Ledger{w.fast, w.slow} {
		v, err := l.Check(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(v) > 0 {
			t.Fatalf("ledger invariants broken: %+v", v)
		}
	}
}

// TestSetBasedMatchesRowByRow sends random batches, mostly accruals and
// credits with refusals, replays, conflicts, enrollments, status changes,
// debits, merges, rules and tiers mixed in, to a ledger on the set-based
// path and to one on the per-command path, and requires the same answers
// and the same rows in both databases.
func TestSetBasedMatchesRowByRow(t *testing.T) {
	w := newTwin(t)
	rapid.Check(t, func(rt *rapid.T) {
		w.prog = "p" + uuid.NewString()[:8]
		w.seq = 0
		w.now = time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
		prog := core.Program{Name: "Twin",
			NegativeBalance: rapid.SampledFrom([]string{core.NegativeForbid,
				core.NegativeAllow}).Draw(rt, "negative_balance"),
			PendingDays:    rapid.SampledFrom([]int{0, 0, 2}).Draw(rt, "pending_days"),
			HoldTTLSeconds: 3600,
			PointsPerUnit:  rapid.SampledFrom([]string{"1", "0.1", "2.5"}).Draw(rt, "rate"),
		}
		if rapid.Bool().Draw(rt, "expiry") {
			prog.ExpiryUnit, prog.ExpiryLength = core.ExpiryDays, rapid.IntRange(1, 30).Draw(rt,
				"expiry_days")
		}
		g := &twinGen{w: w, members: []string{"m0", "m1", "m2", "m3"}}
		setup := []bus.Command{w.command(core.KindProgramUpsert, "", prog, w.now)}
		for _, m := range g.members {
			setup = append(setup, w.command(core.KindEnroll, m, core.Enroll{}, w.now))
		}
		g.record(setup, w.apply(rt, setup))

		for range rapid.IntRange(1, 5).Draw(rt, "batches") {
			n := rapid.IntRange(1, 20).Draw(rt, "size")
			cmds := make([]bus.Command, 0, n)
			for range n {
				cmds = append(cmds, g.draw(rt, cmds))
			}
			g.record(cmds, w.apply(rt, cmds))
			if rapid.IntRange(0, 3).Draw(rt, "advance") == 0 {
				w.advance(time.Duration(rapid.IntRange(1, 72).Draw(rt, "hours")) * time.Hour)
			}
		}
		w.compare(rt)
	})
	if w.fast.setBased.Load() == 0 || w.slow.setBased.Load() != 0 {
		t.Fatalf("set-based path applied %d and %d commands, want some and none",
			w.fast.setBased.Load(), w.slow.setBased.Load())
	}
	t.Logf("set-based path applied %d commands", w.fast.setBased.Load())
}

// twinGen draws the commands of TestSetBasedMatchesRowByRow.
type twinGen struct {
	w       *twin
	members []string
	sent    []bus.Command
	fresh   int
}

func (g *twinGen) record(cmds []bus.Command, _ []bus.Result) {
	g.sent = append(g.sent, cmds...)
}

func (g *twinGen) draw(t *rapid.T, batch []bus.Command) bus.Command {
	w := g.w
	m := rapid.SampledFrom(g.members).Draw(t, "member")
	at := w.now
	switch rapid.IntRange(0, 9).Draw(t, "when") {
	case 0:
		at = at.Add(-time.Duration(rapid.IntRange(1, 40*24).Draw(t, "hours_ago")) * time.Hour)
	case 1:
		at = at.Add(time.Hour) // in the future: refused
	}
	accrue := func(in core.Accrue) bus.Command { return w.command(core.KindAccrue, m, in, at) }
	amount := fmt.Sprintf("%d.%02d", rapid.IntRange(0, 400).Draw(t, "amount"),
		rapid.IntRange(0, 99).Draw(t, "cents"))
	switch op := rapid.IntRange(0, 43).Draw(t, "op"); {
	case op < 16:
		return accrue(core.Accrue{EventType: "bill_paid", Amount: amount,
			Partner: rapid.SampledFrom([]string{"", "shop"}).Draw(t, "partner")})
	case op < 22:
		in := core.Credit{Points: core.Points(rapid.IntRange(1, 500).Draw(t, "points")),
			Reason: "bonus"}
		switch rapid.IntRange(0, 4).Draw(t, "credit_expiry") {
		case 0:
			e := w.now.Add(time.Duration(rapid.IntRange(-48, 48*30).Draw(t, "exp_h")) * time.Hour)
			in.ExpiresAt = &e
		case 1:
			in.ExpiresOn = w.now.AddDate(0, 0, rapid.IntRange(-2, 40).Draw(t, "exp_d")).
				Format("2006-01-02")
		}
		return w.command(core.KindCredit, m, in, at)
	case op == 22:
		return accrue(core.Accrue{EventType: "bill_paid", Amount: "-" + amount})
	case op == 23:
		return accrue(core.Accrue{EventType: "", Amount: amount})
	case op == 24:
		return accrue(core.Accrue{EventType: "bill_paid", Amount: amount, Currency: "EUR"})
	case op == 25:
		return w.command(core.KindAccrue, "nobody", core.Accrue{EventType: "bill_paid",
			Amount: amount}, at)
	case op == 26:
		return w.command(core.KindCredit, m, core.Credit{Points: 0, Reason: "x"}, at)
	case op == 27 || op == 39:
		return w.command(core.KindRedeem, m, core.Redeem{
			Points: core.Points(rapid.IntRange(1, 1500).Draw(t, "redeem"))}, w.now)
	case op == 28:
		return w.command(core.KindAdjust, m, core.Adjust{
			Points: -core.Points(rapid.IntRange(1, 400).Draw(t, "adjust")), Reason: "fix"}, w.now)
	case op == 29:
		kind := rapid.SampledFrom([]string{core.KindSuspend, core.KindReactivate}).Draw(t,
			"status")
		return w.command(kind, m, core.StatusChange{}, w.now)
	case op == 30:
		g.fresh++
		ref := fmt.Sprintf("n%d", g.fresh)
		g.members = append(g.members, ref)
		return w.command(core.KindEnroll, ref, core.Enroll{}, w.now)
	case op == 31:
		into := rapid.SampledFrom(g.members).Draw(t, "into")
		return w.command(core.KindMerge, m, core.Merge{Into: into}, w.now)
	case op == 32 || op == 33:
		// A replay of a command already sent, maybe in this very batch.
		all := append(append([]bus.Command{}, g.sent...), batch...)
		return rapid.SampledFrom(all).Draw(t, "replay")
	case op == 34:
		// The same transaction id for another request: a conflict.
		all := append(append([]bus.Command{}, g.sent...), batch...)
		c := rapid.SampledFrom(all).Draw(t, "conflict")
		c.Payload = json.RawMessage(`{"event_type":"other","amount":"1"}`)
		c.Kind = core.KindAccrue
		c.Seal()
		return c
	case op == 40 || op == 41:
		// Spend everything the member had at the last batch, so that a
		// refund then leaves a debt.
		b, err := w.slow.Balance(context.Background(), w.prog, m)
		if err != nil || b.Balance.Available <= 0 {
			break
		}
		return w.command(core.KindRedeem, m, core.Redeem{Points: b.Balance.Available}, w.now)
	case op == 37 || op == 38 || op == 42 || op == 43:
		// A refund of an earlier accrual or credit; under "allow" a refund of
		// points already spent leaves the member owing points, which the
		// next credits repay.
		var earned []bus.Command
		for _, c := range append(append([]bus.Command{}, g.sent...), batch...) {
			if c.Kind == core.KindAccrue || c.Kind == core.KindCredit {
				earned = append(earned, c)
			}
		}
		if len(earned) == 0 {
			break
		}
		c := rapid.SampledFrom(earned).Draw(t, "refund")
		return w.command(core.KindReverse, c.Member, core.Reverse{OriginalTxnID: c.TxnID,
			Reason: "refund"}, w.now)
	case op == 35:
		r := perUnit("r", rapid.SampledFrom([]string{"1", "3"}).Draw(t, "rule_rate"),
			core.RoundDown)
		if rapid.Bool().Draw(t, "capped") {
			r.Caps = core.Caps{PerDay: 50}
		}
		return w.command(core.KindRuleUpsert, "", RuleUpsert{Rule: r}, w.now)
	case op == 36:
		return w.command(core.KindTiersSet, "", core.Tiers{WindowDays: 30,
			Levels: []core.TierLevel{{Code: "blue", MinPoints: 0, Multiplier: "1"},
				{Code: "gold", MinPoints: 500, Multiplier: "2"}}}, w.now)
	}
	return accrue(core.Accrue{EventType: "bill_paid", Amount: amount})
}

// TestSetBasedRepaysDebt: a member who owes points gets credits and
// accruals in one batch, with a per-command redemption between them; the
// first points repay the debt, on both paths alike. The set-based path
// leaves a member to the per-command one while it owes points (newLot ties
// what repays a debt to the lot the debt came from), and takes it back
// once the debt is repaid.
func TestSetBasedRepaysDebt(t *testing.T) {
	w := newTwin(t)
	w.prog = "debt"
	at := w.now
	prog := core.Program{Name: "Debt", NegativeBalance: core.NegativeAllow,
		HoldTTLSeconds: 3600, PointsPerUnit: "1"}
	credit := w.command(core.KindCredit, "m1", core.Credit{Points: 100, Reason: "a"}, at)
	w.apply(t, []bus.Command{w.command(core.KindProgramUpsert, "", prog, at),
		w.command(core.KindEnroll, "m1", core.Enroll{}, at),
		w.command(core.KindEnroll, "m2", core.Enroll{}, at), credit})
	w.apply(t, []bus.Command{
		w.command(core.KindRedeem, "m1", core.Redeem{Points: 100}, at),
		w.command(core.KindReverse, "m1", core.Reverse{OriginalTxnID: credit.TxnID,
			Reason: "fraud"}, at)})

	before := w.fast.setBased.Load()
	res := w.apply(t, []bus.Command{
		w.command(core.KindCredit, "m1", core.Credit{Points: 30, Reason: "b"}, at),
		w.command(core.KindAccrue, "m2", core.Accrue{EventType: "bill_paid", Amount: "7"}, at),
		w.command(core.KindAccrue, "m1", core.Accrue{EventType: "bill_paid", Amount: "50"}, at),
		w.command(core.KindRedeem, "m1", core.Redeem{Points: 1}, at),
		w.command(core.KindCredit, "m1", core.Credit{Points: 40, Reason: "c"}, at),
		w.command(core.KindRedeem, "m1", core.Redeem{Points: 5}, at),
		w.command(core.KindAccrue, "m1", core.Accrue{EventType: "bill_paid", Amount: "9.99"},
			at),
	})
	// m1's available after each applied command of m1 (the redemption of 1
	// point is refused: m1 still owes 20).
	want := []int64{-70, -20, 20, 15, 24}
	var got []int64
	for i, r := range res {
		if i == 1 {
			continue
		}
		var o core.Outcome
		if r.Status == bus.StatusOK {
			if err := json.Unmarshal(r.Data, &o); err != nil {
				t.Fatal(err)
			}
			got = append(got, int64(o.Balance.Available))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("m1's available after each applied command: %v, want %v", got, want)
	}
	// m2's accrual and m1's last one, made after the debt was repaid.
	if n := w.fast.setBased.Load() - before; n != 2 {
		t.Fatalf("set-based path applied %d commands of the batch, want 2", n)
	}
	w.compare(t)
}
