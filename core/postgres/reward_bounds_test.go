package postgres

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// TestRewardStockBounded: a reward's stock and limits past core.MaxCount are
// refused naming the field; a stock stored at bigint's top before the bound
// still lets a cancel give its points back, the stock capped there.
func TestRewardStockBounded(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	over := int64(core.MaxCount + 1)
	for field, r := range map[string]core.Reward{
		"stock":            {Stock: &over},
		"per_member_limit": {PerMemberLimit: &over},
		"program_limit":    {ProgramLimit: &over},
	} {
		r.Code, r.Name, r.Points = "big", "Big", 10
		wantRefused(t, f.do(core.KindRewardUpsert, "", f.txn(), r), core.Invalid, field)
	}
	most := int64(core.MaxCount)
	reward := core.Reward{Code: "big", Name: "Big", Points: 10, Stock: &most,
		CancelWindowSeconds: 3600}
	f.ok(core.KindRewardUpsert, "", reward)

	res := f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "big"})
	var o core.Order
	if err := json.Unmarshal(res.Data, &o); res.Status != bus.StatusOK || err != nil {
		t.Fatalf("order: %s %+v", res.Status, res.Error)
	}
	f.wantBalance("ana", 90, 0, 0)
	// A stock from before the bound, at bigint's top.
	if _, err := f.l.Pool().Exec(ctx, `UPDATE rewards r SET stock = 9223372036854775807
		FROM programs p WHERE p.id = r.program_id AND p.code = $1 AND r.code = 'big'`,
		f.prog); err != nil {
		t.Fatal(err)
	}
	f.ok(core.KindOrderCancel, "ana", core.CancelOrder{OrderID: o.ID})
	f.wantBalance("ana", 100, 0, 0)
	var stock int64
	if err := f.l.Pool().QueryRow(ctx, `SELECT r.stock FROM rewards r
		JOIN programs p ON p.id = r.program_id WHERE p.code = $1 AND r.code = 'big'`,
		f.prog).Scan(&stock); err != nil {
		t.Fatal(err)
	}
	if stock != 1<<63-1 {
		t.Fatalf("stock after the cancel %d, want it capped at %d", stock, int64(1<<63-1))
	}
	f.check()
}
