package postgres

import (
	"context"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// TestRewardUpsertChecksStockShown: a save that asks for the stock check is
// refused, nothing changed, when the stock is no longer the one shown
// (units ordered, or unlimited turned into a count), and applies when it
// is; a save without the check (the REST API's) replaces the reward whole.
func TestRewardUpsertChecksStockShown(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 500, Reason: "seed"})
	two, one, ten := int64(2), int64(1), int64(10)
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 50,
		Stock: &two})
	f.ok(core.KindOrderPlace, "ana", core.PlaceOrder{Reward: "mug"})

	stale := core.RewardUpsert{Reward: core.Reward{Code: "mug", Name: "Big mug", Points: 50,
		Stock: &two}, CheckStock: true, StockShown: &two}
	wantRefused(t, f.do(core.KindRewardUpsert, "", f.txn(), stale), core.Conflict, "stock")
	if rw, err := f.l.Reward(ctx, f.prog, "mug"); err != nil || *rw.Stock != 1 ||
		rw.Name != "Mug" {
		t.Fatalf("after the refused save: %+v, %v; want Mug, stock 1", rw, err)
	}
	current := stale
	current.Stock, current.StockShown = &one, &one
	f.ok(core.KindRewardUpsert, "", current)
	if rw, err := f.l.Reward(ctx, f.prog, "mug"); err != nil || *rw.Stock != 1 ||
		rw.Name != "Big mug" {
		t.Fatalf("after the current save: %+v, %v; want Big mug, stock 1", rw, err)
	}

	// Shown unlimited, a count now: refused too.
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "pen", Name: "Pen", Points: 5})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "pen", Name: "Pen", Points: 5,
		Stock: &ten})
	unlimited := core.RewardUpsert{Reward: core.Reward{Code: "pen", Name: "Blue pen",
		Points: 5}, CheckStock: true}
	wantRefused(t, f.do(core.KindRewardUpsert, "", f.txn(), unlimited), core.Conflict, "stock")
	if rw, err := f.l.Reward(ctx, f.prog, "pen"); err != nil || rw.Stock == nil ||
		*rw.Stock != 10 {
		t.Fatalf("after the refused save: %+v, %v; want stock 10", rw, err)
	}

	// Without the check the reward is replaced as a whole, stock included.
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 50,
		Stock: &ten})
	if rw, err := f.l.Reward(ctx, f.prog, "mug"); err != nil || *rw.Stock != 10 {
		t.Fatalf("after the plain save: %+v, %v; want stock 10", rw, err)
	}
	f.check()
}
