package postgres

import (
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// Regression tests of defects a second attack on the write-off mends found
// (against 9a4c5ce), now mended. In each, every operation but a credit (or
// none) is undone, and the member must end with what that credit alone
// gives, whatever the negative-balance policy.

// Two credits Z (expiring first) and L; an order spends Z; Z's reversal
// takes L's 100 to cover it; L's reversal writes off 100 on L; the order is
// cancelled. Its 100 came back to Z's lot, which owed nothing: the member
// kept them. Points coming back to a reversed credit's lot now go to the
// lots that covered its spending (and settle their write-offs there).
func TestReturnsGoToTheLotsThatCovered(t *testing.T) {
	for _, policy := range []string{core.NegativeAllow, core.NegativeForbid} {
		t.Run(policy, func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy})
			f.enroll("ana")
			f.creditAt("ana", 100, f.now.AddDate(1, 0, 0))
			z := f.lastTxn()
			f.creditAt("ana", 100, f.now.AddDate(2, 0, 0))
			l := f.lastTxn()
			f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
				CancelWindowSeconds: 3600})
			o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(),
				core.PlaceOrder{Reward: "mug"}))
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: z, Reason: "z"})
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: l, Reason: "l"})
			f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
			f.wantBalance("ana", 0, 0, 0)
			f.check()
		})
	}
}

// A credit A (ending in 10 days) spent on an order, a credit B (two years)
// whose 300 A's reversal took; A's lot ends; the order is cancelled. Its
// points went back to A's ended lot and expired at once: the member lost
// B's 300. They now go back to B's lot, with B's end.
func TestReturnsToAnEndedLotGoToTheCover(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.creditAt("ana", 500, f.now.AddDate(0, 0, 10))
	bill := f.lastTxn()
	b := f.creditAt("ana", 300, f.now.AddDate(2, 0, 0))
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 500,
		CancelWindowSeconds: 60 * 24 * 3600})
	o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug"}))
	if r := f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: bill,
		Reason: "bill"}); r.Written != 200 {
		t.Fatalf("reversal wrote off %d, want 200", r.Written)
	}
	f.setNow(f.now.AddDate(0, 0, 20))
	f.sweep(f.now)
	out := f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
	if out.Points != 300 || out.Recovered != 200 {
		t.Fatalf("cancel: %d back, %d settled; want 300 and 200", out.Points, out.Recovered)
	}
	f.wantBalance("ana", 300, 0, 0)
	f.wantLot(b, 300, 300)
	f.check()
}

// Two purchases of 100 at a partner; an order spends the first; the
// partner refunds both: the first refund takes the second purchase's 100,
// the second writes off 100, which was recorded on the lot the first
// refund emptied; the order's cancellation then gave the member 100. The
// write-off now goes to the lot the spending took.
func TestPurchaseRefundWriteOffOnTheSpentLot(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	cafe := partnerCmds{f: f, source: core.PartnerSource("cafe-" + f.prog)}
	f.enroll("ana")
	late16Buy(t, cafe, "ana", "100")
	late16Buy(t, cafe, "ana", "100")
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		CancelWindowSeconds: 3600})
	o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug"}))
	late16Refund(t, cafe, "ana", "100")
	if r := late16Refund(t, cafe, "ana", "100"); r.Written != 100 {
		t.Fatalf("second refund wrote off %d, want 100", r.Written)
	}
	f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
	f.wantBalance("ana", 0, 0, 0)
	f.check()
}

// A purchase of 100 spent on an order, taken back twice: by the operator's
// reversal and by the partner's refund, in either order, with 100 earned
// elsewhere meanwhile. The second taking took those 100 (the first had
// written its part off, which the second did not count); the member ends
// with them now.
func TestPurchaseTakenBackOnceByOperatorAndPartner(t *testing.T) {
	for _, first := range []string{"operator", "partner"} {
		for _, policy := range []string{core.NegativeAllow, core.NegativeForbid} {
			t.Run(first+" first, "+policy, func(t *testing.T) {
				f := newFixture(t, core.Program{PointsPerUnit: "1",
					AccrualRounding: core.RoundDown, NegativeBalance: policy})
				cafe := partnerCmds{f: f, source: core.PartnerSource("cafe-" + f.prog)}
				f.enroll("ana")
				late16Buy(t, cafe, "ana", "100")
				buy := f.lastTxn()
				f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug",
					Points: 100, CancelWindowSeconds: 3600})
				o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(),
					core.PlaceOrder{Reward: "mug"}))
				operator := func() {
					outcomeOf(t, cafe.do(core.KindReverse, "ana", f.txn(),
						core.Reverse{OriginalTxnID: buy, Reason: "op"}))
				}
				if first == "operator" {
					operator()
					f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "bill"})
					late16Refund(t, cafe, "ana", "100")
				} else {
					late16Refund(t, cafe, "ana", "100")
					f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "bill"})
					operator()
				}
				f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
				f.wantBalance("ana", 100, 0, 0)
				f.check()
			})
		}
	}
}

// Regression test of defects an attack on the covers found (against
// 23f3144), now mended; the scenarios as found:
//
// Credits A, B and C of 100 (ending in one, two and three years); an order
// spends A; A's reversal takes B's 100, B's takes C's, C's writes off 100;
// the order is cancelled: its 100 went to B and stopped there, C's
// write-off stayed open, and the member kept 100 of credits all reversed.
// And with C credited after A's reversal (so only C stands at the end), the
// 100 stayed in B's lot with B's end date instead of C's. The points now
// follow the covers from lot to lot.
func TestReturnsFollowChainsOfCovers(t *testing.T) {
	t.Run("all reversed", func(t *testing.T) {
		f := newFixture(t, core.Program{})
		f.enroll("ana")
		var txns []string
		for years := range 3 {
			f.creditAt("ana", 100, f.now.AddDate(years+1, 0, 0))
			txns = append(txns, f.lastTxn())
		}
		f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
			CancelWindowSeconds: 3600})
		o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(),
			core.PlaceOrder{Reward: "mug"}))
		for _, txn := range txns {
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: txn, Reason: "undone"})
		}
		f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
		f.wantBalance("ana", 0, 0, 0)
		f.check()
	})
	t.Run("the last one stands", func(t *testing.T) {
		f := newFixture(t, core.Program{})
		f.enroll("ana")
		f.creditAt("ana", 100, f.now.AddDate(1, 0, 0))
		a := f.lastTxn()
		f.creditAt("ana", 100, f.now.AddDate(3, 0, 0))
		b := f.lastTxn()
		f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
			CancelWindowSeconds: 3600})
		o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(),
			core.PlaceOrder{Reward: "mug"}))
		f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: a, Reason: "a"})
		c := f.creditAt("ana", 100, f.now.AddDate(2, 0, 0))
		f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: b, Reason: "b"})
		f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
		f.wantBalance("ana", 100, 0, 0)
		f.wantLot(c, 100, 100)
		f.check()
	})
}
