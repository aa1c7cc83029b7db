package natsbus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
)

// A command stored a moment ago on a partition whose consumer looked idle
// is located Waiting, not Unknown. Locate reads its idle partitions again
// before answering DeadLettered, for a race in which the server counts a
// consumer's pending messages a moment after storing them; the Unknown
// answer (a 404 on the status URL) has no such recheck. The race did not
// show here in 300 tries each way; the test guards the Unknown path.
func TestLocateReview3FreshCommandOnIdlePartitionIsNotUnknown(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		// Core consumed every partition before and is not consuming now:
		// every durable consumer exists and looks idle.
		for p := range b.Partitions() {
			stop := consume(t, b, p, 10, func(context.Context, []*Delivery) error { return nil })
			_ = stop()
		}
		unknown := 0
		const rounds = 300
		for i := range rounds {
			member := fmt.Sprintf("fm-%d", i)
			cmds := []bus.Command{command(member, fmt.Sprintf("fr-%d", i), 1),
				command(member, fmt.Sprintf("fr-%d-b", i), 1)}
			if i%2 == 0 {
				publish(t, b, cmds[0], false)
			} else {
				publishAll(t, b, cmds) // a pack
			}
			if w := locateAs(t, b, "pos", cmds[0].TxnID); w == bus.Unknown {
				unknown++
			}
		}
		if unknown > 0 {
			t.Errorf("%d of %d commands stored before Locate and never consumed were "+
				"located Unknown (the status URL would answer 404), want Waiting",
				unknown, rounds)
		}
	})
}

// consumerCount is the number of consumers on b's command stream.
func consumerCount(t *testing.T, b *Bus) int {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.cmdStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// Cost of the recheck before DeadLettered: a dead-lettered command, every
// partition idle. Locate reads the partition a copy of the command could
// be on (the dead letter's), and no other: each read leaves an ordered
// consumer on the server until its InactiveThreshold (10 s), so reading
// every idle partition kept about Partitions x 10 s x polls/s of them on
// the command stream for a client polling a failed command's status (the
// first form of the recheck did).
func TestLocateReview3DeadLetteredReadsOnlyItsPartition(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) {
			c.MaxDeliver = 1
			c.Partitions = 8
		})
		member := "m-3"
		p := bus.Partition("acme", member, b.Partitions())
		publish(t, b, command(member, "dl-1", 1), false)
		for q := range b.Partitions() {
			stop := consume(t, b, q, 10, func(context.Context, []*Delivery) error {
				return errors.New("ledger unreachable")
			})
			defer stop()
		}
		eventually(t, "dl-1 dead-lettered", func() bool { return deadTxns(t, b)["dl-1"] })
		eventually(t, "dl-1 settled", func() bool { return settledTo(b, p, 1) })
		time.Sleep(200 * time.Millisecond)
		before := consumerCount(t, b)
		const polls = 5
		for range polls {
			if w := locateAs(t, b, "pos", "dl-1"); w != bus.DeadLettered {
				t.Fatalf("dl-1 located %d, want dead-lettered", w)
			}
		}
		// One consumer per poll; twice that leaves room for a consumer of
		// the setup that the server had not yet counted or let go of, and
		// still fails reading every partition (8 a poll).
		if made := consumerCount(t, b) - before; made > 2*polls {
			t.Errorf("%d polls of a dead-lettered command's status left %d consumers on the "+
				"command stream (about %d partitions read per poll), want at most %d: only "+
				"the command's own partition can hold a copy of it", polls, made,
				made/polls, 2*polls)
		}
	})
}
