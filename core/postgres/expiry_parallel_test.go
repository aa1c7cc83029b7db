package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A large sweep works on two batches at once. Two worlds of ten members,
// swept in batches of one member (20 batches, enough to run in parallel),
// end exactly as one world swept in a single batch does, every member with
// one expiry posting.
func TestParallelSweepMatchesOneBatch(t *testing.T) {
	due := ts("2026-03-21T03:00:00Z")
	later := ts("2026-06-02T04:00:00Z")

	one := newExpiryWorld(t, due, later)
	one.f.sweep(due.Add(-time.Minute)) // what other tests left due
	res, ran, err := one.f.l.Sweep(context.Background(), due, 1000)
	if err != nil || !ran || res.Batches != 1 {
		t.Fatalf("single batch: ran %v, %+v, %v", ran, res, err)
	}
	want := one.outcome(t)

	a, b := newExpiryWorld(t, due, later), newExpiryWorld(t, due, later)
	calls := 0
	a.f.l.afterSweepBatch = func(SweepResult) { calls++ }
	res, ran, err = a.f.l.Sweep(context.Background(), due, 1)
	if err != nil || !ran || res.Members != 20 || res.Batches != 20 || calls != 20 {
		t.Fatalf("parallel sweep: ran %v, %+v, %v, %d batches seen; want 20 of one member",
			ran, res, err, calls)
	}
	if 20 < sweepParallelFrom {
		t.Fatalf("20 batches do not make a parallel sweep (from %d)", sweepParallelFrom)
	}
	for _, w := range []*expiryWorld{a, b} {
		got := w.outcome(t)
		for _, ref := range w.refs {
			if fmt.Sprint(got[ref]) != fmt.Sprint(want[ref]) {
				t.Errorf("%s: parallel %+v, single batch %+v", ref, got[ref], want[ref])
			}
		}
	}
	a.f.check()

	// Nothing is left due: a second sweep finds no one.
	res, ran, err = a.f.l.Sweep(context.Background(), due, 1)
	if err != nil || !ran || res.Members != 0 {
		t.Fatalf("second sweep: ran %v, %+v, %v; want nothing to do", ran, res, err)
	}
}
