package postgres

import (
	"context"
	"fmt"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// Regression test of a defect a catalog attack found (against cf48e4e), now
// mended; the scenario as found:
//
// A bill earned 1,000 points; 500 paid for a mug; the bill was reversed,
// taking the 500 left and writing off the 500 spent; the mug's order was
// then cancelled and its 500 points went back to the reversed bill's lot:
// the member kept 500 points of a bill that no longer existed. Points that
// come back to a reversed credit's lot now settle its write-off first, so
// the member ends where neither the bill nor the order happened. With
// points of another lot taken by the reversal, those come back to that lot.
func TestCancelledSpendingSettlesWriteOff(t *testing.T) {
	for _, c := range []struct {
		name                  string
		other                 core.Points // points of another lot, expiring later
		written, back, endBal core.Points
	}{
		{"nothing else", 0, 500, 0, 0},
		{"another lot", 300, 200, 300, 300},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, core.Program{})
			f.enroll("ana")
			bill := f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
			billTxn := f.lastTxn()
			var other int64
			if c.other > 0 {
				other = f.creditAt("ana", c.other, f.now.AddDate(2, 0, 0))
			}
			f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug",
				Points: 500, CancelWindowSeconds: 3600})
			o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(),
				core.PlaceOrder{Reward: "mug"}))
			f.wantLot(bill, 1000, 500)

			rev := f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: billTxn,
				Reason: "bill cancelled"})
			if rev.Written != c.written {
				t.Fatalf("reversal wrote off %d, want %d", rev.Written, c.written)
			}
			f.wantBalance("ana", 0, 0, 0)

			out := f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
			if out.Points != c.back || out.Recovered != c.written {
				t.Fatalf("cancel: %d back, %d settling the write-off; want %d and %d",
					out.Points, out.Recovered, c.back, c.written)
			}
			f.wantBalance("ana", c.endBal, 0, 0)
			f.wantLot(bill, 1000, 0)
			if other != 0 {
				f.wantLot(other, c.other, c.back)
			}
			// The statement says it too: the bill's reversal wrote off, the
			// cancellation settled what it wrote off.
			kinds := map[int64]string{}
			st := f.statement("ana")
			for _, p := range st {
				kinds[p.ID] = p.Kind
			}
			var written, recovered core.Points
			for _, p := range st {
				switch {
				case p.Kind == "reversal" && kinds[p.ReversesID] == "credit":
					written += p.WrittenOff
				case p.Kind == "reversal" && kinds[p.ReversesID] == "redemption":
					recovered += p.Recovered
				case p.WrittenOff != 0 || p.Recovered != 0:
					t.Fatalf("%s posting %d says %d written off, %d recovered", p.Kind,
						p.ID, p.WrittenOff, p.Recovered)
				}
			}
			if written != c.written || recovered != c.written {
				t.Fatalf("statement: %d written off, %d recovered; want %d and %d",
					written, recovered, c.written, c.written)
			}
			f.check()
		})
	}
}

// The same history ends at the same balance whatever the program's
// negative-balance policy: a redemption reversed after the credit it spent
// was reversed leaves the member with nothing of either, as a debt repaid
// (allow) or as a write-off settled (forbid).
func TestReversedRedemptionAfterReversedCreditSamePerPolicy(t *testing.T) {
	for _, policy := range []string{core.NegativeAllow, core.NegativeForbid} {
		t.Run(policy, func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy})
			f.enroll("ana")
			f.ok(core.KindCredit, "ana", core.Credit{Points: 1000, Reason: "bill"})
			bill := f.lastTxn()
			f.ok(core.KindRedeem, "ana", core.Redeem{Points: 600, Reason: "spent"})
			spent := f.lastTxn()
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: bill, Reason: "bill"})
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent, Reason: "spent"})
			f.wantBalance("ana", 0, 0, 0)
			f.check()
		})
	}
}

// Reversals made before the write-offs were recorded: the migration finds
// them, and the cancellation after it settles the write-off. A spending
// undone before the upgrade gave its points to the member already (an
// upgrade tester found the migration still counting that write-off as
// owed, and the member's next return to the lot taken for it): it counts
// as recovered.
func TestWriteOffMigrationFindsEarlierReversals(t *testing.T) {
	l := isolatedLedger(t)
	f := newFixtureOn(t, l, core.Program{})
	ctx := context.Background()
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 700,
		CancelWindowSeconds: 3600})
	f.enroll("ana")
	bill := f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
	billTxn := f.lastTxn()
	o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug"}))
	f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: billTxn, Reason: "bill"})

	// Ben's order was cancelled as an earlier version did it: no record of
	// the write-off, the 700 back to the reversed credit's lot.
	f.enroll("ben")
	benBill := f.creditAt("ben", 1000, f.now.AddDate(1, 0, 0))
	benTxn := f.lastTxn()
	ob := orderOf(t, f.do(core.KindOrderPlace, "ben", f.txn(), core.PlaceOrder{Reward: "mug"}))
	f.ok(core.KindReverse, "ben", core.Reverse{OriginalTxnID: benTxn, Reason: "bill"})
	if _, err := l.pool.Exec(ctx, `DELETE FROM written_off WHERE lot_id = $1`,
		benBill); err != nil {
		t.Fatal(err)
	}
	if out := f.ok(core.KindOrderCancel, "ben", core.CancelOrder{OrderID: ob.ID}); out.Points != 700 {
		t.Fatalf("ben's cancellation as before: %d back, want 700", out.Points)
	}

	// As a database before the table was made.
	for _, q := range []string{`DROP TABLE written_off, written_off_recoveries, lot_covers`,
		`DELETE FROM schema_migrations WHERE name LIKE '0034_%'`} {
		if _, err := l.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := Migrate(ctx, l.pool, l.log); err != nil {
		t.Fatal(err)
	}
	out := f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
	if out.Points != 0 || out.Recovered != 700 {
		t.Fatalf("cancel after the migration: %d back, %d settled; want 0 and 700",
			out.Points, out.Recovered)
	}
	f.wantBalance("ana", 0, 0, 0)
	f.wantLot(bill, 1000, 0)

	// Ben spends his 700 and the spending is undone: they come back to him.
	f.ok(core.KindRedeem, "ben", core.Redeem{Points: 700, Reason: "spent"})
	spent := f.lastTxn()
	out = f.ok(core.KindReverse, "ben", core.Reverse{OriginalTxnID: spent, Reason: "undone"})
	if out.Points != 700 || out.Recovered != 0 {
		t.Fatalf("ben's reversal after the migration: %d back, %d settled; want 700 and 0",
			out.Points, out.Recovered)
	}
	f.wantBalance("ben", 700, 0, 0)
	f.check()
}

// lastTxn is the transaction id f.txn gave last.
func (f *fixture) lastTxn() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("%s-t%d", f.prog, f.seq)
}

// Regression test of defects an attack found (against 4d57008, the first
// form of the write-off mend), now mended; the scenarios as found:
//
// A credit of 500 spent on a mug and then reversed (500 written off), the
// member merged into another, and the order cancelled: the survivor got the
// 500, the write-off was never settled. The same with a redemption reversed
// after the merge, and with a partner's refunds of a payment in two parts.
// Points coming back to the lots of a member since merged settle the
// write-off as they do for the member itself.
func TestWriteOffSettledAfterMerge(t *testing.T) {
	for _, undo := range []string{"cancel", "reverse", "refund"} {
		t.Run(undo, func(t *testing.T) {
			f := newFixture(t, core.Program{})
			bar := partnerCmds{f: f, source: core.PartnerSource("bar-" + f.prog)}
			f.enroll("a")
			f.enroll("b")
			f.creditAt("a", 500, f.now.AddDate(1, 0, 0))
			bill := f.lastTxn()
			f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 500,
				CancelWindowSeconds: 3600})
			var orderID, spent string
			pay := f.prog + "-pay"
			switch undo {
			case "cancel":
				orderID = orderOf(t, f.do(core.KindOrderPlace, "a", f.txn(),
					core.PlaceOrder{Reward: "mug"})).ID
			case "reverse":
				f.ok(core.KindRedeem, "a", core.Redeem{Points: 500, Reason: "spent"})
				spent = f.lastTxn()
			case "refund":
				outcomeOf(t, bar.do(core.KindAuthorize, "a", pay, core.Authorize{Points: 500}))
				outcomeOf(t, bar.do(core.KindCapture, "a", pay+"-c",
					core.Capture{HoldTxnID: pay}))
			}
			if r := f.ok(core.KindReverse, "a", core.Reverse{OriginalTxnID: bill,
				Reason: "bill"}); r.Written != 500 {
				t.Fatalf("reversal wrote off %d, want 500", r.Written)
			}
			f.ok(core.KindMerge, "a", core.Merge{Into: "b"})
			var back, settled core.Points
			switch undo {
			case "cancel":
				o := f.ok(core.KindOrderCancel, "b", core.CancelOrder{OrderID: orderID})
				back, settled = o.Points, o.Recovered
			case "reverse":
				o := f.ok(core.KindReverse, "b", core.Reverse{OriginalTxnID: spent,
					Reason: "undone"})
				back, settled = o.Points, o.Recovered
			case "refund":
				for _, n := range []core.Points{200, 0} {
					o := outcomeOf(t, bar.do(core.KindPartnerRefund, "b", f.txn(),
						core.PartnerRefund{HoldTxnID: pay, Points: n}))
					back, settled = back+o.Points, settled+o.Recovered
				}
			}
			if back != 0 || settled != 500 {
				t.Fatalf("after the merge: %d back, %d settling the write-off; want 0 and 500",
					back, settled)
			}
			f.wantBalance("b", 0, 0, 0)
			f.check()
		})
	}
}

// Regression test of a defect an attack found (against 4d57008), now
// mended; the scenario as found:
//
// Credits A 300, B 200 and C 150 (expiring in that order); a partner payment
// of 550 took A, B and 50 of C; A was reversed (100 taken from C, 200
// written off), then B (200 written off). The partner refunded in four
// parts: the member ended with 250, B's lot refilled past its share while
// A's write-off kept 100 unsettled; one full refund gave the right 150.
// Each part now counts what earlier parts settled on a lot as given back
// to it.
func TestPartnerRefundInPartsSettlesEachWriteOffOnce(t *testing.T) {
	f := newFixture(t, core.Program{})
	bar := partnerCmds{f: f, source: core.PartnerSource("bar-" + f.prog)}
	f.enroll("ana")
	f.creditAt("ana", 300, f.now.AddDate(1, 0, 0))
	a := f.lastTxn()
	f.creditAt("ana", 200, f.now.AddDate(1, 1, 0))
	b := f.lastTxn()
	f.creditAt("ana", 150, f.now.AddDate(2, 0, 0))
	pay := f.prog + "-pay"
	outcomeOf(t, bar.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 550}))
	outcomeOf(t, bar.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}))
	f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: a, Reason: "a"})
	f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: b, Reason: "b"})
	f.wantBalance("ana", 0, 0, 0)
	var settled core.Points
	for _, n := range []core.Points{100, 50, 200, 0} {
		o := outcomeOf(t, bar.do(core.KindPartnerRefund, "ana", f.txn(),
			core.PartnerRefund{HoldTxnID: pay, Points: n}))
		settled += o.Recovered
	}
	if settled != 400 {
		t.Fatalf("the refunds settled %d of the write-offs, want all 400", settled)
	}
	// (100 of the 150 come back in A's lot, with A's expiry, though the
	// reversal of A took them from C: the capture's lots are what the
	// refund knows of where its points came from.)
	f.wantBalance("ana", 150, 0, 0)
	f.check()
}

// A write-off is settled before a debt is repaid: a member who owes 200
// (the program allowing it since) and has 500 written off ends owing 200
// when the spending of those 500 is undone.
func TestWriteOffSettledBeforeDebt(t *testing.T) {
	f := newFixture(t, core.Program{Name: "P", NegativeBalance: core.NegativeForbid})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 500, Reason: "A"})
	a := f.lastTxn()
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 500,
		CancelWindowSeconds: 3600})
	o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug"}))
	f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: a, Reason: "A"})
	f.ok(core.KindProgramUpsert, "", core.Program{Name: "P",
		NegativeBalance: core.NegativeAllow})
	f.ok(core.KindCredit, "ana", core.Credit{Points: 200, Reason: "B"})
	b := f.lastTxn()
	f.ok(core.KindRedeem, "ana", core.Redeem{Points: 200, Reason: "spent"})
	f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: b, Reason: "B"})
	f.wantBalance("ana", -200, 0, 0)
	if out := f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID}); out.Points != 0 ||
		out.Recovered != 500 {
		t.Fatalf("cancel: %d back, %d settled; want 0 and 500", out.Points, out.Recovered)
	}
	f.wantBalance("ana", -200, 0, 0)
	f.check()
}
