package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// holdMember locks a member of f's program in a transaction of its own and
// returns the function that lets it go.
func holdMember(t *testing.T, f *fixture, ref string) func() {
	t.Helper()
	ctx := context.Background()
	hold, err := f.l.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `SELECT 1 FROM members m JOIN programs p ON p.id = m.program_id
		WHERE p.code = $1 AND m.customer_ref = $2 FOR UPDATE OF m`, f.prog, ref); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { _ = hold.Rollback(ctx) }) }
	t.Cleanup(release)
	return release
}

type batchAnswer struct {
	out []Applied
	err error
}

func applyAsync(f *fixture, cmds []bus.Command) <-chan batchAnswer {
	ch := make(chan batchAnswer, 1)
	go func() {
		out, err := f.l.ApplyBatch(context.Background(), cmds)
		ch <- batchAnswer{out, err}
	}()
	return ch
}

// A set-based run records its transaction ids when it writes, after it
// locked its members. A batch that recorded an id in an earlier run and then
// needs a member a racing run holds deadlocks with that run when the racing
// run uses the same id for another member; PostgreSQL refuses one of them,
// and ApplyBatch applies it again once the other is done: both calls answer,
// and the ledger adds up.
func TestReusedTxnIDAcrossMembersDoesNotDeadlock(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	for _, m := range []string{"m1", "m2"} {
		f.enroll(m)
	}
	f.ok(core.KindCredit, "m2", core.Credit{Points: 50, Reason: "seed"})

	release := holdMember(t, f, "m2")
	shared := f.txn()
	// B: one accrual of m2 under the shared id; it reads the id as free,
	// then queues on m2.
	b := applyAsync(f, []bus.Command{f.command(core.KindAccrue, "m2", shared,
		core.Accrue{EventType: "purchase", Amount: "7"})})
	waitForLockWaiters(t, f, 1)
	// A: the shared id for m1 on the set-based path, then a redemption of m2
	// on the per-command path, which queues on m2 behind B.
	a := applyAsync(f, []bus.Command{
		f.command(core.KindAccrue, "m1", shared, core.Accrue{EventType: "purchase",
			Amount: "5"}),
		f.command(core.KindRedeem, "m2", f.txn(), core.Redeem{Points: 1}),
	})
	waitForLockWaiters(t, f, 2)
	release()

	var fails []error
	for _, ch := range []<-chan batchAnswer{a, b} {
		select {
		case ans := <-ch:
			if ans.err != nil {
				fails = append(fails, ans.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("ApplyBatch stuck for 30s")
		}
	}
	for _, err := range fails {
		var pe *pgconn.PgError
		code := ""
		if errors.As(err, &pe) {
			code = pe.Code
		}
		t.Errorf("ApplyBatch failed (SQLSTATE %s): %v", code, err)
	}
	f.check()
}

// earnCmd is an accrual command of f for member at time at.
func earnCmd(f *fixture, member, txn, amount string, at time.Time) bus.Command {
	c := f.command(core.KindAccrue, member, txn, core.Accrue{EventType: "bill_paid",
		Amount: amount})
	c.OccurredAt, c.ReceivedAt = at, at
	c.Seal()
	return c
}

// outcomePoints is the points of an applied command's outcome.
func outcomePoints(t *testing.T, a Applied) int64 {
	t.Helper()
	if a.Result.Status != bus.StatusOK {
		return -1
	}
	var o core.Outcome
	if err := json.Unmarshal(a.Result.Data, &o); err != nil {
		t.Fatal(err)
	}
	return int64(o.Points)
}

// Many batches at once, with overlapping members and transaction ids (some
// of them the same id for different members), in a program with a budget:
// no error, each id posted once, the budget never exceeded, the ledger
// consistent.
func TestConcurrentBatchesKeepTheBudget(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	members := []string{"a", "b", "c", "d", "e", "f"}
	for _, m := range members {
		f.enroll(m)
	}
	r := perUnit("budgeted", "1", core.RoundDown)
	r.Caps = core.Caps{Budget: 400}
	f.putRule(r)

	at := f.l.Clock()
	const workers, rounds = 6, 8
	var errMu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for k := range rounds {
				var cmds []bus.Command
				for j := range 6 {
					m := members[(w+j+k)%len(members)]
					// Ids shared by the workers: the same id lands on different
					// members in different workers.
					txn := fmt.Sprintf("%s-shared-%d-%d", f.prog, k, (j+w)%4)
					cmds = append(cmds, earnCmd(f, m, txn, "9", at))
				}
				if _, err := f.l.ApplyBatch(context.Background(), cmds); err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("ApplyBatch: %v", err)
	}
	f.check()
	var total, posted int64
	err := f.l.pool.QueryRow(context.Background(), `SELECT coalesce(sum(p.points), 0),
			count(*) FROM postings p JOIN programs g ON g.id = p.program_id
		WHERE g.code = $1 AND p.kind = $2`, f.prog, core.PostAccrual).Scan(&total, &posted)
	if err != nil {
		t.Fatal(err)
	}
	var ids int64
	err = f.l.pool.QueryRow(context.Background(), `SELECT count(DISTINCT txn_id)
		FROM postings p JOIN programs g ON g.id = p.program_id
		WHERE g.code = $1 AND p.kind = $2 AND p.points > 0`, f.prog,
		core.PostAccrual).Scan(&ids)
	if err != nil {
		t.Fatal(err)
	}
	if total > 400 {
		t.Errorf("accruals posted %d points, budget 400", total)
	}
	t.Logf("posted %d points in %d postings, %d ids", total, posted, ids)
}

// tzTwin is a twin whose program w.prog has the given time zone, capped
// rules per day, month and year and a budget, and members m1..m3.
func tzTwin(t *testing.T, code, tz string, now time.Time) rulesTwin {
	w := rulesTwin{twin: newTwin(t), t: t}
	w.prog, w.now = code, now
	at := now.AddDate(0, 0, -40)
	cmds := []bus.Command{w.in(code, core.KindProgramUpsert, "", "", core.Program{
		Name: "TZ " + tz, TimeZone: tz, Currency: "USD", PointsPerUnit: "1"}, now)}
	for _, m := range []string{"m1", "m2", "m3"} {
		cmds = append(cmds, w.in(code, core.KindEnroll, m, "app",
			core.Enroll{Channel: "app", EnrolledAt: &at}, now))
	}
	day := perUnit("day", "1", core.RoundDown)
	day.Caps = core.Caps{PerDay: 25}
	month := core.Rule{Code: "month", EventType: "bill_paid", Caps: core.Caps{PerMonth: 30},
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 7}}
	year := core.Rule{Code: "year", EventType: "bill_paid", Caps: core.Caps{PerYear: 40},
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 9}}
	budget := core.Rule{Code: "budget", EventType: "bill_paid", Caps: core.Caps{Budget: 60},
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 4}}
	for _, r := range []core.Rule{day, month, year, budget} {
		cmds = append(cmds, w.in(code, core.KindRuleUpsert, "", "", RuleUpsert{Rule: r}, now))
	}
	w.apply(t, cmds)
	return w
}

// Accruals around local midnight at the turn of a year, in programs at
// UTC+14 and UTC-12, in batches: the set-based path must give what the
// per-command path gives, caps and budget included.
func TestCapWindowsInExtremeZones(t *testing.T) {
	for _, tc := range []struct {
		tz       string
		midnight time.Time // local midnight of 1 January 2026, in UTC
	}{
		{"Pacific/Kiritimati", time.Date(2025, 12, 31, 10, 0, 0, 0, time.UTC)},
		{"Etc/GMT+12", time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.tz, func(t *testing.T) {
			now := tc.midnight.Add(30 * time.Hour)
			w := tzTwin(t, "tz", tc.tz, now)
			// The budget row is made on the per-command path first.
			w.apply(t, []bus.Command{acc(w, "m3", "bill_paid", "1", now.Add(-time.Hour))})
			var cmds []bus.Command
			for _, d := range []time.Duration{-25 * time.Hour, -24*time.Hour - time.Second,
				-time.Second, 0, time.Second, time.Minute, 23*time.Hour + 59*time.Minute,
				24 * time.Hour, 24*time.Hour + time.Second} {
				for _, m := range []string{"m1", "m2"} {
					cmds = append(cmds, acc(w, m, "bill_paid", "10", tc.midnight.Add(d)))
				}
			}
			before := w.fast.setBased.Load()
			res := w.apply(t, cmds)
			t.Logf("%d of %d set-based; first %s %+v %s", w.fast.setBased.Load()-before,
				len(cmds), res[0].Status, res[0].Error, res[0].Data)
			w.compare(t)
			// And again, one batch per side of midnight, interleaved.
			for _, d := range []time.Duration{-time.Minute, time.Minute, -2 * time.Minute} {
				w.apply(t, []bus.Command{
					acc(w, "m1", "bill_paid", "10", tc.midnight.Add(d)),
					acc(w, "m3", "bill_paid", "10", tc.midnight.Add(d)),
				})
			}
			w.compare(t)
		})
	}
}

// Rules changing inside a batch: accruals, then a capped rule added, more
// accruals, the rule retired, more accruals, a member closed and another
// merged, then accruals of both, all in one batch.
func TestRulesChangingWithinABatch(t *testing.T) {
	w := rulesTwin{twin: newTwin(t), t: t}
	w.prog = "chg"
	now := w.now
	at := now.AddDate(0, -2, 0)
	cmds := []bus.Command{w.in("chg", core.KindProgramUpsert, "", "", core.Program{
		Name: "Changing", TimeZone: "UTC", Currency: "USD", PointsPerUnit: "1"}, now)}
	for _, m := range []string{"m1", "m2", "m3", "m4"} {
		cmds = append(cmds, w.in("chg", core.KindEnroll, m, "app",
			core.Enroll{Channel: "app", EnrolledAt: &at}, now))
	}
	w.apply(t, cmds)
	acc := func(m string) bus.Command {
		return w.in("chg", core.KindAccrue, m, "web",
			core.Accrue{EventType: "bill_paid", Amount: "10"}, now.Add(-time.Minute))
	}
	capped := perUnit("double", "2", core.RoundDown)
	capped.Caps = core.Caps{PerDay: 30}
	retireAt := now.Add(-30 * time.Second)
	n := w.setBased(
		acc("m1"), acc("m2"),
		w.in("chg", core.KindRuleUpsert, "", "", RuleUpsert{Rule: capped}, now),
		acc("m1"), acc("m2"), acc("m1"),
		w.in("chg", core.KindRuleRetire, "", "", core.RuleRetire{Code: "double",
			At: &retireAt}, now),
		acc("m1"), acc("m2"),
		w.in("chg", core.KindClose, "m3", "", core.StatusChange{}, now),
		w.in("chg", core.KindMerge, "m4", "", core.Merge{Into: "m2"}, now),
		acc("m3"), acc("m4"), acc("m2"),
	)
	t.Logf("%d set-based", n)
	w.compare(t)
}

// Program codes are reused across databases (programShapes is process-wide):
// a code known without rules in one database and with capped rules in
// another, alternating, must be evaluated by each database's own rules.
func TestHasRulesPerDatabase(t *testing.T) {
	now := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	withRules := tzTwin(t, "shared", "UTC", now)
	plain := rulesTwin{twin: newTwin(t), t: t}
	plain.prog = "shared"
	plain.apply(t, []bus.Command{
		plain.in("shared", core.KindProgramUpsert, "", "", core.Program{Name: "plain",
			TimeZone: "UTC", Currency: "USD", PointsPerUnit: "1"}, now),
		plain.in("shared", core.KindEnroll, "m1", "app", core.Enroll{Channel: "app"}, now),
	})
	withRules.apply(t, []bus.Command{acc(withRules, "m3", "bill_paid", "1", now)})
	for range 4 {
		plain.apply(t, []bus.Command{acc(plain, "m1", "bill_paid", "10", now)})
		withRules.apply(t, []bus.Command{
			acc(withRules, "m1", "bill_paid", "10", now),
			acc(withRules, "m2", "bill_paid", "10", now),
		})
	}
	plain.compare(t)
	withRules.compare(t)
}

// acc is an accrual through the web in w's own program.
func acc(w rulesTwin, member, typ, amount string, at time.Time) bus.Command {
	return w.in(w.prog, core.KindAccrue, member, "web",
		core.Accrue{EventType: typ, Amount: amount}, at)
}
