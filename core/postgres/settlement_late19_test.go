package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// A payment is taken off a partner's settlement once whichever way it came
// back: a partner's partial refund bars the operator's reversal; a
// reversal in a later period is that period's line; a reversal through a
// chain of merges is refused to the partner afterwards; the periods add up.
func TestLate19SettlementTakesEachPaymentBackOnce(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	shop := "shop-" + f.prog
	f.ok(core.KindPartnerUpsert, "", core.Partner{Code: shop, Name: "Shop", Currency: "CLP",
		PointValue: "1", CanBurn: true})
	p := partnerCmds{f: f, source: core.PartnerSource(shop)}
	for _, ref := range []string{"ana", "ben", "carl", "dan", "eve"} {
		f.enroll(ref)
		f.ok(core.KindCredit, ref, core.Credit{Points: 100, Reason: "seed"})
	}
	start := f.now
	pay := func(ref, txn string, points core.Points) int64 {
		t.Helper()
		outcomeOf(t, p.do(core.KindAuthorize, ref, txn, core.Authorize{Points: points}))
		outcomeOf(t, p.do(core.KindCapture, ref, txn+"-c", core.Capture{HoldTxnID: txn}))
		caps := f.postingsOf(ref, core.PostCapture)
		return caps[len(caps)-1].ID
	}
	anaCap := pay("ana", f.prog+"-a", 50)
	benCap := pay("ben", f.prog+"-b", 40)
	carlCap := pay("carl", f.prog+"-c", 30)

	// Ana's payment is partly refunded by the partner: the operator can no
	// longer reverse the capture whole.
	outcomeOf(t, p.do(core.KindPartnerRefund, "ana", f.prog+"-a-r1",
		core.PartnerRefund{HoldTxnID: f.prog + "-a", Points: 20}))
	f.refused(core.KindReverse, "ana", core.Reverse{PostingID: anaCap, Reason: "dispute"},
		core.Conflict)
	f.wantBalance("ana", 70, 0, 0)

	// Next day: ben's capture is reversed; carl, merged into dan and dan
	// into eve, has his reversed through eve.
	f.setNow(start.Add(24 * time.Hour))
	f.ok(core.KindReverse, "ben", core.Reverse{PostingID: benCap, Reason: "dispute"})
	f.ok(core.KindMerge, "carl", core.Merge{Into: "dan"})
	f.ok(core.KindMerge, "dan", core.Merge{Into: "eve"})
	f.ok(core.KindReverse, "eve", core.Reverse{PostingID: carlCap, Reason: "dispute"})
	f.refused(core.KindReverse, "eve", core.Reverse{PostingID: carlCap, Reason: "again"},
		core.Conflict)
	r := p.do(core.KindPartnerRefund, "eve", f.prog+"-c-r1",
		core.PartnerRefund{HoldTxnID: f.prog + "-c"})
	if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Field != "hold_txn_id" {
		t.Fatalf("partner refund of a reversed payment: %s %+v; want refused", r.Status,
			r.Error)
	}
	f.wantBalance("ben", 100, 0, 0)
	f.wantBalance("eve", 100+70+100+30, 0, 0)

	day1, err := f.l.Settlement(ctx, f.prog, shop, start.Add(-time.Hour),
		start.Add(12*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	day2, err := f.l.Settlement(ctx, f.prog, shop, start.Add(12*time.Hour),
		start.Add(36*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	whole, err := f.l.Settlement(ctx, f.prog, shop, start.Add(-time.Hour),
		start.Add(36*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if day1.Captured != 120 || day1.Refunded != 20 || day1.Reversed != 0 || day1.Net != 100 {
		t.Errorf("day 1: captured %d refunded %d reversed %d net %d; want 120 20 0 100",
			day1.Captured, day1.Refunded, day1.Reversed, day1.Net)
	}
	if day2.Captured != 0 || day2.Refunded != 0 || day2.Reversed != 70 || day2.Net != -70 {
		t.Errorf("day 2: captured %d refunded %d reversed %d net %d; want 0 0 70 -70",
			day2.Captured, day2.Refunded, day2.Reversed, day2.Net)
	}
	if whole.Net != day1.Net+day2.Net || whole.Net != 30 || whole.Value != "30" {
		t.Errorf("both days: net %d value %s; want 30 (ana's 50 less 20 refunded)",
			whole.Net, whole.Value)
	}
	x, err := f.l.PartnerTransaction(ctx, p.source, f.prog+"-c")
	if err != nil || x.Captured != 30 || x.Reversed != 30 || x.Refunded != 0 {
		t.Fatalf("carl's payment %+v %v: want 30 captured and reversed", x, err)
	}
	f.check()
}

// A command refused after catching up (a redemption of more than the
// member has once a lot expired) leaves nothing of the catch-up behind
// under its name; the sweep then does it.
func TestLate19RefusedCommandLeavesNoCatchUp(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	soon := f.now.Add(time.Hour)
	f.ok(core.KindCredit, "ana", core.Credit{Points: 30, Reason: "short", ExpiresAt: &soon})
	f.setNow(f.now.Add(2 * time.Hour))
	txn := f.txn()
	r := f.do(core.KindRedeem, "ana", txn, core.Redeem{Points: 120, Reason: "too much"})
	if r.Status != bus.StatusRejected {
		t.Fatalf("redeem 120 of 100 spendable: %s; want refused", r.Status)
	}
	for _, ps := range f.statement("ana") {
		if ps.TxnID == txn {
			t.Fatalf("posting %+v carries the refused command's transaction id", ps)
		}
	}
	f.check()
	f.sweep(f.now)
	f.wantBalance("ana", 100, 0, 0)
	if ps := f.postingsOf("ana", core.PostExpiry); len(ps) != 1 || ps[0].Points != -30 {
		t.Fatalf("expiry postings %+v; want one of -30", ps)
	}
	f.check()
}
