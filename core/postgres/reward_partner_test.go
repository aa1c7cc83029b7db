package postgres

import (
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A reward names the partner that supplies it, and the redemptions of its
// orders name that partner: a code the program has no partner for (a typo)
// is refused, naming the field, and the reward is not stored.
func TestRewardPartnerMustExist(t *testing.T) {
	f := newFixture(t, core.Program{})
	shop := "shop-" + f.prog
	r := f.do(core.KindRewardUpsert, "", f.txn(), core.Reward{Code: "mug", Name: "Mug",
		Points: 100, Partner: shop})
	if r.Error == nil || r.Error.Field != "partner" || r.Error.Kind != string(core.Invalid) {
		t.Fatalf("reward of an unknown partner: %s %+v, want invalid naming partner",
			r.Status, r.Error)
	}
	if _, err := f.l.Reward(t.Context(), f.prog, "mug"); core.KindOf(err) != core.NotFound {
		t.Fatalf("the refused reward was stored: %v", err)
	}

	f.ok(core.KindPartnerUpsert, "", core.Partner{Code: shop, Name: "Shop", Currency: "CLP",
		PointValue: "1", CanBurn: true})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		Partner: shop})
	got, err := f.l.Reward(t.Context(), f.prog, "mug")
	if err != nil || got.Partner != shop {
		t.Fatalf("reward of a known partner: %+v %v", got, err)
	}
}
