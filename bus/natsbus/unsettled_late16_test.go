package natsbus

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// late16Order is a handler that records the order of the commands it
// applies (each once, however often it is delivered).
type late16Order struct {
	mu    sync.Mutex
	order []string
}

func (o *late16Order) handle(_ context.Context, batch []*Delivery) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, d := range batch {
		if !slices.Contains(o.order, d.Command.TxnID) {
			o.order = append(o.order, d.Command.TxnID)
		}
	}
	return nil
}

func (o *late16Order) all() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.order)
}

// Regression test of a defect a late attack found (against 3b17776), now
// mended; the scenario as found:
//
// A loop that died held two commands it fetched at different times (a
// batch, then half a second later another): they come back after AckWait
// at different times too. The next loop lowers the limit to 2; once the
// first has come back and been settled, one is left out, and the limit of
// 2 lets a newer command through before the second comes back: the
// member's bill-2 is applied before bill-1.
func TestLate16UnsettledFetchedAtDifferentTimesKeepOrder(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.AckWait = time.Second })
		p := 2
		member := membersOf(p, b.Partitions(), 1)[0]
		// The loop that dies: one batch, then another 600 ms later.
		publish(t, b, command(member, "enroll", 1), false)
		fetchUnsettled(t, b, p, 1)
		time.Sleep(600 * time.Millisecond)
		publish(t, b, command(member, "bill-1", 1), false)
		fetchUnsettled(t, b, p, 1)
		publish(t, b, command(member, "bill-2", 1), false)
		publish(t, b, command(member, "bill-3", 1), false)

		rec := &late16Order{}
		consume(t, b, p, 10, rec.handle)
		eventually(t, "four commands applied", func() bool { return len(rec.all()) >= 4 })
		want := []string{"enroll", "bill-1", "bill-2", "bill-3"}
		if got := rec.all(); !slices.Equal(got, want) {
			t.Fatalf("applied in the order %v, want %v", got, want)
		}
		eventually(t, "the usual limit back", func() bool {
			return consumerInfo(t, b, p).Config.MaxAckPending == 10
		})
	})
}

// Regression test of a defect a late attack found (against 3b17776), now
// mended; the scenario as found:
//
// The same with the new loop's batch no larger than what was left
// unsettled (holdBackNewer leaves the usual limit): once one has come back
// and been settled, a newer command overtakes the other.
func TestLate16UnsettledAtBatchSizeKeepOrder(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.AckWait = time.Second })
		p := 3
		member := membersOf(p, b.Partitions(), 1)[0]
		publish(t, b, command(member, "enroll", 1), false)
		fetchUnsettled(t, b, p, 1)
		time.Sleep(600 * time.Millisecond)
		publish(t, b, command(member, "bill-1", 1), false)
		fetchUnsettled(t, b, p, 1)
		publish(t, b, command(member, "bill-2", 1), false)

		rec := &late16Order{}
		consume(t, b, p, 2, rec.handle)
		eventually(t, "three commands applied", func() bool { return len(rec.all()) >= 3 })
		want := []string{"enroll", "bill-1", "bill-2"}
		if got := rec.all(); !slices.Equal(got, want) {
			t.Fatalf("applied in the order %v, want %v", got, want)
		}
	})
}

// Consume stopped while the limit is lowered (the unsettled commands not
// back yet) and started again: the commands left unsettled still apply
// before newer ones, and the usual limit comes back.
func TestLate16ConsumeRestartedWhileClamped(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.AckWait = 3 * time.Second })
		p := 1
		member := membersOf(p, b.Partitions(), 1)[0]
		publish(t, b, command(member, "enroll", 1), false)
		publish(t, b, command(member, "bill-1", 1), false)
		fetchUnsettled(t, b, p, 2)
		publish(t, b, command(member, "bill-2", 1), false)
		rec := &late16Order{}
		stop := consume(t, b, p, 10, rec.handle)
		eventually(t, "the limit lowered", func() bool {
			return consumerInfo(t, b, p).Config.MaxAckPending < 10
		})
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if got := rec.all(); len(got) != 0 {
			t.Fatalf("applied %v before AckWait passed", got)
		}
		publish(t, b, command(member, "bill-3", 1), false)
		consume(t, b, p, 10, rec.handle)
		eventually(t, "four commands applied", func() bool { return len(rec.all()) >= 4 })
		want := []string{"enroll", "bill-1", "bill-2", "bill-3"}
		if got := rec.all(); !slices.Equal(got, want) {
			t.Fatalf("applied in the order %v, want %v", got, want)
		}
		eventually(t, "the usual limit back", func() bool {
			return consumerInfo(t, b, p).Config.MaxAckPending == 10
		})
	})
}

// Regression test of a defect a late attack found (against 3b17776), now
// mended; the scenario as found:
//
// A loop fetched enroll and bill-1, asked for bill-1 again a little later
// (a Nak with a delay) and died before settling enroll. Enroll comes back
// first, alone; the handler fails it for an outage after a slow try (a
// database that does not answer for half a second). Meanwhile bill-1's
// delay ends and it is queued for redelivery; the Nak of enroll queues
// enroll behind it, and bill-1 is applied before the enrollment: the bill
// refused as 'no member' for good, the very case holdBackNewer was written
// for. Nothing newer (bill-2) may pass either.
func TestLate16UnsettledFailedOnReturnKeepOrder(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.AckWait = time.Second })
		p := 0
		member := membersOf(p, b.Partitions(), 1)[0]
		publish(t, b, command(member, "enroll", 1), false)
		publish(t, b, command(member, "bill-1", 1), false)
		got := fetchUnsettled(t, b, p, 2)
		if err := got[1].NakWithDelay(1300 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		publish(t, b, command(member, "bill-2", 1), false)
		rec := &late16Order{}
		var mu sync.Mutex
		failed := false
		consume(t, b, p, 10, func(ctx context.Context, batch []*Delivery) error {
			mu.Lock()
			first := !failed
			failed = true
			mu.Unlock()
			if first {
				time.Sleep(500 * time.Millisecond)
				return Unavailable(errLate16)
			}
			return rec.handle(ctx, batch)
		})
		eventually(t, "three commands applied", func() bool { return len(rec.all()) >= 3 })
		want := []string{"enroll", "bill-1", "bill-2"}
		if got := rec.all(); !slices.Equal(got, want) {
			t.Fatalf("applied in the order %v, want %v", got, want)
		}
	})
}

type late16Err struct{}

func (late16Err) Error() string { return "refused for the test" }

var errLate16 = late16Err{}

// Regression test of a defect a late attack found (against 3b17776), now
// mended; the scenario as found:
//
// A loop fetched enroll and bill-1, asked for bill-1 again later (a Nak
// with a delay, as handBack and core's retries do) and died before
// settling enroll. The next loop lowers the limit to 2; enroll comes back
// after AckWait and is settled, and the limit then lets bill-2 through
// before bill-1 comes back.
func TestLate16NakedUnsettledKeepOrder(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.AckWait = time.Second })
		p := 1
		member := membersOf(p, b.Partitions(), 1)[0]
		publish(t, b, command(member, "enroll", 1), false)
		publish(t, b, command(member, "bill-1", 1), false)
		got := fetchUnsettled(t, b, p, 2)
		if err := got[1].NakWithDelay(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		publish(t, b, command(member, "bill-2", 1), false)

		rec := &late16Order{}
		consume(t, b, p, 10, rec.handle)
		eventually(t, "three commands applied", func() bool { return len(rec.all()) >= 3 })
		want := []string{"enroll", "bill-1", "bill-2"}
		if got := rec.all(); !slices.Equal(got, want) {
			t.Fatalf("applied in the order %v, want %v", got, want)
		}
	})
}
