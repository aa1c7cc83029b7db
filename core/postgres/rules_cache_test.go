package postgres

import (
	"context"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/core"
)

// The process keeps each program's compiled rules in programRules. These
// tests warm that cache with an accrual first, then change the rules and
// check that the next accrual follows the change.

func TestRuleCacheSeesNewVersionAndRetirement(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m1")
	t0 := f.l.Clock()
	f.putRule(perUnit("r", "1", core.RoundDown))
	if got, ver := f.earn("m1", "bill_paid", "100", t0); got != 100 || ver != "rule:r@v1" {
		t.Fatalf("before the update: %d by %q, want 100 by rule:r@v1", got, ver)
	}

	// A new version, in force from t0+1h, is seen by the next accrual.
	t1 := t0.Add(time.Hour)
	f.setNow(t1)
	f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: perUnit("r", "3", core.RoundDown),
		Mode: "update"})
	f.setNow(t1.Add(time.Second))
	for i, s := range []struct {
		at   time.Time
		want core.Points
		ver  string
	}{
		{t1, 300, "rule:r@v2"},
		{t1.Add(-time.Nanosecond), 100, "rule:r@v1"}, // same microsecond as before t1
		{t1.Add(999 * time.Nanosecond), 300, "rule:r@v2"},
	} {
		if got, ver := f.earn("m1", "bill_paid", "100", s.at); got != s.want || ver != s.ver {
			t.Fatalf("after the update, step %d: %d by %q, want %d by %q", i, got, ver,
				s.want, s.ver)
		}
	}

	// A second rule of another event type joins without disturbing the first.
	f.putRule(core.Rule{Code: "top", EventType: "top_up",
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 7}})
	if got, ver := f.earn("m1", "top_up", "100", t1); got != 7 || ver != "rule:top@v1" {
		t.Fatalf("top_up: %d by %q, want 7 by rule:top@v1", got, ver)
	}

	// Retired at t0+2h: events from then on no longer earn by it.
	t2 := t0.Add(2 * time.Hour)
	f.setNow(t2)
	f.ok(core.KindRuleRetire, "", core.RuleRetire{Code: "r"})
	if got, ver := f.earn("m1", "bill_paid", "100", t2); got != 0 || ver != "" {
		t.Fatalf("after retirement: %d by %q, want nothing", got, ver)
	}
	if got, ver := f.earn("m1", "bill_paid", "100", t2.Add(-time.Minute)); got != 300 ||
		ver != "rule:r@v2" {
		t.Fatalf("before retirement: %d by %q, want 300 by rule:r@v2", got, ver)
	}
	f.wantBalance("m1", 100+300+100+300+7+300, 0, 0)
	f.check()
}

// A change written to the rules table by another process (here: plain SQL
// on another connection) reaches this process's cache through the rules
// revision that the table's trigger moves.
func TestRuleCacheFollowsChangesByOtherProcesses(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m1")
	ctx := context.Background()
	f.putRule(perUnit("r", "1", core.RoundDown))
	if got, _ := f.earn("m1", "bill_paid", "50", f.l.Clock()); got != 50 {
		t.Fatalf("warm-up accrual: %d points, want 50", got)
	}

	// Another instance retires the rule an hour ago.
	ended := f.l.Clock().Add(-time.Hour)
	tag, err := f.l.pool.Exec(ctx, `UPDATE rules SET retired = true, until = $2
		WHERE program_id = (SELECT id FROM programs WHERE code = $1) AND code = 'r'`,
		f.prog, ended)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("retire by SQL: %v (%d rows)", err, tag.RowsAffected())
	}
	if got, ver := f.earn("m1", "bill_paid", "50", f.l.Clock()); got != 0 || ver != "" {
		t.Fatalf("after the other process retired the rule: %d by %q, want nothing", got, ver)
	}
	if got, _ := f.earn("m1", "bill_paid", "50", ended.Add(-time.Second)); got != 50 {
		t.Fatalf("before the end of force: %d points, want 50", got)
	}
	f.wantBalance("m1", 100, 0, 0)
	f.check()
}

// A transaction that publishes a rule and then rolls back leaves nothing of
// it in the process's cache.
func TestRuleCacheForgetsRolledBackRules(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m1")
	ctx := context.Background()
	f.putRule(perUnit("r", "1", core.RoundDown))
	if got, _ := f.earn("m1", "bill_paid", "10", f.l.Clock()); got != 10 {
		t.Fatalf("warm-up accrual: %d points, want 10", got)
	}

	tx, err := f.l.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) // a failed check must not leave the transaction open
	txn := f.l.newTxn(tx)
	prog, err := txn.loadProgram(ctx, f.prog)
	if err != nil {
		t.Fatal(err)
	}
	cmd := f.command(core.KindRuleUpsert, "", f.txn(), RuleUpsert{Rule: core.Rule{
		Code: "bonus", EventType: "bill_paid",
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 1000}}})
	if _, err := txn.rulesCmd(ctx, prog, &cmd); err != nil {
		t.Fatal(err)
	}
	snap, err := txn.programRuleSnapshot(ctx, prog.ID)
	if err != nil || len(snap.versions) != 2 {
		t.Fatalf("inside the transaction: %+v %v, want both rules", snap, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	if got, ver := f.earn("m1", "bill_paid", "10", f.l.Clock()); got != 10 ||
		ver != "rule:r@v1" {
		t.Fatalf("after the rollback: %d by %q, want 10 by rule:r@v1", got, ver)
	}
	var n int
	err = f.l.pool.QueryRow(ctx, `SELECT count(*) FROM rules r JOIN programs p
		ON p.id = r.program_id WHERE p.code = $1`, f.prog).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("rules stored: %d (%v), want 1", n, err)
	}
	f.check()
}

// A batch of many accruals reads the program's rules once, whatever their
// number.
func TestRuleCacheOneReadPerBatch(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m1")
	ctx := context.Background()
	f.putRule(perUnit("r", "1", core.RoundDown))
	f.putRule(core.Rule{Code: "capped", EventType: "*", Caps: core.Caps{PerDay: 15},
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 10}})

	err := pgx.BeginFunc(ctx, f.l.pool, func(tx pgx.Tx) error {
		txn := f.l.newTxn(tx)
		prog, err := txn.loadProgram(ctx, f.prog)
		if err != nil {
			return err
		}
		m, err := lockMember(ctx, tx, prog.ID, "m1")
		if err != nil {
			return err
		}
		var first *ruleSnapshot
		for i := 0; i < 3; i++ {
			ev := core.EventFacts{Type: "bill_paid", Amount: mustAmount(t, "20"),
				AmountText: "20", OccurredAt: f.l.Clock()}
			e, err := txn.accrualEval(ctx, prog, m, ev, true, false)
			if err != nil {
				return err
			}
			if err := txn.countUsage(ctx, prog.ID, m.id, e); err != nil {
				return err
			}
			// 20 by r, and the fixed 10 capped at 15 a day: 10, 5, then 0.
			want := core.Points(20 + []core.Points{10, 5, 0}[i])
			if e.Points != want {
				t.Errorf("accrual %d: %d points, want %d", i, e.Points, want)
			}
			snap := txn.ruleCache.snapshots[prog.ID]
			if first == nil {
				first = snap
			}
			if snap == nil || snap != first {
				t.Errorf("accrual %d: rules read again (%p, first %p)", i, snap, first)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mustAmount(t testing.TB, s string) *big.Rat {
	t.Helper()
	a, err := core.ParseAmount("amount", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// BenchmarkAccrualEval50Rules evaluates accruals of one member, as posting
// does it but without posting, against a program with 50 rules in force,
// all in one transaction as a consumer batch would: the rules come from the
// process's cache, the member's attributes from PostgreSQL.
func BenchmarkAccrualEval50Rules(b *testing.B) {
	f := newFixture(b, core.Program{})
	f.enroll("m1")
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		r := perUnit(fmt.Sprintf("r%02d", i), "0.01", core.RoundDown)
		r.Priority = i % 7
		r.Condition = fmt.Sprintf(`event.amount_cents >= %d && (member.plan != "prepaid" `+
			`|| event.channel in ["app", "web"])`, i*1000)
		if i%5 == 1 {
			r.Formula = core.Formula{Kind: core.FormulaFixed, Points: 10}
		}
		f.putRule(r)
	}
	amount := mustAmount(b, "25990.50")
	err := pgx.BeginFunc(ctx, f.l.pool, func(tx pgx.Tx) error {
		txn := f.l.newTxn(tx)
		prog, err := txn.loadProgram(ctx, f.prog)
		if err != nil {
			return err
		}
		m, err := lockMember(ctx, tx, prog.ID, "m1")
		if err != nil {
			return err
		}
		ev := core.EventFacts{Type: "bill_paid", Amount: amount, AmountText: "25990.50",
			Channel: "app", OccurredAt: f.l.Clock()}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			e, err := txn.accrualEval(ctx, prog, m, ev, false, false)
			if err != nil || e.Points == 0 {
				b.Fatalf("%+v %v", e, err)
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
