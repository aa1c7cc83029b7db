package postgres

import (
	"context"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// writeOffFigures adds up what ref's statement says its reversals wrote off
// and its undos settled.
func (f *fixture) writeOffFigures(ref string) (written, recovered core.Points) {
	f.t.Helper()
	for _, p := range f.statement(ref) {
		written += p.WrittenOff
		recovered += p.Recovered
	}
	return written, recovered
}

// A database that settled write-offs before the statement showed them
// (migration 0036) shows them after the upgrade, from the undos' stored
// answers; an undo that sent points back to a lot the reversal had taken
// them from counts only what settled the write-off.
func TestWriteOffStatementMigration(t *testing.T) {
	l := isolatedLedger(t)
	f := newFixtureOn(t, l, core.Program{})
	ctx := context.Background()
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 500,
		CancelWindowSeconds: 3600})
	f.enroll("ana")
	f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
	billTxn := f.lastTxn()
	f.creditAt("ana", 300, f.now.AddDate(2, 0, 0))
	o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug"}))
	f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: billTxn, Reason: "bill"})
	out := f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
	if out.Points != 300 || out.Recovered != 200 {
		t.Fatalf("cancel: %d back, %d settled; want 300 and 200", out.Points, out.Recovered)
	}
	if w, r := f.writeOffFigures("ana"); w != 200 || r != 200 {
		t.Fatalf("statement: %d written off, %d settled; want 200 and 200", w, r)
	}

	// As a database before migration 0036.
	for _, q := range []string{`DROP TABLE written_off_settled`,
		`DROP INDEX written_off_reversal_idx`,
		`DELETE FROM schema_migrations WHERE name LIKE '0036_%'`} {
		if _, err := l.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := Migrate(ctx, l.pool, l.log); err != nil {
		t.Fatal(err)
	}
	if w, r := f.writeOffFigures("ana"); w != 200 || r != 200 {
		t.Fatalf("statement after the upgrade: %d written off, %d settled; want 200 and 200",
			w, r)
	}
	f.check()
}
