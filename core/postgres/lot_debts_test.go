package postgres

import (
	"context"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// A debt a reversal leaves in a program that allows one is the reversed
// credit's lot's (lot_debts), as a write-off is in a program that forbids
// debt. Points of another lot that repay it first (a later credit, points
// maturing, points a payment releases) go back to that lot when the
// spending is undone, instead of staying on the reversed credit's lot,
// whose expiry is earlier: each history ends with the points on the same
// lots whichever the policy, and the balance is the same after the
// reversed credit's lot has expired. (Before, the allowing program kept the
// points on the reversed lot and lost them at its expiry.)
func TestDebtRepaidElsewhereFollowsTheUndo(t *testing.T) {
	policies := []string{core.NegativeAllow, core.NegativeForbid}
	// expireAndCheck moves past the reversed lot's expiry and checks what
	// is left.
	expireAndCheck := func(f *fixture, want core.Points) {
		f.t.Helper()
		at := f.now.AddDate(1, 0, 2)
		f.setNow(at)
		f.sweep(at)
		f.wantBalance("ana", want, 0, 0)
		f.check()
	}
	for _, policy := range policies {
		// Bill A of 1000 spent and reversed; a credit B of 1000 then
		// repays the debt (allow) or stays whole (forbid); the
		// redemption is reversed.
		for _, batch := range []bool{false, true} {
			t.Run(policy+"/later credit"+map[bool]string{true: " in a batch"}[batch], func(t *testing.T) {
				f := newFixture(t, core.Program{NegativeBalance: policy})
				f.enroll("ana")
				a := f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
				aTxn := f.lastTxn()
				f.ok(core.KindRedeem, "ana", core.Redeem{Points: 1000, Reason: "tv"})
				spent := f.lastTxn()
				f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: aTxn, Reason: "bill"})
				var b int64
				if batch {
					// Through a batch of the bus, whose set-based path leaves
					// a member in debt to the per-command one.
					exp := f.now.AddDate(2, 0, 0)
					out, err := f.l.ApplyBatch(context.Background(), []bus.Command{
						f.command(core.KindCredit, "ana", f.txn(), core.Credit{Points: 1000,
							Reason: "seed", ExpiresAt: &exp})})
					if err != nil {
						t.Fatal(err)
					}
					b = lotOf(t, outcomeOf(t, out[0].Result))
				} else {
					b = f.creditAt("ana", 1000, f.now.AddDate(2, 0, 0))
				}
				f.wantBalance("ana", map[string]core.Points{core.NegativeAllow: 0,
					core.NegativeForbid: 1000}[policy], 0, 0)
				out := f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent,
					Reason: "tv returned"})
				if policy == core.NegativeAllow && out.Points != 1000 {
					t.Fatalf("undo: %d points back, want 1000", out.Points)
				}
				f.wantBalance("ana", 1000, 0, 0)
				f.wantLot(a, 1000, 0)
				f.wantLot(b, 1000, 1000)
				expireAndCheck(f, 1000)
			})
		}

		// The same with a credit C that is pending when the bill is
		// reversed, and matures afterwards.
		t.Run(policy+"/maturing credit", func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy, PendingDays: 10})
			f.enroll("ana")
			a := f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
			aTxn := f.lastTxn()
			f.setNow(f.now.AddDate(0, 0, 11))
			f.sweep(f.now)
			f.ok(core.KindRedeem, "ana", core.Redeem{Points: 1000, Reason: "tv"})
			spent := f.lastTxn()
			c := f.creditAt("ana", 1000, f.now.AddDate(2, 0, 0))
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: aTxn, Reason: "bill"})
			f.setNow(f.now.AddDate(0, 0, 11))
			f.sweep(f.now)
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent,
				Reason: "tv returned"})
			f.wantBalance("ana", 1000, 0, 0)
			f.wantLot(a, 1000, 0)
			f.wantLot(c, 1000, 1000)
			expireAndCheck(f, 1000)
		})

		// The same with points a partner's payment held (H) and then
		// released: the release repays the debt in the allowing program.
		t.Run(policy+"/released hold", func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy})
			bar := partnerCmds{f: f, source: "partner:bar-" + f.prog}
			f.enroll("ana")
			a := f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
			aTxn := f.lastTxn()
			h := f.creditAt("ana", 300, f.now.AddDate(2, 0, 0))
			f.ok(core.KindRedeem, "ana", core.Redeem{Points: 1000, Reason: "tv"})
			spent := f.lastTxn()
			pay := f.prog + "-pay"
			outcomeOf(t, bar.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 300}))
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: aTxn, Reason: "bill"})
			outcomeOf(t, bar.do(core.KindRelease, "ana", pay+"-v", core.Release{HoldTxnID: pay}))
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent,
				Reason: "tv returned"})
			f.wantBalance("ana", 300, 0, 0)
			f.wantLot(a, 1000, 0)
			f.wantLot(h, 300, 300)
			expireAndCheck(f, 300)
		})

		// A partner's refund of the money purchase X whose points were
		// spent leaves them owed on X (allow) or written off (forbid); a
		// credit B then comes, and the redemption is reversed.
		t.Run(policy+"/partner refund", func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy, PointsPerUnit: "1",
				AccrualRounding: core.RoundDown})
			cafe := partnerCmds{f: f, source: "partner:cafe-" + f.prog}
			f.enroll("ana")
			r := cafe.do(core.KindAccrue, "ana", f.txn(), core.Accrue{
				EventType: "partner_purchase", Amount: "500", Partner: partnerOf(cafe.source)})
			x := lotOf(t, outcomeOf(t, r))
			f.ok(core.KindRedeem, "ana", core.Redeem{Points: 500, Reason: "tv"})
			spent := f.lastTxn()
			if r := cafe.do(core.KindPartnerClawback, "ana", f.txn(),
				core.PartnerClawback{Amount: "500"}); r.Status != bus.StatusOK {
				t.Fatalf("refund: %s %+v", r.Status, r.Error)
			}
			b := f.creditAt("ana", 500, f.now.AddDate(2, 0, 0))
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent,
				Reason: "tv returned"})
			f.wantBalance("ana", 500, 0, 0)
			f.wantLot(x, 500, 0)
			f.wantLot(b, 500, 500)
			expireAndCheck(f, 500)
		})
	}
}

// A partner's refund of a money purchase takes back the points that
// purchase made, and the history ends with the member's true balance under
// either policy (an attack on the debt mend found a program that forbids
// debt handing out points the member was never owed):
//
//   - the refund takes the purchase's lot first, not the member's soonest
//     expiring points, which a reversal of their credit then counted as
//     spending of its own and wrote off where nothing came back;
//   - a purchase's lot emptied to cover a reversed credit's spending is
//     spent as much as one a redemption emptied: the refund's write-off is
//     recorded on it, and settled when those points come back.
func TestPartnerRefundAgainstItsPurchase(t *testing.T) {
	for _, policy := range []string{core.NegativeAllow, core.NegativeForbid} {
		setup := func(t *testing.T) (*fixture, partnerCmds) {
			f := newFixture(t, core.Program{NegativeBalance: policy, PointsPerUnit: "1",
				AccrualRounding: core.RoundDown})
			f.enroll("ana")
			return f, partnerCmds{f: f, source: "partner:cafe-" + f.prog}
		}
		buy := func(t *testing.T, f *fixture, cafe partnerCmds, amount string) int64 {
			r := cafe.do(core.KindAccrue, "ana", f.txn(), core.Accrue{
				EventType: "partner_purchase", Amount: amount, Partner: partnerOf(cafe.source)})
			return lotOf(t, outcomeOf(t, r))
		}
		refund := func(t *testing.T, f *fixture, cafe partnerCmds, amount string) {
			if r := cafe.do(core.KindPartnerClawback, "ana", f.txn(),
				core.PartnerClawback{Amount: amount}); r.Status != bus.StatusOK {
				t.Fatalf("refund: %s %+v", r.Status, r.Error)
			}
		}
		// Earned 500 at the cafe and 800 on a bill; the cafe refunds 400
		// of its purchase; 900 are spent; the bill is reversed; the
		// spending is undone: 500 + 800 - 400 - 800 = 100 left.
		t.Run(policy+"/refund before the spending", func(t *testing.T) {
			f, cafe := setup(t)
			x := buy(t, f, cafe, "500")
			a := f.creditAt("ana", 800, f.now.AddDate(1, 0, 0))
			aTxn := f.lastTxn()
			refund(t, f, cafe, "400")
			f.wantLot(x, 500, 100)
			f.wantLot(a, 800, 800)
			f.ok(core.KindRedeem, "ana", core.Redeem{Points: 900, Reason: "tv"})
			spent := f.lastTxn()
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: aTxn, Reason: "bill"})
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent, Reason: "back"})
			f.wantBalance("ana", 100, 0, 0)
			f.wantLot(x, 500, 100)
			f.wantLot(a, 800, 0)
			f.check()
		})
		// Earned 100 at the cafe and 500 on a bill; 200 spent from the
		// bill; the bill is reversed (the cafe's 100 cover its spending);
		// the cafe refunds its whole purchase; the spending is undone:
		// 100 + 500 - 500 - 100 = 0 left.
		t.Run(policy+"/refund of a lot that covered", func(t *testing.T) {
			f, cafe := setup(t)
			x := buy(t, f, cafe, "100")
			a := f.creditAt("ana", 500, f.now.AddDate(1, 0, 0))
			aTxn := f.lastTxn()
			f.ok(core.KindRedeem, "ana", core.Redeem{Points: 200, Reason: "tv"})
			spent := f.lastTxn()
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: aTxn, Reason: "bill"})
			f.wantLot(x, 100, 0)
			refund(t, f, cafe, "500")
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent, Reason: "back"})
			f.wantBalance("ana", 0, 0, 0)
			f.wantLot(x, 100, 0)
			f.wantLot(a, 500, 0)
			f.check()
		})
	}
}

// A partner's refund in parts whose first part repays a debt (allow)
// counts those points as given back to their lot: the next part goes to
// the payment's other lots. (It used to count the lot as still owed them;
// once the debt's lot got its spending back and that lot its cover, the
// next part overfilled it, and the refund failed on the lots' check.)
func TestPartnerRefundInPartsAfterRepayingADebt(t *testing.T) {
	for _, policy := range []string{core.NegativeAllow, core.NegativeForbid} {
		t.Run(policy, func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy})
			bar := partnerCmds{f: f, source: "partner:bar-" + f.prog}
			f.enroll("ana")
			q := f.creditAt("ana", 100, f.now.AddDate(1, 1, 0))
			p := f.creditAt("ana", 300, f.now.AddDate(2, 0, 0))
			d := f.creditAt("ana", 500, f.now.AddDate(1, 0, 0))
			dTxn := f.lastTxn()
			f.ok(core.KindRedeem, "ana", core.Redeem{Points: 500, Reason: "tv"})
			spent := f.lastTxn()
			pay := f.prog + "-pay"
			outcomeOf(t, bar.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 400}))
			outcomeOf(t, bar.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}))
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: dTxn, Reason: "bill"})
			outcomeOf(t, bar.do(core.KindPartnerRefund, "ana", pay+"-r1",
				core.PartnerRefund{HoldTxnID: pay, Points: 100}))
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent, Reason: "back"})
			outcomeOf(t, bar.do(core.KindPartnerRefund, "ana", pay+"-r2",
				core.PartnerRefund{HoldTxnID: pay, Points: 300}))
			f.wantBalance("ana", 400, 0, 0)
			f.wantLot(p, 300, 300)
			f.wantLot(q, 100, 100)
			f.wantLot(d, 500, 0)
			f.check()
		})
	}
}

// When only part of a reversed credit's spending comes back, it settles
// the write-off before the lots that covered the reversal get their points
// back: the member is owed nothing until the write-off is settled. (Covers
// first gave a program that forbids debt 300 points at once, the write-off
// still open, where a program that allows debt still had the member owing
// 200.) Once all of it is back, both end the same.
func TestPartOfTheSpendingBackSettlesFirst(t *testing.T) {
	for _, policy := range []string{core.NegativeAllow, core.NegativeForbid} {
		t.Run(policy, func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy})
			f.enroll("ana")
			a := f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
			aTxn := f.lastTxn()
			y := f.creditAt("ana", 300, f.now.AddDate(2, 0, 0))
			var spent []string
			for range 2 {
				f.ok(core.KindRedeem, "ana", core.Redeem{Points: 500, Reason: "tv"})
				spent = append(spent, f.lastTxn())
			}
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: aTxn, Reason: "bill"})
			f.wantLot(y, 300, 0)
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent[0], Reason: "back"})
			want := map[string]core.Points{core.NegativeAllow: -200, core.NegativeForbid: 0}
			f.wantBalance("ana", want[policy], 0, 0)
			f.wantLot(y, 300, 0)
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: spent[1], Reason: "back"})
			f.wantBalance("ana", 300, 0, 0)
			f.wantLot(a, 1000, 0)
			f.wantLot(y, 300, 300)
			f.check()
		})
	}
}

// A partner's purchase refund for a member who bought before being merged
// into another knows the purchase's lot by the merge's copy of it
// (origin_lot_id). An attacker found, with the copies tied to nothing:
//
//   - pending: the refund wrote the purchase's points off and left them
//     pending, to mature as the member's: 100 points for nothing;
//   - expired: the copy's expiry did not count, and the refund took 100 of
//     the points the member earned elsewhere;
//   - spendable: the refund took the member's soonest-expiring credit and
//     left the purchase's points standing.
func TestPartnerRefundAfterAMerge(t *testing.T) {
	for _, tc := range []struct {
		name string
		prog core.Program
		// ana's credit, old's purchase of 100 merged into ana, the clock
		// moved by before, the refund of 100, the clock moved by after.
		credit             core.Points
		creditExpires      int // days
		before, after      int // days the clock moves (and the sweep runs)
		available, pending core.Points
	}{
		{name: "pending", prog: core.Program{PendingDays: 10}, credit: 50, creditExpires: 365,
			after: 11, available: 50},
		{name: "expired", prog: core.Program{ExpiryUnit: core.ExpiryDays, ExpiryLength: 30},
			credit: 500, creditExpires: 365, before: 31, available: 500},
		{name: "spendable", credit: 100, creditExpires: 30, after: 60, available: 0},
	} {
		for _, policy := range []string{core.NegativeForbid, core.NegativeAllow} {
			t.Run(tc.name+"/"+policy, func(t *testing.T) {
				prog := tc.prog
				prog.NegativeBalance, prog.PointsPerUnit = policy, "1"
				f := newFixture(t, prog)
				cafe := partnerCmds{f: f, source: "partner:cafe-" + f.prog}
				f.enroll("ana")
				f.enroll("old")
				f.creditAt("ana", tc.credit, f.now.AddDate(0, 0, tc.creditExpires))
				late16Buy(t, cafe, "old", "100")
				f.ok(core.KindMerge, "old", core.Merge{Into: "ana"})
				if tc.before > 0 {
					f.setNow(f.now.AddDate(0, 0, tc.before))
					f.sweep(f.now)
				}
				late16Refund(t, cafe, "ana", "100")
				if tc.after > 0 {
					f.setNow(f.now.AddDate(0, 0, tc.after))
					f.sweep(f.now)
				}
				f.wantBalance("ana", tc.available, tc.pending, 0)
				f.check()
			})
		}
	}
}

// A partner's purchase refund that finds the purchase's points spent takes
// the member's other points instead; those stand for the purchase lot's
// spent points as covers do, so the spending, undone, gives them back to
// the lot they came from. Before, both policies kept the refunded
// purchase's lot (which never expires) and lost the bill's points: equal
// balances, but forbid ended with 300 on the purchase's lot and none on
// the bill's.
func TestPartnerRefundCoveredByOtherPoints(t *testing.T) {
	for _, policy := range []string{core.NegativeAllow, core.NegativeForbid} {
		t.Run(policy, func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy, PointsPerUnit: "1",
				AccrualRounding: core.RoundDown})
			cafe := partnerCmds{f: f, source: "partner:cafe-" + f.prog}
			f.enroll("ana")
			a := f.creditAt("ana", 500, f.now.AddDate(0, 4, 0))
			aTxn := f.lastTxn()
			r := cafe.do(core.KindAccrue, "ana", f.txn(), core.Accrue{
				EventType: "partner_purchase", Amount: "400", Partner: partnerOf(cafe.source)})
			x := lotOf(t, outcomeOf(t, r))
			var spent []string
			for _, n := range []core.Points{400, 250} {
				f.ok(core.KindRedeem, "ana", core.Redeem{Points: n, Reason: "tv"})
				spent = append(spent, f.lastTxn())
			}
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: aTxn, Reason: "bill"})
			b := f.creditAt("ana", 300, f.now.AddDate(0, 6, 0))
			late16Refund(t, cafe, "ana", "500")
			for _, txn := range spent {
				f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: txn, Reason: "back"})
			}
			// Earned 500 (reversed) + 400 (refunded) + 300: 300 left, the
			// bill credit's.
			f.wantBalance("ana", 300, 0, 0)
			f.wantLot(a, 500, 0)
			f.wantLot(x, 400, 0)
			f.wantLot(b, 300, 300)
			f.check()
		})
	}
}
