package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// TestBalanceReadsTheFiguresAtItsInstant: between a lot's expiry (or the
// end of a holding period) and the sweep that posts it, a balance read
// answers what a spend at the same instant finds, not the figures stored
// before; the sweep then posts exactly that, and the read does not move.
func TestBalanceReadsTheFiguresAtItsInstant(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{PendingDays: 2, TimeZone: "UTC"})
	f.enroll("m")
	soon := time.Date(2026, 3, 12, 1, 0, 0, 0, time.UTC) // an hour after maturing
	later := f.now.Add(90 * 24 * time.Hour)
	f.ok(core.KindCredit, "m", core.Credit{Points: 300, Reason: "short", ExpiresAt: &soon})
	f.ok(core.KindCredit, "m", core.Credit{Points: 200, Reason: "long", ExpiresAt: &later})
	f.wantBalance("m", 0, 500, 0)

	// Three days on, both lots matured, the first one also expired: no
	// sweep has run yet, so the stored figures still say pending 500.
	f.setNow(f.now.Add(72 * time.Hour))
	for _, read := range []func(context.Context, string, string) (*BalanceView, error){
		f.l.Balance, f.l.BalanceSummary} {
		v, err := read(ctx, f.prog, "m")
		if err != nil {
			t.Fatal(err)
		}
		if v.Balance.Available != 200 || v.Balance.Pending != 0 {
			t.Fatalf("before the sweep: %+v, want available 200 pending 0", v.Balance)
		}
		if len(v.NextExpiries) != 1 || v.NextExpiries[0].Points != 200 ||
			!v.NextExpiries[0].ExpiresAt.Equal(later) {
			t.Fatalf("next expiries before the sweep: %+v, want 200 at %s", v.NextExpiries, later)
		}
		for _, lt := range v.Lots {
			if lt.Pending {
				t.Fatalf("lot %d shown pending after its holding period", lt.ID)
			}
		}
	}
	// A spend of 201 finds 200, as the read said; 200 go.
	f.refused(core.KindRedeem, "m", core.Redeem{Points: 201, Reason: "too much"}, core.Insufficient)
	if _, _, err := f.l.Sweep(ctx, f.now, 0); err != nil {
		t.Fatal(err)
	}
	f.wantBalance("m", 200, 0, 0)
	f.ok(core.KindRedeem, "m", core.Redeem{Points: 200, Reason: "all"})
	f.wantBalance("m", 0, 0, 0)
	f.check()
}
