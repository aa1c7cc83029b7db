package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// An expiry posting is dated when its points expired, not when it was
// written, so that what was owed at an instant in between does not count
// them: a top-up reported two months late on a program whose points last
// 30 days expires on arrival, dated at its lot's end; lots that ran out
// before a sweep, or before the member's next command, likewise. Points a
// release frees after their lot expired expire when they are freed, and
// only those: the member's other expired points keep their own date.
func TestExpiryIsDatedWhenThePointsExpired(t *testing.T) {
	f := newFixture(t, core.Program{ExpiryUnit: core.ExpiryDays, ExpiryLength: 30,
		ExpiryRound: "day"})
	for _, ref := range []string{"ana", "ben", "carl", "dora"} {
		f.enroll(ref)
	}
	topUp := func(ref string, at time.Time) {
		t.Helper()
		c := f.command(core.KindAccrue, ref, f.txn(), core.Accrue{EventType: "top_up",
			Amount: "100"})
		c.OccurredAt = at
		c.Seal()
		outcomeOf(t, f.apply(c))
	}
	lotEnd := func(ref string) time.Time {
		t.Helper()
		var end time.Time
		err := f.l.Pool().QueryRow(context.Background(), `SELECT max(l.expires_at)
			FROM lots l JOIN members m ON m.id = l.member_id
			JOIN programs p ON p.id = m.program_id
			WHERE p.code = $1 AND m.customer_ref = $2`, f.prog, ref).Scan(&end)
		if err != nil {
			t.Fatal(err)
		}
		return end
	}
	wantExpiry := func(ref string, n int, points core.Points, at time.Time) {
		t.Helper()
		exp := f.postingsOf(ref, core.PostExpiry) // newest first
		if len(exp) != n || exp[0].Points != points || !exp[0].OccurredAt.Equal(at) {
			t.Fatalf("%s's expiry postings %+v; want %d, the last of %d dated %s", ref, exp,
				n, points, at.Format(time.RFC3339))
		}
	}

	// On arrival.
	topUp("ana", f.now.AddDate(0, -2, 0))
	wantExpiry("ana", 1, -100, lotEnd("ana"))
	// Earned 25 days ago: good for a few days yet, then written weeks later
	// by the sweep, in one statement for ben and member by member for carl,
	// whose open hold takes him through refresh (it reserves 5 of the
	// expiring lot, which stay until the hold ends).
	topUp("ben", f.now.AddDate(0, 0, -25))
	topUp("carl", f.now.AddDate(0, 0, -25))
	later := f.now.AddDate(1, 0, 0)
	f.ok(core.KindCredit, "carl", core.Credit{Points: 10, Reason: "lasting",
		ExpiresAt: &later})
	outcomeOf(t, f.apply(f.command(core.KindAuthorize, "carl", f.txn(),
		core.Authorize{Points: 5, TTLSeconds: 60 * 24 * 3600})))
	// dora's hold of 5 lapses ten days on, after her lot's end and before
	// the sweep: the 5 points it kept expire when it ended, and the other
	// 95 expired by time alone, when the lot ended. (The sweep's release
	// used to expire all 100 in one posting dated at the sweep.)
	topUp("dora", f.now.AddDate(0, 0, -25))
	outcomeOf(t, f.apply(f.command(core.KindAuthorize, "dora", f.txn(),
		core.Authorize{Points: 5, TTLSeconds: 10 * 24 * 3600})))
	doraHoldEnd := f.now.AddDate(0, 0, 10)
	f.setNow(f.now.AddDate(0, 0, 20))
	f.sweep(f.now)
	doraExp := f.postingsOf("dora", core.PostExpiry)
	if len(doraExp) != 2 {
		t.Fatalf("dora's expiry postings %+v; want 2", doraExp)
	}
	for _, want := range []struct {
		points core.Points
		at     time.Time
	}{{-95, lotEnd("dora")}, {-5, doraHoldEnd}} {
		found := false
		for _, p := range doraExp {
			found = found || p.Points == want.points && p.OccurredAt.Equal(want.at)
		}
		if !found {
			t.Errorf("dora's expiry postings %+v; want one of %d dated %s", doraExp,
				want.points, want.at.Format(time.RFC3339))
		}
	}
	f.wantBalance("dora", 0, 0, 0)
	wantExpiry("ben", 1, -100, lotEnd("ben"))
	if !lotEnd("ben").Before(f.now.AddDate(0, 0, -10)) {
		t.Fatalf("ben's lot ended %s, want well before the sweep at %s", lotEnd("ben"), f.now)
	}
	var carlEnd time.Time
	if err := f.l.Pool().QueryRow(context.Background(), `SELECT l.expires_at FROM lots l
		JOIN members m ON m.id = l.member_id JOIN programs p ON p.id = m.program_id
		WHERE p.code = $1 AND m.customer_ref = 'carl' AND l.original = 100`,
		f.prog).Scan(&carlEnd); err != nil {
		t.Fatal(err)
	}
	wantExpiry("carl", 1, -95, carlEnd)
	f.wantBalance("ana", 0, 0, 0)
	f.wantBalance("ben", 0, 0, 0)
	f.wantBalance("carl", 10, 0, 5)

	// A hold outlives the expiry of the lot it reserves: the points expire
	// when the hold's release frees them.
	f.ok(core.KindCredit, "ana", core.Credit{Points: 50, Reason: "goodwill"})
	soon := f.now.Add(time.Hour)
	f.ok(core.KindCredit, "ana", core.Credit{Points: 20, Reason: "short", ExpiresAt: &soon})
	hold := f.txn()
	outcomeOf(t, f.apply(f.command(core.KindAuthorize, "ana", hold,
		core.Authorize{Points: 20, TTLSeconds: 3 * 3600})))
	f.setNow(f.now.Add(2 * time.Hour))
	released := f.now
	if r := f.do(core.KindRelease, "ana", f.txn(), core.Release{HoldTxnID: hold}); r.Status !=
		bus.StatusOK {
		t.Fatalf("release: %s %+v", r.Status, r.Error)
	}
	wantExpiry("ana", 2, -20, released)
	f.wantBalance("ana", 50, 0, 0)
	f.check()
}
