package postgres

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// late16Buy is a partner's money purchase for member ref: it earns at the
// program's rate, attributed to the partner as the gateway attributes it.
func late16Buy(t *testing.T, p partnerCmds, ref, amount string) {
	t.Helper()
	r := p.do(core.KindAccrue, ref, p.f.txn(), core.Accrue{EventType: "partner_purchase",
		Amount: amount, Partner: partnerOf(p.source)})
	if r.Status != bus.StatusOK {
		t.Fatalf("purchase of %s: %+v", amount, r.Error)
	}
}

// late16Refund is a partner's refund of a money purchase (a clawback).
func late16Refund(t *testing.T, p partnerCmds, ref, amount string) core.Outcome {
	t.Helper()
	r := p.do(core.KindPartnerClawback, ref, p.f.txn(), core.PartnerClawback{Amount: amount})
	if r.Status != bus.StatusOK {
		t.Fatalf("refund of %s: %s %+v", amount, r.Status, r.Error)
	}
	var o core.Outcome
	if err := json.Unmarshal(r.Data, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

// Regression test of a defect a late attack found (against 3b17776), now
// mended; the scenario as found:
//
// A partner that only ever took points as payment (authorize, capture) and
// gave some back in two refunds of that payment never gave the member any
// points: a refund of a money purchase it then sends must take nothing.
// The second and later refunds of a payment are reversal postings with the
// partner and no reverses_id, which partnerPointsLeft counts as if they
// were what the partner's purchases gave.
func TestLate16ClawbackIgnoresPaymentRefunds(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	shop := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1000, Reason: "welcome"})
	pay := f.prog + "-pay"
	outcomeOf(t, shop.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 500}))
	outcomeOf(t, shop.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}))
	outcomeOf(t, shop.do(core.KindPartnerRefund, "ana", pay+"-r1",
		core.PartnerRefund{HoldTxnID: pay, Points: 100}))
	outcomeOf(t, shop.do(core.KindPartnerRefund, "ana", pay+"-r2",
		core.PartnerRefund{HoldTxnID: pay, Points: 400}))
	f.wantBalance("ana", 1000, 0, 0)

	if o := late16Refund(t, shop, "ana", "400"); o.Points != 0 || o.Written != 0 {
		t.Errorf("refund of a purchase by a partner whose purchases gave nothing: %+v, "+
			"want nothing taken", o)
	}
	f.wantBalance("ana", 1000, 0, 0)
	f.check()
}

// Regression test of a defect a late attack found (against 3b17776), now
// mended; the scenario as found:
//
// A refund that found the purchase's points already spent writes off what
// it could not take: the partner has then taken back all its purchase gave.
// A later refund must not reach points the member earned elsewhere since.
func TestLate16ClawbackWrittenOffNotClaimedAgain(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	shop := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	late16Buy(t, shop, "ana", "450")
	f.ok(core.KindRedeem, "ana", core.Redeem{Points: 400, Reason: "spent"})
	f.wantBalance("ana", 50, 0, 0)
	if o := late16Refund(t, shop, "ana", "450"); o.Points != -50 || o.Written != 400 {
		t.Fatalf("first refund: %+v, want 50 taken and 400 written off", o)
	}
	f.ok(core.KindCredit, "ana", core.Credit{Points: 400, Reason: "birthday"})
	f.wantBalance("ana", 400, 0, 0)
	if o := late16Refund(t, shop, "ana", "450"); o.Points != 0 || o.Written != 0 {
		t.Errorf("second refund of a purchase already taken back in full (50 taken, 400 "+
			"written off): %+v, want nothing", o)
	}
	f.wantBalance("ana", 400, 0, 0)
	f.check()
}

// Regression test of a defect a late attack found (against 3b17776), now
// mended; the scenario as found:
//
// A member whose purchase points were merged into another member: the
// partner's refund of that purchase, addressed to either, takes them back
// from the survivor.
func TestLate16ClawbackAfterMergeFindsTheMergedPurchase(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	shop := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.enroll("ben")
	late16Buy(t, shop, "ana", "450")
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.wantBalance("ben", 450, 0, 0)
	o := late16Refund(t, shop, "ana", "450")
	if o.Points != -450 {
		t.Errorf("refund of the merged member's purchase: %+v, want -450", o)
	}
	f.wantBalance("ben", 0, 0, 0)
	f.check()
}

// Two refunds of the same purchase at once take its points once.
func TestLate16ClawbacksRacingTakeOnce(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	shop := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1000, Reason: "welcome"})
	late16Buy(t, shop, "ana", "450")
	res := f.parallel(
		f.as(shop.source, core.KindPartnerClawback, "ana", f.txn(),
			core.PartnerClawback{Amount: "450"}),
		f.as(shop.source, core.KindPartnerClawback, "ana", f.txn(),
			core.PartnerClawback{Amount: "450"}))
	var taken core.Points
	for _, r := range res {
		if r.Status != bus.StatusOK {
			t.Fatalf("refund: %s %+v", r.Status, r.Error)
		}
		var o core.Outcome
		if err := json.Unmarshal(r.Data, &o); err != nil {
			t.Fatal(err)
		}
		taken += o.Points
	}
	if taken != -450 {
		t.Fatalf("two racing refunds took %d, want -450 in all", taken)
	}
	f.wantBalance("ana", 1000, 0, 0)
	f.check()
}

// After the operator reversed one of two
// purchases, the partner takes back only the other.
func TestLate16ClawbackAfterOneOfTwoPurchasesReversed(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	shop := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	other := partnerCmds{f: f, source: "partner:cafe-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1000, Reason: "welcome"})
	late16Buy(t, shop, "ana", "300")
	late16Buy(t, shop, "ana", "200")
	late16Buy(t, other, "ana", "100")
	var first int64
	for _, a := range f.postingsOf("ana", core.PostAccrual) {
		if a.Points == 300 {
			first = a.ID
		}
	}
	f.ok(core.KindReverse, "ana", core.Reverse{PostingID: first, Reason: "wrong till"})
	f.wantBalance("ana", 1300, 0, 0)
	if o := late16Refund(t, shop, "ana", "99999"); o.Points != -200 {
		t.Fatalf("refund after one of two purchases was reversed: %+v, want -200", o)
	}
	f.wantBalance("ana", 1100, 0, 0)
	f.check()
}

// Regression test of a defect a late attack found, now mended.
//
// Purchase points still pending are what the partner's purchase gave; a
// refund of that purchase must not take the member's spendable welcome
// points in their place (the pending purchase points would then mature and
// the member would have lost points earned elsewhere).
func TestLate16ClawbackOfPendingPurchaseTakesItsOwnPoints(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown,
		PendingDays: 3})
	shop := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1000, Reason: "welcome"})
	f.setNow(f.now.Add(5 * 24 * time.Hour))
	f.sweep(f.now)
	f.wantBalance("ana", 1000, 0, 0)

	late16Buy(t, shop, "ana", "450")
	f.wantBalance("ana", 1000, 450, 0)
	if o := late16Refund(t, shop, "ana", "450"); o.Points != -450 {
		t.Errorf("the refund answers %d points, want -450 (taken from the pending ones)",
			o.Points)
	}
	if b := f.balance("ana").Balance; b.Available != 1000 {
		t.Errorf("after the refund of a purchase whose 450 points are pending: balance %+v; "+
			"want the 1000 welcome points untouched", b)
	}
	// Once the purchase points would have matured, the member must not
	// hold more than the welcome points.
	f.setNow(f.now.Add(5 * 24 * time.Hour))
	f.sweep(f.now)
	if b := f.balance("ana").Balance; b.Available+b.Pending != 1000 {
		t.Errorf("after the refunded purchase's pending period: balance %+v; want 1000 "+
			"(the welcome points, the purchase refunded)", b)
	}
	f.check()
}
