package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
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

// TestBalanceFreesOverdueHolds: once a hold's time is over, the balance and
// the member read count its points free again, as a spend at that instant
// finds them, before the sweep releases it.
func TestBalanceFreesOverdueHolds(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	f.enroll("m")
	f.ok(core.KindCredit, "m", core.Credit{Points: 1000, Reason: "seed"})
	f.ok(core.KindAuthorize, "m", core.Authorize{Points: 400, TTLSeconds: 60})
	f.wantBalance("m", 600, 0, 400)

	f.setNow(f.now.Add(2 * time.Minute))
	f.wantBalance("m", 1000, 0, 0)
	mem, err := f.l.Member(ctx, f.prog, "m")
	if err != nil {
		t.Fatal(err)
	}
	if mem.Balance.Available != 1000 || mem.Balance.Held != 0 {
		t.Fatalf("member read %+v, want available 1000 held 0", mem.Balance)
	}
	sum, err := f.l.BalanceSummary(ctx, f.prog, "m")
	if err != nil {
		t.Fatal(err)
	}
	if sum.Balance != mem.Balance {
		t.Fatalf("summary %+v, member %+v", sum.Balance, mem.Balance)
	}
	// A spend of all 1000 goes through, as the reads said it would.
	f.ok(core.KindRedeem, "m", core.Redeem{Points: 1000, Reason: "all"})
	f.wantBalance("m", 0, 0, 0)
	f.check()
}

// readsBeforeAndAfterSweep reads m's balance three ways at the fixture's
// instant, sweeps, and fails unless all three equal the swept figures.
func readsBeforeAndAfterSweep(t *testing.T, f *fixture, ref string) core.Balance {
	t.Helper()
	ctx := context.Background()
	full := f.balance(ref).Balance
	sum, err := f.l.BalanceSummary(ctx, f.prog, ref)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := f.l.Member(ctx, f.prog, ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.l.Sweep(ctx, f.now, 0); err != nil {
		t.Fatal(err)
	}
	swept := f.balance(ref).Balance
	if full != swept || sum.Balance != swept || mem.Balance != swept {
		t.Fatalf("before the sweep: balance %+v, summary %+v, member %+v; after it %+v",
			full, sum.Balance, mem.Balance, swept)
	}
	f.check()
	return swept
}

// TestBalanceMaturedLapsedLotRepaysDebtFirst: a member owing points whose
// pending lot matures and then ends before any sweep reads as the sweep
// leaves it: the lot repays the debt as it matures, and only the rest ends.
func TestBalanceMaturedLapsedLotRepaysDebtFirst(t *testing.T) {
	f := newFixture(t, core.Program{PendingDays: 2, NegativeBalance: core.NegativeAllow,
		TimeZone: "UTC"})
	f.enroll("m")
	first := f.command(core.KindCredit, "m", f.txn(), core.Credit{Points: 100, Reason: "a"})
	if r := f.apply(first); r.Status != bus.StatusOK {
		t.Fatalf("credit: %+v", r.Error)
	}
	f.setNow(f.now.Add(72 * time.Hour))
	f.ok(core.KindRedeem, "m", core.Redeem{Points: 100})
	f.ok(core.KindReverse, "m", core.Reverse{OriginalTxnID: first.TxnID, Reason: "fraud"})
	f.wantBalance("m", -100, 0, 0)
	end := f.now.Add(72 * time.Hour)
	f.ok(core.KindCredit, "m", core.Credit{Points: 300, Reason: "late", ExpiresAt: &end})
	f.setNow(f.now.Add(96 * time.Hour)) // matured at two days, ended at three
	if got := readsBeforeAndAfterSweep(t, f, "m"); got != (core.Balance{}) {
		t.Fatalf("after the sweep %+v, want nothing owed and nothing left", got)
	}
}

// TestBalanceOverdueHoldOnEndedLot: the points of an overdue hold whose
// lot has ended are not counted free: freed, they expire at once.
func TestBalanceOverdueHoldOnEndedLot(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m")
	end := f.now.Add(time.Hour)
	f.ok(core.KindCredit, "m", core.Credit{Points: 100, Reason: "short", ExpiresAt: &end})
	f.ok(core.KindCredit, "m", core.Credit{Points: 50, Reason: "long"})
	f.ok(core.KindAuthorize, "m", core.Authorize{Points: 120, TTLSeconds: 7200})
	f.wantBalance("m", 30, 0, 120)
	f.setNow(f.now.Add(3 * time.Hour))
	if got := readsBeforeAndAfterSweep(t, f, "m"); got != (core.Balance{Available: 50}) {
		t.Fatalf("after the sweep %+v, want the 50 of the long lot", got)
	}
}

// TestBalanceOverdueHoldRepaysDebtBeforeItsLotEnds: a member who owes
// points and whose overdue hold sits on a lot that has ended reads as the
// sweep leaves it: the freed points repay the debt, and only the rest
// expires.
func TestBalanceOverdueHoldRepaysDebtBeforeItsLotEnds(t *testing.T) {
	f := newFixture(t, core.Program{NegativeBalance: core.NegativeAllow})
	f.enroll("m")
	first := f.command(core.KindCredit, "m", f.txn(), core.Credit{Points: 100, Reason: "a"})
	if r := f.apply(first); r.Status != bus.StatusOK {
		t.Fatalf("credit: %+v", r.Error)
	}
	end := f.now.Add(time.Hour)
	f.ok(core.KindCredit, "m", core.Credit{Points: 200, Reason: "short", ExpiresAt: &end})
	// The hold takes the short lot (soonest expiry); spending the first
	// credit and reversing it leaves the member owing 100.
	f.ok(core.KindAuthorize, "m", core.Authorize{Points: 200, TTLSeconds: 1800})
	f.ok(core.KindRedeem, "m", core.Redeem{Points: 100})
	f.ok(core.KindReverse, "m", core.Reverse{OriginalTxnID: first.TxnID, Reason: "fraud"})
	f.wantBalance("m", -100, 0, 200)
	f.setNow(f.now.Add(2 * time.Hour))
	if got := readsBeforeAndAfterSweep(t, f, "m"); got != (core.Balance{}) {
		t.Fatalf("after the sweep %+v, want the debt repaid and the rest expired", got)
	}
}
