package postgres

import (
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// Regression test of a defect a billing integrator and a partner found
// (against cf48e4e), now mended; the scenario as found:
//
// Between a lot's expiry (or a hold's end) and the sweep that posts it, a
// balance read with its lots said available 800 while its lots, which
// still held the expired ones, added up to 1,250; and a hold past its time
// still showed its points held on the lots and missing from the next
// expiries. The lots and the next expiries now read as the balance does,
// as the next refresh will leave them.
func TestBalanceLotsReadAtTheirInstant(t *testing.T) {
	f := newFixture(t, core.Program{})
	shop := partnerCmds{f: f, source: core.PartnerSource("shop-" + f.prog)}
	f.enroll("ana")
	start := f.now
	soon := f.creditAt("ana", 100, start.Add(2*time.Hour))
	later := f.creditAt("ana", 200, start.Add(48*time.Hour))
	// 60 held on the lot ending soonest, for 30 minutes.
	outcomeOf(t, shop.do(core.KindAuthorize, "ana", f.prog+"-pay",
		core.Authorize{Points: 60, TTLSeconds: 1800}))
	f.wantBalance("ana", 240, 0, 60)

	type lotView struct{ remaining, held core.Points }
	check := func(when string, available, held core.Points, want map[int64]lotView,
		next core.Points) {
		t.Helper()
		v := f.balance("ana")
		if v.Balance.Available != available || v.Balance.Held != held {
			t.Fatalf("%s: balance %+v, want available %d held %d", when, v.Balance,
				available, held)
		}
		got := map[int64]lotView{}
		var free core.Points
		for _, l := range v.Lots {
			got[l.ID] = lotView{l.Remaining, l.Held}
			free += l.Remaining - l.Held
		}
		if len(got) != len(want) {
			t.Fatalf("%s: lots %+v, want %+v", when, got, want)
		}
		for id, w := range want {
			if got[id] != w {
				t.Fatalf("%s: lot %d %+v, want %+v", when, id, got[id], w)
			}
		}
		if free != available {
			t.Fatalf("%s: the lots' free points add up to %d, the balance says %d", when,
				free, available)
		}
		var expiring core.Points
		for _, e := range v.NextExpiries {
			expiring += e.Points
		}
		if expiring != next {
			t.Fatalf("%s: next expiries add up to %d, want %d", when, expiring, next)
		}
		sum, err := f.l.BalanceSummary(t.Context(), f.prog, "ana")
		if err != nil {
			t.Fatal(err)
		}
		expiring = 0
		for _, e := range sum.NextExpiries {
			expiring += e.Points
		}
		if expiring != next || sum.Balance != v.Balance {
			t.Fatalf("%s: the summary says %+v expiring %d, the lots' view %+v and %d", when,
				sum.Balance, expiring, v.Balance, next)
		}
	}
	check("with the hold", 240, 60, map[int64]lotView{soon: {100, 60}, later: {200, 0}}, 240)

	// The hold ran out 15 minutes ago; no sweep since.
	f.setNow(start.Add(45 * time.Minute))
	check("hold past its time", 300, 0, map[int64]lotView{soon: {100, 0}, later: {200, 0}},
		300)

	// And the first lot ended an hour ago.
	f.setNow(start.Add(3 * time.Hour))
	check("lot past its end", 200, 0, map[int64]lotView{later: {200, 0}}, 200)

	// The sweep posts what the reads showed.
	f.sweep(f.now)
	check("after the sweep", 200, 0, map[int64]lotView{later: {200, 0}}, 200)
	f.check()
}
