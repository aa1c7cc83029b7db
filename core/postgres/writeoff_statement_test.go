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

// In a program that lets members owe points, a credit reversed after its
// points were spent takes what it can from another lot and leaves the rest
// owed; undoing the spending then repays the debt from the reversed credit's
// own points and gives the other lot its points back, with its own later
// expiry (an upgrade tester found them left on the reversed credit's lot,
// expiring a year earlier, while the cover was counted as returned).
func TestUndoRepaysDebtAndReturnsCover(t *testing.T) {
	for _, undo := range []string{"redemption reversed", "order cancelled"} {
		t.Run(undo, func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: core.NegativeAllow})
			f.ok(core.KindRewardUpsert, "", core.Reward{Code: "tv", Name: "TV", Points: 1000,
				CancelWindowSeconds: 3600})
			f.enroll("ana")
			bill := f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
			billTxn := f.lastTxn()
			other := f.creditAt("ana", 200, f.now.AddDate(2, 0, 0))
			var spent string
			var order string
			if undo == "order cancelled" {
				order = orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(),
					core.PlaceOrder{Reward: "tv"})).ID
			} else {
				f.ok(core.KindRedeem, "ana", core.Redeem{Points: 1000, Reason: "tv"})
				spent = f.lastTxn()
			}
			f.wantLot(bill, 1000, 0)
			rev := f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: billTxn,
				Reason: "bill cancelled"})
			if rev.Written != 0 {
				t.Fatalf("reversal wrote off %d in a program that allows debt", rev.Written)
			}
			f.wantBalance("ana", -800, 0, 0)
			f.wantLot(other, 200, 0)

			var out core.Outcome
			if order != "" {
				out = f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: order})
			} else {
				out = f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent,
					Reason: "tv returned"})
			}
			if out.Points != 1000 {
				t.Fatalf("undo: %d points, want 1000 (800 repaying the debt)", out.Points)
			}
			f.wantBalance("ana", 200, 0, 0)
			f.wantLot(bill, 1000, 0)
			f.wantLot(other, 200, 200)
			f.check()
		})
	}
}

// Regression tests of an attack on the mend above (debt programs): the
// debt a reversal left is repaid from the points coming back to the
// reversed credit's lot, whatever order the lots come in, and a program
// that forbids debt ends the same. Both are checked after the reversed
// credit's lot has expired: points left on it would be lost.
func TestUndoRepaysDebtFromTheReversedLot(t *testing.T) {
	for _, policy := range []string{core.NegativeAllow, core.NegativeForbid} {
		// Bill 1000 then another credit of 500; 1200 spent (bill 1000 and
		// 200 of the other); the bill's reversal takes the other's 300 as
		// cover and owes (or writes off) 700; the redemption comes back.
		t.Run(policy+"/cover and own return", func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy})
			f.enroll("ana")
			bill := f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
			billTxn := f.lastTxn()
			other := f.creditAt("ana", 500, f.now.AddDate(2, 0, 0))
			f.ok(core.KindRedeem, "ana", core.Redeem{Points: 1200, Reason: "tv"})
			spent := f.lastTxn()
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: billTxn, Reason: "bill"})
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent, Reason: "back"})
			f.wantLot(bill, 1000, 0)
			f.wantLot(other, 500, 500)
			at := f.now.AddDate(1, 0, 2)
			f.setNow(at)
			f.sweep(at)
			f.wantBalance("ana", 500, 0, 0)
			f.check()
		})
		// The reversed credit (A, expiring last) is made first, so its lot
		// comes first in the undo's moves; nothing else is left to cover.
		t.Run(policy+"/reversed lot first", func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy})
			f.enroll("ana")
			a := f.creditAt("ana", 400, f.now.AddDate(3, 0, 0))
			aTxn := f.lastTxn()
			b := f.creditAt("ana", 400, f.now.AddDate(1, 0, 0))
			f.ok(core.KindRedeem, "ana", core.Redeem{Points: 700, Reason: "tv"})
			spent := f.lastTxn()
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: aTxn, Reason: "bill"})
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent, Reason: "back"})
			f.wantLot(a, 400, 0)
			f.wantLot(b, 400, 400)
			f.wantBalance("ana", 400, 0, 0)
			f.check()
		})
	}
}
