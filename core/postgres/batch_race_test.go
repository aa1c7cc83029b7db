package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Two batches carrying the same accrual at once: the second one's record of
// the transaction id waits for the first batch and finds the id taken; the
// batch is applied again and answers the accrual as a replay. The points are
// posted once and both callers get an answer, whether the run writes its
// commands by INSERT or by COPY.
func TestSetBasedClaimRaceIsAReplay(t *testing.T) {
	for _, way := range []struct {
		name     string
		copyRuns int
	}{{"insert", 1000}, {"copy", 1}} {
		t.Run(way.name, func(t *testing.T) { testClaimRace(t, way.copyRuns) })
	}
}

// testClaimRace races two copies of an accrual through ledgers that write
// runs of copyRuns commands or more by COPY.
func testClaimRace(t *testing.T, copyRuns int) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.l.copyRuns = copyRuns
	f.enroll("m1")
	ctx := context.Background()

	// Hold the member so that both batches are in flight together: one
	// waits on the member's lock, the other on the first one's claim.
	hold, err := f.l.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM members m JOIN programs p ON p.id = m.program_id
		WHERE p.code = $1 AND m.customer_ref = 'm1' FOR UPDATE OF m`, f.prog); err != nil {
		t.Fatal(err)
	}

	cmd := f.command(core.KindAccrue, "m1", f.txn(), core.Accrue{EventType: "purchase",
		Amount: "25"})
	type answer struct {
		res bus.Result
		err error
	}
	answers := make(chan answer, 2)
	for range 2 {
		go func() {
			out, err := f.l.ApplyBatch(ctx, []bus.Command{cmd})
			if err != nil {
				answers <- answer{err: err}
				return
			}
			answers <- answer{res: out[0].Result}
		}()
	}
	waitForLockWaiters(t, f, 2)
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	replays := 0
	for range 2 {
		a := <-answers
		if a.err != nil {
			t.Fatalf("ApplyBatch: %v", a.err)
		}
		if a.res.Status != bus.StatusOK {
			t.Fatalf("accrual: %s %+v", a.res.Status, a.res.Error)
		}
		if a.res.Replayed {
			replays++
		}
	}
	if replays != 1 {
		t.Fatalf("%d of the two answers are replays, want 1", replays)
	}
	f.wantBalance("m1", 25, 0, 0)
	f.check()
}

// waitForLockWaiters waits until n backends of the fixture's database wait
// for a lock.
func waitForLockWaiters(t *testing.T, f *fixture, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		err := f.l.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backends wait for a lock after 10s, want %d", waiting, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A program the process has seen without rules, and that has a capped rule
// by its next run, is evaluated by that rule on the set-based path: the
// run reads the counters in a second round trip rather than posting the
// flat rate.
func TestSetBasedSeesRulesAddedSinceLastRun(t *testing.T) {
	f, at := plainProgramSeen(t)

	r := perUnit("triple", "3", core.RoundDown)
	r.Caps = core.Caps{PerDay: 25}
	f.putRule(r)
	before := f.l.setBased.Load()
	if pts, _ := f.earn("m1", "bill_paid", "10", at); pts != 25 {
		t.Fatalf("first accrual under the rule gave %d points, want 25 (capped)", pts)
	}
	if pts, _ := f.earn("m1", "bill_paid", "10", at); pts != 0 {
		t.Fatalf("second accrual the same day gave %d points, want 0", pts)
	}
	if n := f.l.setBased.Load() - before; n != 2 {
		t.Fatalf("%d of the 2 accruals took the set-based path", n)
	}
	f.wantBalance("m1", 35, 0, 0)
	f.check()
}

// The same for tier levels: a program seen without them that has them by
// its next run reviews the member's tier on the set-based path.
func TestSetBasedSeesTiersAddedSinceLastRun(t *testing.T) {
	f, at := plainProgramSeen(t)

	f.ok(core.KindTiersSet, "", core.Tiers{WindowDays: 30, Levels: []core.TierLevel{
		{Code: "blue", Multiplier: "1"}, {Code: "silver", MinPoints: 100, Multiplier: "1"}}})
	before := f.l.setBased.Load()
	if pts, _ := f.earn("m1", "bill_paid", "150", at.Add(time.Minute)); pts != 150 {
		t.Fatalf("accrual gave %d points, want 150", pts)
	}
	if n := f.l.setBased.Load() - before; n != 1 {
		t.Fatalf("%d of the 1 accrual took the set-based path", n)
	}
	var tier string
	var changes int
	err := f.l.pool.QueryRow(context.Background(), `SELECT m.tier,
			(SELECT count(*) FROM member_tiers t WHERE t.member_id = m.id AND t.to_tier = 'silver')
		FROM members m JOIN programs p ON p.id = m.program_id
		WHERE p.code = $1 AND m.customer_ref = 'm1'`, f.prog).Scan(&tier, &changes)
	if err != nil {
		t.Fatal(err)
	}
	if tier != "silver" || changes != 1 {
		t.Fatalf("member's tier %q with %d changes to silver, want silver and 1", tier, changes)
	}
	f.check()
}

// plainProgramSeen is a fixture whose program, without rules or tier
// levels, has had one accrual of 10 points for member m1 at the instant it
// returns, so that the process remembers it as plain.
func plainProgramSeen(t *testing.T) (*fixture, time.Time) {
	t.Helper()
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.enroll("m1")
	at := f.l.Clock()
	if pts, _ := f.earn("m1", "bill_paid", "10", at); pts != 10 {
		t.Fatalf("flat rate gave %d points, want 10", pts)
	}
	if sh, ok := programShapes.Load(f.prog); !ok || sh.(programShape) != (programShape{}) {
		t.Fatalf("program remembered as %+v (known %v), want plain", sh, ok)
	}
	return f, at
}
