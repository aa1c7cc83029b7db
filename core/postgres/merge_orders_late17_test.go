package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Catalog orders and partner payments of a member merged into another: they
// stay in sight, count against the survivor's limits, and what comes back of
// them comes back to the survivor.

// byExpiry sums the remaining points of a member's lots (read through ref)
// by expiry, in Unix seconds (0 for none).
func (f *fixture) byExpiry(ref string) map[int64]core.Points {
	f.t.Helper()
	out := map[int64]core.Points{}
	for _, l := range f.balance(ref).Lots {
		var at int64
		if l.ExpiresAt != nil {
			at = l.ExpiresAt.Unix()
		}
		if l.Remaining > 0 {
			out[at] += l.Remaining
		}
	}
	return out
}

// memberRow reads a member's own row, not following merges.
func (f *fixture) memberRow(ref string) (status string, available int64) {
	f.t.Helper()
	err := f.l.Pool().QueryRow(context.Background(), `SELECT m.status, m.available
		FROM members m JOIN programs p ON p.id = m.program_id
		WHERE p.code = $1 AND m.customer_ref = $2`, f.prog, ref).Scan(&status, &available)
	if err != nil {
		f.t.Fatalf("read member %s: %v", ref, err)
	}
	return status, available
}

// After ana is merged into ben, ana's order is listed and found under both
// references; a member merged into nobody's chain does not see it.
func TestMergedMembersOrdersListUnderBothReferences(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.enroll("ben")
	f.enroll("eve")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 300, Reason: "seed"})
	f.ok(core.KindCredit, "ben", core.Credit{Points: 100, Reason: "seed"})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		CancelWindowSeconds: 3600})
	oa := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug"}))
	ob := orderOf(t, f.do(core.KindOrderPlace, "ben", f.txn(), core.PlaceOrder{Reward: "mug"}))
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.wantBalance("ben", 200, 0, 0)

	for _, ref := range []string{"ana", "ben"} {
		list, err := f.l.Orders(ctx, f.prog, ref)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]string{}
		for _, x := range list {
			ids[x.ID] = x.Member
		}
		if len(list) != 2 || ids[oa.ID] != "ana" || ids[ob.ID] != "ben" {
			t.Fatalf("orders under %s: %+v, want ana's %s and ben's %s", ref, ids, oa.ID,
				ob.ID)
		}
		got, err := f.l.Order(ctx, f.prog, ref, oa.ID)
		if err != nil {
			t.Fatalf("order %s under %s: %v", oa.ID, ref, err)
		}
		if got.Status != core.OrderPlaced || got.Voucher != oa.Voucher {
			t.Fatalf("order %s under %s: %+v", oa.ID, ref, got)
		}
	}
	list, err := f.l.Orders(ctx, f.prog, "eve")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Fatalf("eve sees %d orders of others", len(list))
	}
	if _, err := f.l.Order(ctx, f.prog, "eve", oa.ID); err == nil {
		t.Fatalf("eve reads ana's order %s", oa.ID)
	}
	f.check()
}

// A reward limited to two per member, redeemed twice by ana: after ana is
// merged into ben, ben may not redeem it again, nor may carl once ben is
// merged into carl in turn.
func TestMergePerMemberLimitCountsMergedOrders(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.enroll("ben")
	f.enroll("carl")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1000, Reason: "seed"})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		PerMemberLimit: ptr(int64(2))})
	f.ok(core.KindOrderPlace, "ana", core.PlaceOrder{Reward: "mug", Quantity: 2})
	f.refused(core.KindOrderPlace, "ana", core.PlaceOrder{Reward: "mug"}, core.Conflict)
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})

	r := f.do(core.KindOrderPlace, "ben", f.txn(), core.PlaceOrder{Reward: "mug"})
	wantRefused(t, r, core.Conflict, "reward")
	f.wantBalance("ben", 800, 0, 0)

	f.ok(core.KindMerge, "ben", core.Merge{Into: "carl"})
	r = f.do(core.KindOrderPlace, "carl", f.txn(), core.PlaceOrder{Reward: "mug"})
	wantRefused(t, r, core.Conflict, "reward")
	f.wantBalance("carl", 800, 0, 0)
	if rw := f.reward("mug"); rw.Redeemed != 2 {
		t.Fatalf("reward redeemed %d, want 2", rw.Redeemed)
	}
	f.check()
}

// ana orders a mug with points of a lot expiring at exp and is merged into
// ben; the order is cancelled inside its window (once through ana's
// reference, refused a second time through ben's). The points come back to
// ben, in a lot with the same expiry; ana's own row stays empty.
func TestCancelOrderAfterMergeCreditsSurvivor(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.enroll("ben")
	exp := f.now.Add(40 * 24 * time.Hour)
	benExp := f.now.Add(200 * 24 * time.Hour)
	f.creditAt("ana", 300, exp)
	f.creditAt("ben", 50, benExp)
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		Stock: ptr(int64(5)), CancelWindowSeconds: 3600})
	o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug"}))
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.wantBalance("ben", 250, 0, 0)

	out := outcomeOf(t, f.do(core.KindOrderCancel, "ana", f.txn(),
		core.CancelOrder{OrderID: o.ID}))
	if out.Points != 100 || out.Balance.Available != 350 {
		t.Fatalf("cancel outcome %+v, want 100 back and 350 available", out)
	}
	f.wantBalance("ben", 350, 0, 0)
	lots := f.byExpiry("ben")
	if lots[exp.Unix()] != 300 || lots[benExp.Unix()] != 50 || len(lots) != 2 {
		t.Fatalf("ben's lots by expiry %v, want 300 expiring %s and 50 expiring %s", lots,
			exp, benExp)
	}
	if status, available := f.memberRow("ana"); status != "merged" || available != 0 {
		t.Fatalf("ana's own row: %s with %d available, want merged with 0", status, available)
	}
	got, err := f.l.Order(ctx, f.prog, "ben", o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != core.OrderCancelled {
		t.Fatalf("order %s is %s, want cancelled", o.ID, got.Status)
	}
	if rw := f.reward("mug"); *rw.Stock != 5 || rw.Redeemed != 0 {
		t.Fatalf("reward stock %d redeemed %d, want 5 and 0", *rw.Stock, rw.Redeemed)
	}

	r := f.do(core.KindOrderCancel, "ben", f.txn(), core.CancelOrder{OrderID: o.ID})
	wantRefused(t, r, core.Conflict, "order_id")
	f.wantBalance("ben", 350, 0, 0)
	f.check()
}

// The lot ana's order took has expired by the time the order, placed before
// ana was merged into ben, is cancelled: the points come back to ben and
// expire at once, as they would have had ana kept them.
func TestCancelOrderAfterMergeExpiredLotExpiresAtOnce(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.enroll("ben")
	exp := f.now.Add(2 * 24 * time.Hour)
	f.creditAt("ana", 300, exp)
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		CancelWindowSeconds: 7 * 24 * 3600})
	o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug"}))
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.ok(core.KindCredit, "ben", core.Credit{Points: 10, Reason: "seed"})
	f.wantBalance("ben", 210, 0, 0)

	f.setNow(exp.Add(time.Hour))
	out := outcomeOf(t, f.do(core.KindOrderCancel, "ben", f.txn(),
		core.CancelOrder{OrderID: o.ID}))
	if out.Balance.Available != 10 {
		t.Fatalf("cancel outcome %+v, want 10 available", out)
	}
	f.wantBalance("ben", 10, 0, 0)
	if lots := f.byExpiry("ben"); len(lots) != 1 || lots[0] != 10 {
		t.Fatalf("ben's lots by expiry %v, want only the 10 without expiry", lots)
	}
	f.check()
}

// A partner took 60 points of ana's (30 from a lot expiring first, 30 from
// one expiring later) and refunded 10 before ana was merged into ben; it
// refunds the rest in two parts afterwards, for the member its transaction
// names and then for ben. ben gets the points back with their expiries, and
// a further refund is refused.
func TestPartnerRefundAfterMergeCreditsSurvivor(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	p := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.enroll("ben")
	early := f.now.Add(30 * 24 * time.Hour)
	late := f.now.Add(90 * 24 * time.Hour)
	f.creditAt("ana", 30, early)
	f.creditAt("ana", 70, late)
	pay := f.prog + "-pay"
	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 60}))
	outcomeOf(t, p.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}))
	outcomeOf(t, p.do(core.KindPartnerRefund, "ana", pay+"-r1",
		core.PartnerRefund{HoldTxnID: pay, Points: 10}))
	f.wantBalance("ana", 50, 0, 0)
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.wantBalance("ben", 50, 0, 0)

	tx, err := f.l.PartnerTransaction(ctx, p.source, pay)
	if err != nil {
		t.Fatal(err)
	}
	// The partner API sends the refund for the member its transaction names.
	r := p.do(core.KindPartnerRefund, tx.Member, pay+"-r2",
		core.PartnerRefund{HoldTxnID: pay, Points: 25})
	if r.Status != bus.StatusOK {
		t.Fatalf("refund of a payment of %s (merged into ben): %s %+v", tx.Member, r.Status,
			r.Error)
	}
	f.wantBalance("ben", 75, 0, 0)
	// Latest expiry first: the 20 the later lot is still owed, then 5.
	if lots := f.byExpiry("ben"); lots[late.Unix()] != 70 || lots[early.Unix()] != 5 {
		t.Fatalf("ben's lots by expiry %v, want 70 expiring %s and 5 expiring %s", lots,
			late, early)
	}
	outcomeOf(t, p.do(core.KindPartnerRefund, "ben", pay+"-r3",
		core.PartnerRefund{HoldTxnID: pay}))
	f.wantBalance("ben", 100, 0, 0)
	if lots := f.byExpiry("ben"); lots[late.Unix()] != 70 || lots[early.Unix()] != 30 ||
		len(lots) != 2 {
		t.Fatalf("ben's lots by expiry %v, want 70 expiring %s and 30 expiring %s", lots,
			late, early)
	}
	r = p.do(core.KindPartnerRefund, "ben", pay+"-r4", core.PartnerRefund{HoldTxnID: pay})
	wantRefused(t, r, core.Conflict, "hold_txn_id")
	tx, err = f.l.PartnerTransaction(ctx, p.source, pay)
	if err != nil {
		t.Fatal(err)
	}
	if tx.Refunded != 60 {
		t.Fatalf("partner transaction refunded %d, want 60", tx.Refunded)
	}
	if status, available := f.memberRow("ana"); status != "merged" || available != 0 {
		t.Fatalf("ana's own row: %s with %d available, want merged with 0", status, available)
	}
	f.check()
}

// A payment of eve's is not ben's to refund, nor an order of eve's to
// cancel, merges or not.
func TestMergeDoesNotReachOthersPaymentsOrOrders(t *testing.T) {
	f := newFixture(t, core.Program{})
	p := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.enroll("ben")
	f.enroll("eve")
	f.ok(core.KindCredit, "eve", core.Credit{Points: 300, Reason: "seed"})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		CancelWindowSeconds: 3600})
	o := orderOf(t, f.do(core.KindOrderPlace, "eve", f.txn(), core.PlaceOrder{Reward: "mug"}))
	pay := f.prog + "-pay"
	outcomeOf(t, p.do(core.KindAuthorize, "eve", pay, core.Authorize{Points: 60}))
	outcomeOf(t, p.do(core.KindCapture, "eve", pay+"-c", core.Capture{HoldTxnID: pay}))
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})

	r := f.do(core.KindOrderCancel, "ana", f.txn(), core.CancelOrder{OrderID: o.ID})
	wantRefused(t, r, core.NotFound, "order_id")
	r = p.do(core.KindPartnerRefund, "ben", pay+"-r", core.PartnerRefund{HoldTxnID: pay})
	wantRefused(t, r, core.NotFound, "hold_txn_id")
	f.wantBalance("ben", 0, 0, 0)
	f.wantBalance("eve", 140, 0, 0)
	f.check()
}
