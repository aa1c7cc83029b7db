package postgres

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"pgregory.net/rapid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Attacks on the COPY writes of long set-based runs (writePlans with
// copyRuns or more plans). These tests use the default threshold (64): the
// ledgers under test leave copyRuns at 0.

// A twin whose set-based side writes runs by COPY from the default
// threshold only, so that long batches split by fallbacks write some pieces
// by COPY and others by INSERT.
func newDefaultTwin(t *testing.T) *twin {
	w := newTwin(t)
	w.fast.copyRuns = 0
	return w
}

// Two programs (one pending with expiry, capped rules and tiers; one plain
// with no expiry and debts allowed), twenty members each, and batches of a
// few hundred accruals and credits across both, with fallbacks (unknown
// member, invalid payloads, replays and conflicts of earlier keys, a
// redemption, points expired on arrival) placed so that the runs are
// written in pieces above and below the threshold. Every answer and every
// row must match the per-command path; balances must add up.
func TestCopyRunsLongMixedBatchesMatchRowByRow(t *testing.T) {
	w := newDefaultTwin(t)
	at := w.now
	const progA, progB = "copya", "copyb"
	members := make([]string, 20)
	for i := range members {
		members[i] = fmt.Sprintf("m%02d", i)
	}

	w.prog = progA
	setup := []bus.Command{w.command(core.KindProgramUpsert, "", core.Program{Name: "A",
		PendingDays: 2, ExpiryUnit: core.ExpiryDays, ExpiryLength: 30, HoldTTLSeconds: 3600,
		PointsPerUnit: "1"}, at)}
	for _, m := range members {
		setup = append(setup, w.command(core.KindEnroll, m, core.Enroll{}, at))
	}
	capped := perUnit("r", "3", core.RoundDown)
	capped.Caps = core.Caps{PerDay: 50}
	setup = append(setup, w.command(core.KindRuleUpsert, "", RuleUpsert{Rule: capped}, at),
		w.command(core.KindTiersSet, "", core.Tiers{WindowDays: 30,
			Levels: []core.TierLevel{{Code: "blue", MinPoints: 0, Multiplier: "1"},
				{Code: "gold", MinPoints: 120, Multiplier: "2"}}}, at))
	w.prog = progB
	setup = append(setup, w.command(core.KindProgramUpsert, "", core.Program{Name: "B",
		NegativeBalance: core.NegativeAllow, HoldTTLSeconds: 3600, PointsPerUnit: "2.5"}, at))
	for _, m := range members {
		setup = append(setup, w.command(core.KindEnroll, m, core.Enroll{}, at))
	}
	w.apply(t, setup)

	// A debt in B for m00 and m01, repaid by the long run's first credits.
	w.prog = progB
	seed := []bus.Command{}
	for _, m := range members[:2] {
		c := w.command(core.KindCredit, m, core.Credit{Points: 100, Reason: "seed"}, at)
		seed = append(seed, c,
			w.command(core.KindRedeem, m, core.Redeem{Points: 100}, at))
		seed = append(seed, w.command(core.KindReverse, m, core.Reverse{OriginalTxnID: c.TxnID,
			Reason: "fraud"}, at))
	}
	w.apply(t, seed)

	var sent []bus.Command
	build := func(n, salt int) []bus.Command {
		var cmds []bus.Command
		for i := range n {
			m := members[(i*7+salt)%len(members)]
			when := at.Add(-time.Duration((i*13+salt)%(5*24)) * time.Hour)
			switch i % 6 {
			case 0, 1:
				w.prog = progA
				cmds = append(cmds, w.command(core.KindAccrue, m, core.Accrue{
					EventType: "bill_paid", Amount: fmt.Sprintf("%d.%02d", i%40, i%100),
					Partner: []string{"", "shop"}[i%2]}, when))
			case 2:
				w.prog = progA
				exp := at.Add(time.Duration(1+i%50) * 24 * time.Hour)
				cmds = append(cmds, w.command(core.KindCredit, m, core.Credit{
					Points: core.Points(1 + i%30), Reason: "bonus", ExpiresAt: &exp}, when))
			case 3:
				w.prog = progB
				cmds = append(cmds, w.command(core.KindCredit, m, core.Credit{
					Points: core.Points(5 + i%17), Reason: "gift"}, when))
			case 4:
				w.prog = progB
				cmds = append(cmds, w.command(core.KindAccrue, m, core.Accrue{
					EventType: "bill_paid", Amount: fmt.Sprintf("%d", i%9)}, when))
			case 5:
				// Zero points: a plan with no posting.
				w.prog = progB
				cmds = append(cmds, w.command(core.KindAccrue, m, core.Accrue{
					EventType: "bill_paid", Amount: "0"}, when))
			}
		}
		return cmds
	}

	// Batch 1: 70 plain, then fallbacks, then 80 plain, a redemption, 30 plain.
	b1 := build(70, 0)
	w.prog = progA
	b1 = append(b1,
		w.command(core.KindAccrue, "nobody", core.Accrue{EventType: "bill_paid", Amount: "3"}, at),
		w.command(core.KindAccrue, members[3], core.Accrue{EventType: "bill_paid",
			Amount: "-3"}, at),
		// Expired on arrival: 40 days old, expiry 30 days.
		w.command(core.KindCredit, members[4], core.Credit{Points: 9, Reason: "old"},
			at.Add(-40*24*time.Hour)))
	b1 = append(b1, build(80, 3)...)
	w.prog = progB
	b1 = append(b1, w.command(core.KindRedeem, members[5], core.Redeem{Points: 10}, at))
	b1 = append(b1, build(30, 5)...)
	res := w.apply(t, b1)
	sent = append(sent, b1...)
	if r := res[70]; r.Status != bus.StatusRejected {
		t.Fatalf("unknown member: %s", r.Status)
	}
	w.compare(t)

	// Batch 2: the first 100 commands of batch 1 again (replays inside what
	// would be a run), a conflict, then 100 fresh commands, then every one
	// of them again in the same batch (later copies replay).
	b2 := append([]bus.Command{}, sent[:100]...)
	conflict := sent[120]
	conflict.Payload = json.RawMessage(`{"event_type":"other","amount":"1"}`)
	conflict.Kind = core.KindAccrue
	conflict.Seal()
	b2 = append(b2, conflict)
	w.advance(time.Hour)
	at = w.now
	fresh := build(100, 11)
	b2 = append(b2, fresh...)
	b2 = append(b2, fresh...)
	res = w.apply(t, b2)
	for i := range 100 {
		if sent[i].TxnID != res[i].TxnID {
			t.Fatalf("answer %d is for %s", i, res[i].TxnID)
		}
	}
	for i := 101; i < 201; i++ {
		if res[i].Replayed {
			t.Fatalf("fresh command %d answered as a replay", i)
		}
		if !res[i+100].Replayed && res[i+100].Status == bus.StatusOK {
			t.Fatalf("second copy %d not a replay", i+100)
		}
	}
	w.compare(t)

	// Time passes: pending points mature, then expire; more long runs on top.
	w.advance(3 * 24 * time.Hour)
	for _, l := range []*Ledger{w.fast, w.slow} {
		if _, _, err := l.Sweep(context.Background(), w.now, 500); err != nil {
			t.Fatal(err)
		}
	}
	at = w.now
	w.apply(t, build(130, 17))
	w.compare(t)
	w.advance(40 * 24 * time.Hour)
	for _, l := range []*Ledger{w.fast, w.slow} {
		if _, _, err := l.Sweep(context.Background(), w.now, 500); err != nil {
			t.Fatal(err)
		}
	}
	w.compare(t)

	// The member figures are the sum of their postings and lots (Check),
	// and every stored answer has its posting.
	var postings, commands int64
	if err := w.fast.Pool().QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM postings WHERE kind IN ('accrual', 'credit')),
		(SELECT count(*) FROM commands)`).Scan(&postings, &commands); err != nil {
		t.Fatal(err)
	}
	if postings < 300 {
		t.Fatalf("only %d accrual and credit postings", postings)
	}
	// The batches reached what they were meant to: tier changes, capped
	// counters, accrual amounts, pending lots, lots with and without an
	// expiry, debts repaid.
	var tiers, counters, amounts, pending, noExpiry, expiring, repaid int64
	if err := w.fast.Pool().QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM member_tiers),
		(SELECT count(*) FROM rule_counters),
		(SELECT count(*) FROM accrual_amounts),
		(SELECT count(*) FROM postings WHERE pending_delta > 0),
		(SELECT count(*) FROM lots WHERE expires_at IS NULL),
		(SELECT count(*) FROM lots WHERE expires_at IS NOT NULL),
		(SELECT count(*) FROM lots WHERE remaining < original)`).Scan(&tiers, &counters, &amounts, &pending,
		&noExpiry, &expiring, &repaid); err != nil {
		t.Fatal(err)
	}
	t.Logf("tier changes %d, counters %d, amounts %d, pending postings %d, lots without "+
		"expiry %d, with %d, partly used %d", tiers, counters, amounts, pending, noExpiry,
		expiring, repaid)
	if tiers == 0 || counters == 0 || amounts == 0 || pending == 0 || noExpiry == 0 ||
		expiring == 0 || repaid == 0 {
		t.Fatal("the batches missed a case they were meant to cover")
	}
	t.Logf("%d postings, %d commands, set-based %d", postings, commands,
		w.fast.setBased.Load())
}

// Transaction ids and sources that sort differently byte by byte and by a
// language collation, and that need escaping in JSON, in a long run: the
// stored results (jsonb by COPY), the postings and the events match the
// per-command path, and a second copy of the batch replays every one.
func TestCopyRunsOddKeysMatchRowByRow(t *testing.T) {
	w := newDefaultTwin(t)
	w.prog = "copyodd"
	at := w.now
	setup := []bus.Command{w.command(core.KindProgramUpsert, "", core.Program{Name: "Odd",
		HoldTTLSeconds: 3600, PointsPerUnit: "1"}, at)}
	for i := range 8 {
		setup = append(setup, w.command(core.KindEnroll, fmt.Sprintf("m%d", i), core.Enroll{}, at))
	}
	w.apply(t, setup)

	odd := []string{"a", "B", "é", "e", "Z", "z", "_", "ä", "\"q\"", `back\slash`, "tab\there",
		"line\u2028sep", "<html>&amp;", "日本", "😀", "a b", "A", "ß", "ss", "\u007f"}
	sources := []string{"twin", "Twin", "twín", "TWIN"}
	var cmds []bus.Command
	sum := map[string]int64{}
	for i := range 96 {
		m := fmt.Sprintf("m%d", i%8)
		// The last odd string, a control character, may not be a reason
		// (core.CheckReason); it goes in the other fields.
		c := w.command(core.KindCredit, m, core.Credit{Points: core.Points(i + 1),
			Reason: odd[i%(len(odd)-1)]}, at)
		c.TxnID = fmt.Sprintf("%s-%d", odd[(i*3)%len(odd)], i)
		c.Source = sources[i%len(sources)]
		c.Channel = odd[(i+1)%len(odd)]
		c.Actor = odd[(i+2)%len(odd)]
		c.Seal()
		cmds = append(cmds, c)
		sum[m] += int64(i + 1)
	}
	res := w.apply(t, cmds)
	for i, r := range res {
		if o := outcomeOf(t, r); int64(o.Points) != int64(i+1) || r.Replayed {
			t.Fatalf("command %d: %d points, replayed %v", i, o.Points, r.Replayed)
		}
	}
	w.compare(t)
	res = w.apply(t, cmds)
	for i, r := range res {
		if !r.Replayed {
			t.Fatalf("second copy of command %d is not a replay", i)
		}
	}
	w.compare(t)
	for m, want := range sum {
		b, err := w.fast.Balance(context.Background(), w.prog, m)
		if err != nil {
			t.Fatal(err)
		}
		if int64(b.Balance.Available) != want {
			t.Fatalf("%s: available %d, want %d", m, b.Balance.Available, want)
		}
	}
}

// longAccruals is n accruals of f's members refs, round robin, under fresh
// ids, member refs[i%len] earning i+1 points (rate 1).
func longAccruals(f *fixture, refs []string, n int) []bus.Command {
	var out []bus.Command
	for i := range n {
		out = append(out, f.command(core.KindAccrue, refs[i%len(refs)], f.txn(),
			core.Accrue{EventType: "purchase", Amount: fmt.Sprint(i + 1)}))
	}
	return out
}

// wantEarned checks each member's available points against what cmds (all
// accruals of rate 1 with whole amounts) earn, each once.
func wantEarned(t *testing.T, f *fixture, base int64, cmds ...[]bus.Command) {
	t.Helper()
	want := map[string]int64{}
	seen := map[string]bool{}
	for _, b := range cmds {
		for _, c := range b {
			if seen[c.TxnID] {
				continue
			}
			seen[c.TxnID] = true
			var in core.Accrue
			if err := json.Unmarshal(c.Payload, &in); err != nil {
				t.Fatal(err)
			}
			var n int64
			fmt.Sscan(in.Amount, &n)
			want[c.Member] += n
		}
	}
	for m, n := range want {
		f.wantBalance(m, core.Points(base+n), 0, 0)
	}
}

func refs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("r%02d", i)
	}
	return out
}

// The same long batch (written by COPY) raced from several callers, in
// different orders and overlapping with other long batches and with single
// requests of the same ids: every id posted once, every answer what was
// stored, balances the sum of what each id earned.
func TestCopyRunsRacingLongBatches(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	ms := refs(30)
	for _, m := range ms {
		f.enroll(m)
	}
	x := longAccruals(f, ms, 120)
	y := longAccruals(f, ms, 80)
	rev := append([]bus.Command{}, x...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	mixed := append(append(append([]bus.Command{}, y[:40]...), x[30:100]...), y[40:]...)
	batches := [][]bus.Command{x, rev, mixed, x, y, {x[5]}, {y[70]}, {x[119]}}
	answers := raceBatches(t, f, ms[0], 4, batches...)
	checkRace(t, f, batches, answers)
	wantEarned(t, f, 0, x, y)
	var n int64
	if err := f.l.pool.QueryRow(context.Background(), `SELECT count(*) FROM postings p
		JOIN programs g ON g.id = p.program_id WHERE g.code = $1`, f.prog).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 200 {
		t.Fatalf("%d postings, want 200", n)
	}
}

// recordKey records (test, txn) in an open transaction, as another request
// would, and returns it.
func recordKey(t *testing.T, f *fixture, txn string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := f.l.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `INSERT INTO commands (source, txn_id, command_id, kind, hash,
			status, result)
		VALUES ('test', $1, gen_random_uuid(), 'accrue', 'another request', 'rejected',
			'{"status":"rejected","error":{"kind":"conflict","message":"taken"}}')`,
		txn); err != nil {
		t.Fatal(err)
	}
	return tx
}

// A long run whose commands COPY meets a key another transaction is
// recording: the COPY waits; when that transaction commits, the batch is
// refused as raced, applied again, and answers that key as a conflict and
// every other command once.
func TestCopyRunsCommandsCopyRacedByCommit(t *testing.T) {
	// 100 commands, the key in the middle; 2,000 commands (the COPY larger
	// than the socket's buffers), the key first in the COPY's order, so
	// that PostgreSQL waits while the rows still stream in.
	for _, c := range []struct{ n, at int }{{100, 57}, {2000, -1}} {
		t.Run(fmt.Sprint(c.n), func(t *testing.T) { testCopyRacedByCommit(t, c.n, c.at) })
	}
}

// firstKey is the index of the command whose key the commands COPY writes
// first.
func firstKey(cmds []bus.Command) int {
	best := 0
	for i := range cmds {
		if cmds[i].TxnID < cmds[best].TxnID {
			best = i
		}
	}
	return best
}

// heldKeyRun enrolls ten members and makes n accruals for them, then has
// another transaction record the transaction id of accrual at (the one
// whose key sorts first when at < 0) and hold it open. It returns at.
func heldKeyRun(t *testing.T, n, at int) (*fixture, []bus.Command, int, pgx.Tx) {
	t.Helper()
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	ms := refs(10)
	for _, m := range ms {
		f.enroll(m)
	}
	x := longAccruals(f, ms, n)
	if at < 0 {
		at = firstKey(x)
	}
	return f, x, at, recordKey(t, f, x[at].TxnID)
}

func testCopyRacedByCommit(t *testing.T, n, at int) {
	f, x, at, holder := heldKeyRun(t, n, at)
	ch := applyAsync(f, x)
	waitForLockWaiters(t, f, 1)
	if err := holder.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ans batchAnswer
	select {
	case ans = <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("batch stuck for 30s")
	}
	if ans.err != nil {
		t.Fatalf("ApplyBatch: %v", ans.err)
	}
	for i, a := range ans.out {
		r := a.Result
		if i == at {
			if r.Status != bus.StatusRejected || r.Error == nil ||
				r.Error.Kind != string(core.Conflict) {
				t.Fatalf("raced key answered %s %+v, want a conflict", r.Status, r.Error)
			}
			continue
		}
		if r.Status != bus.StatusOK || r.Replayed || int64(outcomeOf(t, r).Points) != int64(i+1) {
			t.Fatalf("command %d answered %s replayed=%v %s", i, r.Status, r.Replayed, r.Data)
		}
	}
	wantEarned(t, f, 0, append(append([]bus.Command{}, x[:at]...), x[at+1:]...))
	f.check()
}

// A long run cancelled while its commands COPY waits: nothing of the batch
// is written, the pool's connections still work, and the batch sent again
// applies every command once.
func TestCopyRunsCancelledMidCopy(t *testing.T) {
	for _, c := range []struct{ n, at int }{{100, 80}, {2000, -1}} {
		t.Run(fmt.Sprint(c.n), func(t *testing.T) { testCancelledMidCopy(t, c.n, c.at) })
	}
}

func testCancelledMidCopy(t *testing.T, n, at int) {
	f, x, at, holder := heldKeyRun(t, n, at)
	ms := refs(10) // the members heldKeyRun enrolled
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() {
		_, err := f.l.ApplyBatch(ctx, x)
		ch <- err
	}()
	waitForLockWaiters(t, f, 1)
	cancel()
	select {
	case err := <-ch:
		if err == nil {
			t.Fatal("cancelled batch committed")
		}
		t.Logf("cancelled: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("cancelled batch stuck for 30s")
	}
	if err := holder.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		f.wantBalance(m, 0, 0, 0)
	}
	var rows int64
	if err := f.l.pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM commands WHERE source = 'test' AND txn_id LIKE $1 || '-%')
		+ (SELECT count(*) FROM postings p JOIN programs g ON g.id = p.program_id
			WHERE g.code = $1)`, f.prog).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	// The program's upsert and the enrollments are the only commands.
	if rows != int64(1+len(ms)) {
		t.Fatalf("%d commands and postings after the cancelled batch, want %d", rows,
			1+len(ms))
	}
	// Every connection of the pool answers.
	for range 2 * int(f.l.pool.Stat().MaxConns()) {
		var one int
		if err := f.l.pool.QueryRow(context.Background(), `SELECT 1`).Scan(&one); err != nil {
			t.Fatalf("pool after cancel: %v", err)
		}
	}
	out, err := f.l.ApplyBatch(context.Background(), x)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range out {
		if a.Result.Replayed || int64(outcomeOf(t, a.Result).Points) != int64(i+1) {
			t.Fatalf("command %d: %s replayed=%v", i, a.Result.Data, a.Result.Replayed)
		}
	}
	wantEarned(t, f, 0, x)
	f.check()
}

// The long form of TestReusedTxnIDAcrossMembersDoesNotDeadlock: both racing
// batches are runs written by COPY. B waits on m2, then its commands COPY
// waits on A's record of the shared id; A's redemption of m2 waits on B.
// PostgreSQL refuses one of them as a deadlock (in a COPY or in the
// redemption), ApplyBatch applies it again, both answer, the shared id is
// posted once, and the ledger adds up.
func TestCopyRunsDeadlockIsRetried(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	as, bs, shared := deadlockMembers(f)

	release := holdMember(t, f, "m2")
	bCmds := append([]bus.Command{f.command(core.KindAccrue, "m2", shared,
		core.Accrue{EventType: "purchase", Amount: "7"})}, longAccruals(f, bs, 70)...)
	b := applyAsync(f, bCmds)
	waitForLockWaiters(t, f, 1)
	aCmds := append(longAccruals(f, as, 70), f.command(core.KindAccrue, "m1", shared,
		core.Accrue{EventType: "purchase", Amount: "5"}),
		f.command(core.KindRedeem, "m2", f.txn(), core.Redeem{Points: 1}))
	a := applyAsync(f, aCmds)
	waitForLockWaiters(t, f, 2)
	release()

	answers := awaitBatches(t, a, b)
	checkRace(t, f, [][]bus.Command{aCmds, bCmds}, answers)
	// One of the two shared accruals was posted, the other is a conflict.
	var sharedPoints int64
	if err := f.l.pool.QueryRow(context.Background(), `SELECT coalesce(sum(points), 0)
		FROM postings WHERE source = 'test' AND txn_id = $1`, shared).Scan(&sharedPoints); err != nil {
		t.Fatal(err)
	}
	if sharedPoints != 5 && sharedPoints != 7 {
		t.Fatalf("shared id posted %d points, want 5 or 7", sharedPoints)
	}
	wantEarned(t, f, 0, aCmds[:70])
	wantEarned(t, f, 0, bCmds[1:])
	m2 := int64(50 - 1)
	if sharedPoints == 7 {
		m2 += 7
	}
	f.wantBalance("m2", core.Points(m2), 0, 0)
	m1 := int64(0)
	if sharedPoints == 5 {
		m1 = 5
	}
	f.wantBalance("m1", core.Points(m1), 0, 0)
	var deadlocks int64
	_ = f.l.pool.QueryRow(context.Background(), `SELECT deadlocks FROM pg_stat_database
		WHERE datname = current_database()`).Scan(&deadlocks)
	t.Logf("shared id posted %d points; deadlocks in the database so far: %d", sharedPoints,
		deadlocks)
}

// As TestCopyRunsDeadlockIsRetried, but the batch whose commands COPY waits
// is the one PostgreSQL refuses: its connections check for deadlocks after
// 200 ms, the other batch's after 10 s. The deadlock error comes out of the
// COPY, and ApplyBatch must still apply that batch again.
func TestCopyRunsDeadlockInCopyIsRetried(t *testing.T) {
	base := freshDB(t).Config().ConnString()
	open := func(timeout string) *Ledger {
		sep := "?"
		if strings.Contains(base, "?") {
			sep = "&"
		}
		pool, err := Open(context.Background(), base+sep+"deadlock_timeout="+timeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return New(pool, slog.New(slog.DiscardHandler))
	}
	la, lb := open("10s"), open("200ms")
	f := newFixtureOn(t, la, core.Program{PointsPerUnit: "1"})
	lb.Clock = la.Clock
	var timeout string
	if err := lb.pool.QueryRow(context.Background(), `SHOW deadlock_timeout`).Scan(
		&timeout); err != nil || timeout != "200ms" {
		t.Fatalf("deadlock_timeout %q, %v", timeout, err)
	}
	as, bs, shared := deadlockMembers(f)

	release := holdMember(t, f, "m2")
	bCmds := append([]bus.Command{f.command(core.KindAccrue, "m2", shared,
		core.Accrue{EventType: "purchase", Amount: "7"})}, longAccruals(f, bs, 70)...)
	b := make(chan batchAnswer, 1)
	go func() {
		out, err := lb.ApplyBatch(context.Background(), bCmds)
		b <- batchAnswer{out, err}
	}()
	waitForLockWaiters(t, f, 1)
	aCmds := append(longAccruals(f, as, 70), f.command(core.KindAccrue, "m1", shared,
		core.Accrue{EventType: "purchase", Amount: "5"}),
		f.command(core.KindRedeem, "m2", f.txn(), core.Redeem{Points: 1}))
	a := applyAsync(f, aCmds)
	waitForLockWaiters(t, f, 2)
	release()

	answers := awaitBatches(t, a, b)
	checkRace(t, f, [][]bus.Command{aCmds, bCmds}, answers)
	var sharedPoints, deadlocks int64
	if err := f.l.pool.QueryRow(context.Background(), `SELECT coalesce(sum(points), 0)
		FROM postings WHERE source = 'test' AND txn_id = $1`, shared).Scan(&sharedPoints); err != nil {
		t.Fatal(err)
	}
	_ = f.l.pool.QueryRow(context.Background(), `SELECT deadlocks FROM pg_stat_database
		WHERE datname = current_database()`).Scan(&deadlocks)
	t.Logf("shared id posted %d points; deadlocks %d", sharedPoints, deadlocks)
	// B, refused in its COPY, comes second: A's accrual holds the id.
	if sharedPoints != 5 {
		t.Fatalf("shared id posted %d points, want A's 5", sharedPoints)
	}
	if r := answers[1][0].Result; r.Status != bus.StatusRejected || r.Error == nil ||
		r.Error.Kind != string(core.Conflict) {
		t.Fatalf("B's shared accrual answered %s %+v, want a conflict", r.Status, r.Error)
	}
	wantEarned(t, f, 0, aCmds[:70])
	wantEarned(t, f, 0, bCmds[1:])
	f.wantBalance("m1", 5, 0, 0)
	f.wantBalance("m2", 49, 0, 0)
}

// The outbox after a batch of a per-command redemption, a long run written
// by COPY, a per-command credit that expires on arrival and a second long
// run, and after an expiry sweep: one event per posting, in posting order,
// each with its posting's member, points, transaction id and subject, and
// an event id that is the row's.
func TestCopyRunsOutboxMatchesPostings(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", ExpiryUnit: core.ExpiryDays,
		ExpiryLength: 10})
	ms := refs(12)
	for _, m := range ms {
		f.enroll(m)
	}
	f.ok(core.KindCredit, ms[0], core.Credit{Points: 40, Reason: "seed"})
	ctx := context.Background()
	var first int64
	if err := f.l.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM outbox`).Scan(
		&first); err != nil {
		t.Fatal(err)
	}
	batch := []bus.Command{f.command(core.KindRedeem, ms[0], f.txn(), core.Redeem{Points: 15})}
	batch = append(batch, longAccruals(f, ms, 70)...)
	old := f.command(core.KindCredit, ms[1], f.txn(), core.Credit{Points: 3, Reason: "old"})
	old.OccurredAt = f.now.Add(-20 * 24 * time.Hour)
	old.Seal()
	batch = append(batch, old)
	batch = append(batch, longAccruals(f, ms, 90)...)
	out, err := f.l.ApplyBatch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range out {
		if a.Result.Status != bus.StatusOK {
			t.Fatalf("command %d: %s %+v", i, a.Result.Status, a.Result.Error)
		}
	}
	f.setNow(f.now.Add(11 * 24 * time.Hour))
	if _, _, err := f.l.Sweep(ctx, f.now, 1000); err != nil {
		t.Fatal(err)
	}

	type row struct {
		id, posting, points, eventPoints, eventPosting                     int64
		subject, kind, txn, eventTxn, member, eventMember, eventID, bodyID string
	}
	rows, err := f.l.pool.Query(ctx, `SELECT o.id, coalesce(p.id, 0),
			coalesce(p.points + p.pending_delta + p.held_delta, 0), (o.body->>'points')::bigint,
			coalesce((o.body->>'posting_id')::bigint, 0), o.subject, o.body->>'kind',
			coalesce(p.txn_id, ''), o.body->>'txn_id', coalesce(p.member_id::text, ''),
			o.body->>'member', o.event_id::text, o.body->>'event_id'
		FROM outbox o LEFT JOIN postings p ON p.id = (o.body->>'posting_id')::bigint
		WHERE o.id > $1 AND o.body->>'program' = $2 ORDER BY o.id`, first, f.prog)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.id, &x.posting, &x.points, &x.eventPoints, &x.eventPosting,
			&x.subject, &x.kind, &x.txn, &x.eventTxn, &x.member, &x.eventMember, &x.eventID,
			&x.bodyID)
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	var postings int64
	if err := f.l.pool.QueryRow(ctx, `SELECT count(*) FROM postings p
		JOIN programs g ON g.id = p.program_id WHERE g.code = $1 AND p.id > (
			SELECT coalesce(max((body->>'posting_id')::bigint), 0) FROM outbox WHERE id <= $2)`,
		f.prog, first).Scan(&postings); err != nil {
		t.Fatal(err)
	}
	// redemption + 160 accruals + credit and its expiry + the sweep's expiries
	if int64(len(got)) != postings || postings < 1+160+2 {
		t.Fatalf("%d events for %d postings", len(got), postings)
	}
	ids := map[string]bool{}
	last := int64(0)
	kinds := map[string]int{}
	for _, x := range got {
		kinds[x.kind]++
		if x.posting == 0 || x.posting != x.eventPosting {
			t.Fatalf("event %d names posting %d, found %d", x.id, x.eventPosting, x.posting)
		}
		if x.posting <= last {
			t.Fatalf("event %d: posting %d after %d", x.id, x.posting, last)
		}
		last = x.posting
		if x.points != x.eventPoints || x.member != x.eventMember ||
			(x.kind != core.PostExpiry && x.txn != x.eventTxn) {
			t.Fatalf("event %d: %d points of %s under %q, posting %d of %s under %q", x.id,
				x.eventPoints, x.eventMember, x.eventTxn, x.points, x.member, x.txn)
		}
		if x.subject != bus.EventSubject(f.prog, x.kind) {
			t.Fatalf("event %d: subject %s", x.id, x.subject)
		}
		if x.eventID != x.bodyID || ids[x.eventID] {
			t.Fatalf("event %d: id %s, body's %s", x.id, x.eventID, x.bodyID)
		}
		ids[x.eventID] = true
	}
	if kinds[core.PostAccrual] != 160 || kinds[core.PostRedemption] != 1 ||
		kinds[core.PostExpiry] < 2 {
		t.Fatalf("events by kind: %v", kinds)
	}
	f.check()
}

// TestSetBasedMatchesRowByRow with long batches, nearly all accruals and
// credits, and the default threshold: the runs are written in pieces, some
// by COPY and some by INSERT, around the commands the generator mixes in.
func TestCopyRunsRandomLongBatchesMatchRowByRow(t *testing.T) {
	// Each check compares the whole databases, which grow: 20 checks unless
	// -rapid.checks says otherwise.
	if fl := flag.Lookup("rapid.checks"); fl != nil && fl.Value.String() == fl.DefValue {
		if err := fl.Value.Set("20"); err == nil {
			defer fl.Value.Set(fl.DefValue)
		}
	}
	w := newDefaultTwin(t)
	rapid.Check(t, func(rt *rapid.T) {
		w.prog = "p" + uuid.NewString()[:8]
		w.seq = 0
		w.now = time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
		prog := core.Program{Name: "Twin",
			NegativeBalance: rapid.SampledFrom([]string{core.NegativeForbid,
				core.NegativeAllow}).Draw(rt, "negative_balance"),
			PendingDays:    rapid.SampledFrom([]int{0, 2}).Draw(rt, "pending_days"),
			HoldTTLSeconds: 3600,
			PointsPerUnit:  rapid.SampledFrom([]string{"1", "0.1", "2.5"}).Draw(rt, "rate"),
		}
		if rapid.Bool().Draw(rt, "expiry") {
			prog.ExpiryUnit, prog.ExpiryLength = core.ExpiryDays, rapid.IntRange(1, 30).Draw(rt,
				"expiry_days")
		}
		g := &twinGen{w: w, members: []string{"m0", "m1", "m2", "m3", "m4", "m5"}}
		setup := []bus.Command{w.command(core.KindProgramUpsert, "", prog, w.now)}
		for _, m := range g.members {
			setup = append(setup, w.command(core.KindEnroll, m, core.Enroll{}, w.now))
		}
		if rapid.Bool().Draw(rt, "capped_rule") {
			r := perUnit("r", "2", core.RoundDown)
			r.Caps = core.Caps{PerDay: 80}
			setup = append(setup, w.command(core.KindRuleUpsert, "", RuleUpsert{Rule: r}, w.now))
		}
		if rapid.Bool().Draw(rt, "tiers") {
			setup = append(setup, w.command(core.KindTiersSet, "", core.Tiers{WindowDays: 30,
				Levels: []core.TierLevel{{Code: "blue", MinPoints: 0, Multiplier: "1"},
					{Code: "gold", MinPoints: 300, Multiplier: "2"}}}, w.now))
		}
		g.record(setup, w.apply(rt, setup))

		for range rapid.IntRange(1, 2).Draw(rt, "batches") {
			// Segments of plain accruals and credits (50 to 100, so that
			// pieces fall on both sides of the threshold) between a few of
			// the generator's commands (fallbacks, debits, replays...).
			var cmds []bus.Command
			for range rapid.IntRange(1, 3).Draw(rt, "segments") {
				for range rapid.IntRange(50, 100).Draw(rt, "plain") {
					cmds = append(cmds, plainCommand(rt, w, g.members))
				}
				for range rapid.IntRange(0, 4).Draw(rt, "others") {
					cmds = append(cmds, g.draw(rt, cmds))
				}
			}
			g.record(cmds, w.apply(rt, cmds))
			if rapid.IntRange(0, 2).Draw(rt, "advance") == 0 {
				w.advance(time.Duration(rapid.IntRange(1, 72).Draw(rt, "hours")) * time.Hour)
			}
		}
		w.compare(rt)
	})
	t.Logf("set-based path applied %d commands", w.fast.setBased.Load())
}

// plainCommand draws an accrual or a credit the set-based path takes
// (unless the member was suspended or merged meanwhile): occurred in the
// last 40 days, a valid amount, a credit's expiry in the future.
func plainCommand(rt *rapid.T, w *twin, members []string) bus.Command {
	m := rapid.SampledFrom(members).Draw(rt, "plain_member")
	at := w.now.Add(-time.Duration(rapid.IntRange(0, 40*24).Draw(rt, "plain_hours_ago")) *
		time.Hour)
	if rapid.IntRange(0, 2).Draw(rt, "plain_kind") > 0 {
		return w.command(core.KindAccrue, m, core.Accrue{EventType: "bill_paid",
			Amount: fmt.Sprintf("%d.%02d", rapid.IntRange(0, 300).Draw(rt, "plain_amount"),
				rapid.IntRange(0, 99).Draw(rt, "plain_cents")),
			Partner: rapid.SampledFrom([]string{"", "shop"}).Draw(rt, "plain_partner")}, at)
	}
	in := core.Credit{Points: core.Points(rapid.IntRange(1, 300).Draw(rt, "plain_points")),
		Reason: "bonus"}
	if rapid.Bool().Draw(rt, "plain_expires") {
		e := w.now.Add(time.Duration(rapid.IntRange(1, 60*24).Draw(rt, "plain_exp_h")) *
			time.Hour)
		in.ExpiresAt = &e
	}
	return w.command(core.KindCredit, m, in, at)
}

// awaitBatches waits for the answers of batches applied apart, in the
// order given, and fails on an error or on a batch stuck for 30 s.
func awaitBatches(t *testing.T, chs ...<-chan batchAnswer) [][]Applied {
	t.Helper()
	var answers [][]Applied
	for _, ch := range chs {
		select {
		case ans := <-ch:
			if ans.err != nil {
				t.Fatalf("ApplyBatch: %v", ans.err)
			}
			answers = append(answers, ans.out)
		case <-time.After(30 * time.Second):
			t.Fatal("ApplyBatch stuck for 30s")
		}
	}
	return answers
}

// deadlockMembers enrolls m1, m2 (with 50 points) and two groups of twenty
// members for the deadlock tests, and gives the transaction id both
// batches will use.
func deadlockMembers(f *fixture) (as, bs []string, shared string) {
	as, bs = refs(40)[:20], refs(40)[20:]
	for _, m := range append(append([]string{"m1", "m2"}, as...), bs...) {
		f.enroll(m)
	}
	f.ok(core.KindCredit, "m2", core.Credit{Points: 50, Reason: "seed"})
	return as, bs, f.txn()
}
