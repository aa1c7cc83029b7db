package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A catalog order's redemption is not reversed on its own: the reversal is
// refused, naming the order, and changes nothing (the member would keep
// the reward and get its price back, and the stock would stay taken);
// cancelling the order then gives back the points and the unit, once.
// Redemptions outside the catalog are still reversed.
func TestReversalOfAnOrdersRedemptionIsRefused(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 300, Reason: "seed"})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		Stock: ptr(int64(1)), CancelWindowSeconds: 3600})
	txn := f.txn()
	o := orderOf(t, f.do(core.KindOrderPlace, "ana", txn, core.PlaceOrder{Reward: "mug"}))

	r := f.do(core.KindReverse, "ana", f.txn(), core.Reverse{OriginalTxnID: txn,
		OnlyKind: core.PostRedemption, Reason: "customer changed her mind"})
	wantRefused(t, r, core.Conflict, "original_txn_id")
	if !strings.Contains(r.Error.Message, o.ID) || !strings.Contains(r.Error.Message, "cancel") {
		t.Fatalf("refusal %q does not point at cancelling order %s", r.Error.Message, o.ID)
	}
	f.wantBalance("ana", 200, 0, 0)
	got, err := f.l.Order(ctx, f.prog, "ana", o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != core.OrderPlaced || *f.reward("mug").Stock != 0 {
		t.Fatalf("after the refused reversal: order %s, stock %d; want placed, 0", got.Status,
			*f.reward("mug").Stock)
	}

	f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
	f.wantBalance("ana", 300, 0, 0)
	if s := *f.reward("mug").Stock; s != 1 {
		t.Fatalf("stock after the cancel: %d, want 1", s)
	}

	// A redemption outside the catalog comes back as before.
	redeem := f.txn()
	f.do(core.KindRedeem, "ana", redeem, core.Redeem{Points: 50, Reason: "shop"})
	f.wantBalance("ana", 250, 0, 0)
	f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: redeem,
		OnlyKind: core.PostRedemption, Reason: "till error"})
	f.wantBalance("ana", 300, 0, 0)
	f.check()
}
