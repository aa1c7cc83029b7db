package postgres

import (
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

func TestAccrueRedeemSmoke(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "0.01", AccrualRounding: core.RoundDown,
		ExpiryUnit: core.ExpiryMonths, ExpiryLength: 12})
	f.enroll("c1")
	o := f.ok(core.KindAccrue, "c1", core.Accrue{EventType: "bill_paid", Amount: "12990.50"})
	if o.Points != 129 {
		t.Fatalf("accrued %d, want 129", o.Points)
	}
	f.ok(core.KindRedeem, "c1", core.Redeem{Points: 100})
	f.wantBalance("c1", 29, 0, 0)
	f.refused(core.KindRedeem, "c1", core.Redeem{Points: 30}, core.Insufficient)
	f.check()
}
