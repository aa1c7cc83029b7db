package postgres

import (
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Regression test of a defect a partner's attack found (against cf48e4e),
// now mended; the scenario as found:
//
// The refund of a purchase while the member's points were held by another
// payment took nothing and wrote the purchase's 50 points off, with no
// posting; the payment was then voided and the member kept the 50 points of
// the refunded purchase. Held points are still the member's: the refund is
// refused while they stand in the way, and taken once the payment is
// voided. Captured instead, the points are spent and the refund writes off
// what it cannot take.
func TestClawbackWaitsForHeldPoints(t *testing.T) {
	for _, end := range []string{core.KindRelease, core.KindCapture} {
		t.Run(end, func(t *testing.T) {
			f := newFixture(t, core.Program{PointsPerUnit: "1",
				AccrualRounding: core.RoundDown})
			cafe := partnerCmds{f: f, source: "partner:cafe-" + f.prog}
			bar := partnerCmds{f: f, source: "partner:bar-" + f.prog}
			f.enroll("ana")
			f.ok(core.KindCredit, "ana", core.Credit{Points: 95, Reason: "welcome"})
			late16Buy(t, cafe, "ana", "50")
			pay := f.prog + "-pay"
			outcomeOf(t, bar.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 145}))
			f.wantBalance("ana", 0, 0, 145)

			r := cafe.do(core.KindPartnerClawback, "ana", f.txn(),
				core.PartnerClawback{Amount: "50"})
			if r.Status != bus.StatusRejected || r.Error == nil ||
				r.Error.Kind != string(core.Conflict) || r.Error.Field != "member" {
				t.Fatalf("refund while the points are held: %s %+v, want a conflict on member",
					r.Status, r.Error)
			}
			f.wantBalance("ana", 0, 0, 145)

			switch end {
			case core.KindRelease:
				outcomeOf(t, bar.do(core.KindRelease, "ana", pay+"-v",
					core.Release{HoldTxnID: pay}))
				f.wantBalance("ana", 145, 0, 0)
				if o := late16Refund(t, cafe, "ana", "50"); o.Points != -50 || o.Written != 0 {
					t.Fatalf("refund once the payment is voided: %+v, want 50 taken", o)
				}
				f.wantBalance("ana", 95, 0, 0)
			case core.KindCapture:
				outcomeOf(t, bar.do(core.KindCapture, "ana", pay+"-c",
					core.Capture{HoldTxnID: pay}))
				f.wantBalance("ana", 0, 0, 0)
				if o := late16Refund(t, cafe, "ana", "50"); o.Points != 0 || o.Written != 50 {
					t.Fatalf("refund once the payment is captured: %+v, want 50 written off", o)
				}
				f.wantBalance("ana", 0, 0, 0)
			}
			f.check()
		})
	}
}

// Regression test of a defect a partner's attack found (against cf48e4e),
// now mended; the scenario as found:
//
// A purchase dated two years back earned 40 points that expired at once;
// its refund then took 40 points the member had earned in the program,
// though a refund never reaches points earned elsewhere. What expired of a
// partner's points is no longer the partner's to take back: here nothing of
// the first purchase, and of a second one half spent and half expired, the
// part spent.
func TestClawbackLeavesExpiredPartnerPoints(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown,
		ExpiryUnit: core.ExpiryMonths, ExpiryLength: 12})
	cafe := partnerCmds{f: f, source: "partner:cafe-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "bills"})
	buyAt := func(amount string, at time.Time) {
		t.Helper()
		c := f.as(cafe.source, core.KindAccrue, "ana", f.txn(), core.Accrue{
			EventType: "partner_purchase", Amount: amount, Partner: partnerOf(cafe.source)})
		c.OccurredAt = at
		c.Seal()
		if r := f.apply(c); r.Status != bus.StatusOK {
			t.Fatalf("purchase of %s at %s: %+v", amount, at, r.Error)
		}
	}
	buyAt("40", f.now.AddDate(-2, 0, 0))
	f.wantBalance("ana", 100, 0, 0)
	if o := late16Refund(t, cafe, "ana", "40"); o.Points != 0 || o.Written != 0 {
		t.Fatalf("refund of a purchase whose points expired: %+v, want nothing taken", o)
	}
	f.wantBalance("ana", 100, 0, 0)

	// 60 more at the cafe, 30 of them spent (the oldest go first: the 60 of
	// the cafe expire before the 100 earned today), then the rest expires.
	buyAt("60", f.now.AddDate(0, -11, -20))
	f.ok(core.KindRedeem, "ana", core.Redeem{Points: 30, Reason: "coffee"})
	f.wantBalance("ana", 130, 0, 0)
	f.setNow(f.now.AddDate(0, 0, 15))
	f.sweep(f.now)
	f.wantBalance("ana", 100, 0, 0)
	if o := late16Refund(t, cafe, "ana", "100"); o.Points != -30 || o.Written != 0 {
		t.Fatalf("refund of both purchases: %+v, want the 30 spent taken back", o)
	}
	f.wantBalance("ana", 70, 0, 0)
	f.check()
}

// Regression test of a defect an attack found (against 4d57008), now
// mended; the scenario as found:
//
// A partner's purchase earned 500; the member spent them on a mug; the
// partner refunded the purchase, which wrote off the 500 (the program
// forbids a negative balance); the order was then cancelled and the member
// kept the 500. Allowing a debt, the same history ended at 0. What a
// purchase refund writes off stays owed on the purchase's lots, and the
// points that come back to them settle it; with 200 earned elsewhere, the
// member ends with those 200.
func TestClawbackWriteOffSettledWhenSpendingComesBack(t *testing.T) {
	for _, c := range []struct {
		name      string
		policy    string
		elsewhere core.Points
		want      core.Points
	}{
		{"forbid", core.NegativeForbid, 0, 0},
		{"allow", core.NegativeAllow, 0, 0},
		{"forbid with points earned elsewhere", core.NegativeForbid, 200, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown,
				NegativeBalance: c.policy})
			cafe := partnerCmds{f: f, source: core.PartnerSource("cafe-" + f.prog)}
			f.enroll("ana")
			late16Buy(t, cafe, "ana", "500")
			if c.elsewhere > 0 {
				f.ok(core.KindCredit, "ana", core.Credit{Points: c.elsewhere, Reason: "bills"})
			}
			f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug",
				Points: 500 + c.elsewhere/2, CancelWindowSeconds: 3600})
			o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(),
				core.PlaceOrder{Reward: "mug"}))
			late16Refund(t, cafe, "ana", "500")
			f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
			f.wantBalance("ana", c.want, 0, 0)
			f.check()
		})
	}
}
