package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Regression test of a defect a catalog attack found (against cf48e4e), now
// mended; the scenario as found:
//
// Tiers over a one-day window, gold from 1,000 points. A member earned
// 1,500 points 30 hours ago and 10 now: blue, and the gold-only reward was
// refused. A late event dated 27 hours ago then recorded the tier the
// member had 27 hours ago (gold) as its tier now, and the gold-only reward
// was sold though GET .../tier said blue. The other way round, a late event
// could record blue for a member gold now, who was then refused. A late
// event now reviews the tier the member has now, and an order checks the
// tier as GET .../tier shows it.
func TestLateEventDoesNotRecordAPastTier(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.ok(core.KindTiersSet, "", core.Tiers{WindowDays: 1, Levels: []core.TierLevel{
		{Code: "blue", Multiplier: "1"}, {Code: "gold", MinPoints: 1000, Multiplier: "1"}}})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "lounge", Name: "Gold lounge",
		Points: 100, Tiers: []string{"gold"}})
	earnAt := func(ref, amount string, at time.Time) {
		t.Helper()
		c := f.command(core.KindAccrue, ref, f.txn(), core.Accrue{EventType: "bill_paid",
			Amount: amount})
		c.OccurredAt = at
		c.Seal()
		if r := f.apply(c); r.Status != bus.StatusOK {
			t.Fatalf("accrual of %s at %s: %+v", amount, at, r.Error)
		}
	}
	tier := func(ref string) string {
		t.Helper()
		s, err := f.l.MemberTier(context.Background(), f.prog, ref, f.now)
		if err != nil {
			t.Fatal(err)
		}
		return s.Tier
	}
	order := func(ref string) bus.Result {
		t.Helper()
		return f.do(core.KindOrderPlace, ref, f.txn(), core.PlaceOrder{Reward: "lounge"})
	}
	now := f.now

	// Gold 30 hours ago, blue now; a late event of 27 hours ago keeps it blue.
	f.enroll("ana")
	earnAt("ana", "1500", now.Add(-30*time.Hour))
	earnAt("ana", "10", now)
	earnAt("ana", "1", now.Add(-27*time.Hour))
	if got := tier("ana"); got != "blue" {
		t.Fatalf("ana's tier now: %q, want blue", got)
	}
	if r := order("ana"); r.Status != bus.StatusRejected || r.Error.Field != "reward" {
		t.Fatalf("ana's order of the gold reward: %s %+v, want refused", r.Status, r.Error)
	}
	f.wantBalance("ana", 1511, 0, 0)

	// Gold now on 1,500 points of two hours ago; a late event of three hours
	// ago (whose own window lacks them) keeps it gold.
	f.enroll("ben")
	earnAt("ben", "1500", now.Add(-2*time.Hour))
	earnAt("ben", "1", now.Add(-3*time.Hour))
	if got := tier("ben"); got != "gold" {
		t.Fatalf("ben's tier now: %q, want gold", got)
	}
	if r := order("ben"); r.Status != bus.StatusOK {
		t.Fatalf("ben's order of the gold reward: %s %+v, want placed", r.Status, r.Error)
	}
	f.wantBalance("ben", 1401, 0, 0)
	var recorded string
	if err := f.l.pool.QueryRow(context.Background(), `SELECT m.tier FROM members m
		JOIN programs p ON p.id = m.program_id WHERE p.code = $1 AND m.customer_ref = 'ben'`,
		f.prog).Scan(&recorded); err != nil || recorded != "gold" {
		t.Fatalf("ben's recorded tier: %q %v, want gold", recorded, err)
	}
	f.check()
}
