package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Two batches carrying the same accrual both find its transaction id free
// and work it out; the second to write meets the first's claim and is
// applied again command by command, as a replay: the points are posted
// once and both callers get an answer.
func TestSetBasedClaimRaceIsAReplay(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.enroll("m1")
	ctx := context.Background()

	// Hold the member so that both batches read the free id, then queue on
	// the member's lock.
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
