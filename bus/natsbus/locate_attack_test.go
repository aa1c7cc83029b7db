package natsbus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
)

// Attacks on Bus.Locate, which the status URL uses to tell a waiting
// command (pending) from a dead-lettered one (failed) and from one the bus
// never had (404).

// locateAs is b.Locate for any source; an error fails the test.
func locateAs(t *testing.T, b *Bus, source, txn string) bus.Whereabouts {
	t.Helper()
	where, err := b.Locate(context.Background(), source, txn)
	if err != nil {
		t.Fatalf("Locate %s/%s: %v", source, txn, err)
	}
	return where
}

// failEverything consumes every partition of b with a handler that fails
// every batch; with MaxDeliver 1 each command is dead-lettered at once.
func failEverything(t *testing.T, b *Bus) {
	t.Helper()
	for p := range b.Partitions() {
		consume(t, b, p, 10, func(context.Context, []*Delivery) error {
			return errors.New("ledger unreachable")
		})
	}
}

// deadTxns is the set of transaction ids in b's dead-letter stream.
func deadTxns(t *testing.T, b *Bus) map[string]bool {
	t.Helper()
	dead, err := b.DeadLetters(context.Background(), 1000)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	out := map[string]bool{}
	for _, d := range dead {
		out[d.TxnID] = true
	}
	return out
}

// The commands of a pack that core fails as often as it tries are each
// dead-lettered and located as dead-lettered, for their own source only.
func TestLocateAttackPackDeadLettered(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 1 })
		p := 2 % b.Partitions()
		cmds := commandsOf(b, p, 2, 5, "pk-")
		publishAll(t, b, cmds) // one pack of five on partition p
		for _, c := range cmds {
			if w := locateAs(t, b, "pos", c.TxnID); w != bus.Waiting {
				t.Fatalf("before core: %s located %d, want waiting", c.TxnID, w)
			}
		}
		failEverything(t, b)
		eventually(t, "the pack's five dead letters", func() bool {
			return len(deadTxns(t, b)) == 5
		})
		eventually(t, "the pack settled", func() bool { return settledTo(b, p, 1) })
		for _, c := range cmds {
			if w := locateAs(t, b, "pos", c.TxnID); w != bus.DeadLettered {
				t.Errorf("%s of a dead pack located %d, want dead-lettered", c.TxnID, w)
			}
			// Another caller with the same transaction id knows nothing.
			if w := locateAs(t, b, "web", c.TxnID); w != bus.Unknown {
				t.Errorf("%s asked by another source located %d, want unknown", c.TxnID, w)
			}
		}
		if w := locateAs(t, b, "pos", "pk-5"); w != bus.Unknown {
			t.Errorf("never sent pk-5 located %d, want unknown", w)
		}
	})
}

// A command dead-lettered and then sent again changed (a new digest, so
// the bus stores it) waits again: Locate must say waiting, not
// dead-lettered, while the new copy waits for core.
func TestLocateAttackResentCommandWaitsAgain(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 1 })
		member := "m-3"
		p := bus.Partition("acme", member, b.Partitions())
		publish(t, b, command(member, "rs-1", 1), false)
		stop := consume(t, b, p, 10, func(context.Context, []*Delivery) error {
			return errors.New("ledger unreachable")
		})
		eventually(t, "rs-1 dead-lettered", func() bool { return deadTxns(t, b)["rs-1"] })
		eventually(t, "rs-1 settled", func() bool { return settledTo(b, p, 1) })
		_ = stop()
		if w := locateAs(t, b, "pos", "rs-1"); w != bus.DeadLettered {
			t.Fatalf("rs-1 located %d, want dead-lettered", w)
		}
		// The same command sent again alone is a duplicate the bus drops.
		publish(t, b, command(member, "rs-1", 1), true)
		if w := locateAs(t, b, "pos", "rs-1"); w != bus.DeadLettered {
			t.Fatalf("rs-1 after a dropped resend located %d, want dead-lettered", w)
		}
		// Changed, it is stored and waits for core.
		publish(t, b, command(member, "rs-1", 2), false)
		if w := locateAs(t, b, "pos", "rs-1"); w != bus.Waiting {
			t.Fatalf("rs-1 sent again changed located %d, want waiting", w)
		}
	})
}

// The very same command, dead-lettered after travelling alone and sent
// again within the bus's duplicate window together with another command
// of its partition (a pack, as the batch route and concurrent writes make
// them), is stored again and handed to core again: a pack's commands are
// not de-duplicated one by one (docs/reliability.md), and the documents
// say a resend is either applied or dropped.
func TestLocateAttackSameCommandResentInAPackWaitsAgain(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 1 })
		p := 3 % b.Partitions()
		members := membersOf(p, b.Partitions(), 2)
		first := command(members[0], "sp-1", 1)
		publish(t, b, first, false)
		stop := consume(t, b, p, 10, func(context.Context, []*Delivery) error {
			return errors.New("ledger unreachable")
		})
		eventually(t, "sp-1 dead-lettered", func() bool { return deadTxns(t, b)["sp-1"] })
		eventually(t, "sp-1 settled", func() bool { return settledTo(b, p, 1) })
		_ = stop()

		// The same request again (same digest), beside another command.
		again := command(members[0], "sp-1", 1)
		if again.Hash != first.Hash {
			t.Fatal("the resend is not the same request")
		}
		dup, errs := b.PublishCommands(context.Background(),
			[]bus.Command{again, command(members[1], "sp-2", 1)})
		if errs[0] != nil {
			t.Fatalf("resend: %v", errs[0])
		}
		if where := locateAs(t, b, "pos", "sp-1"); dup[0] || where != bus.Waiting {
			t.Errorf("the same command sent again in a pack: duplicate %v, located %d; "+
				"want stored again and waiting", dup[0], where)
		}
	})
}

// Locate matches a waiting command by its message id; transaction ids and
// sources may hold ':' (core.ValidRef, partner and file sources), so
// another command's id can start as the one asked about: a match is the
// whole id, and the id separates source from txn with '/'.
func TestLocateAttackColonInTxnID(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 1 })
		member := "m-5"
		p := bus.Partition("acme", member, b.Partitions())

		// "cl-1" is dead-lettered.
		publish(t, b, command(member, "cl-1", 1), false)
		stop := consume(t, b, p, 10, func(context.Context, []*Delivery) error {
			return errors.New("ledger unreachable")
		})
		eventually(t, "cl-1 dead-lettered", func() bool { return deadTxns(t, b)["cl-1"] })
		eventually(t, "cl-1 settled", func() bool { return settledTo(b, p, 1) })
		_ = stop()

		// Other commands wait: "cl-1:a" of the same caller, and "acme:9" of
		// an operator source named "partner", whose message id starts as one
		// of the partner acme (source "partner:acme"), transaction "9", would.
		publish(t, b, command(member, "cl-1:a", 1), false)
		publish(t, b, command(member, "eu:9", 1), false)
		other := command(member, "acme:9", 1)
		other.Source = "partner"
		publish(t, b, other, false)

		if w := locateAs(t, b, "pos", "cl-1"); w != bus.DeadLettered {
			t.Errorf("dead-lettered cl-1, while cl-1:a waits, located %d, want "+
				"dead-lettered (%d)", w, bus.DeadLettered)
		}
		if w := locateAs(t, b, "pos", "cl-2"); w != bus.Unknown {
			t.Errorf("never sent cl-2 located %d, want unknown", w)
		}
		if w := locateAs(t, b, "pos", "eu"); w != bus.Unknown {
			t.Errorf("never sent eu, while eu:9 waits, located %d, want unknown (%d)",
				w, bus.Unknown)
		}
		if w := locateAs(t, b, "partner:acme", "9"); w != bus.Unknown {
			t.Errorf("partner acme's txn 9 (only source partner, txn acme:9 sent) located "+
				"%d, want unknown (%d)", w, bus.Unknown)
		}
	})
}

// fillDead stores n dead letters of other commands (source pos, txn
// prefix<i>) in b's dead-letter stream, quickly: on their commands' own
// subjects if keyed, else on partition 0's, as before 5 December 11:45.
func fillDead(t *testing.T, b *Bus, n int, prefix string, keyed bool) {
	t.Helper()
	const chunk = 2000
	for i := 0; i < n; {
		for j := 0; j < chunk && i < n; j, i = j+1, i+1 {
			m := nats.NewMsg(b.deadSubject(0))
			if keyed {
				m.Subject = b.prefix + bus.DeadCommandSubject("pos", fmt.Sprintf("%s%d", prefix, i))
			}
			m.Data = []byte(`{}`)
			m.Header.Set(HeaderReason, "filler")
			m.Header.Set(HeaderSource, "pos")
			m.Header.Set(HeaderTxn, fmt.Sprintf("%s%d", prefix, i))
			if _, err := b.js.PublishMsgAsync(m); err != nil {
				t.Fatalf("fill dead letter %d: %v", i, err)
			}
		}
		select {
		case <-b.js.PublishAsyncComplete():
		case <-time.After(20 * time.Second):
			t.Fatal("dead letters not stored in time")
		}
	}
}

// settledTo reports whether partition p's consumer exists and has settled
// everything up to stream sequence seq, and nothing waits.
func settledTo(b *Bus, p int, seq uint64) bool {
	c, err := b.js.Consumer(context.Background(), b.cmdStream, durableName(p))
	if err != nil {
		return false
	}
	info, err := c.Info(context.Background())
	return err == nil && info.NumAckPending == 0 && info.NumPending == 0 &&
		info.AckFloor.Stream == seq
}

// Dead letters written before each had a subject of its own are read one
// by one. When there are more than Locate may read, it cannot tell an
// unknown command (or one of those old letters past the budget) from a
// waiting one: it must say waiting (the status URL answers pending), never
// dead-lettered (failed) nor unknown (404). An old letter within the budget
// is still found, and a command dead-lettered since is found in one lookup
// past all of them.
func TestLocateAttackBudgetRunsOutInDeadStream(t *testing.T) {
	t.Parallel()
	_, url := embedded(t, t.TempDir(), false)
	b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 1 })
	member := "m-8"
	p := bus.Partition("acme", member, b.Partitions())

	fillDead(t, b, maxHoldsScan+1, "filler-", false)
	publish(t, b, command(member, "bd-in", 1), false)
	stop := consume(t, b, p, 10, func(context.Context, []*Delivery) error {
		return errors.New("ledger unreachable")
	})
	eventually(t, "bd-in dead-lettered", func() bool { return settledTo(b, p, 1) })
	_ = stop()
	if w := locateAs(t, b, "pos", "bd-in"); w != bus.DeadLettered {
		t.Fatalf("bd-in, dead-lettered after %d old letters, located %d, want dead-lettered",
			maxHoldsScan+1, w)
	}
	// An old letter the scan reads late in its budget is found too.
	if w := locateAs(t, b, "pos", fmt.Sprintf("filler-%d", maxHoldsScan-2)); w !=
		bus.DeadLettered {
		t.Fatalf("the old letter at the budget's end located %d, want dead-lettered", w)
	}
	// Past the budget: unsure, so waiting.
	for _, q := range [][2]string{{"pos", fmt.Sprintf("filler-%d", maxHoldsScan)},
		{"pos", "bd-never"}, {"web", "bd-in"}} {
		if w := locateAs(t, b, q[0], q[1]); w != bus.Waiting {
			t.Fatalf("%s/%s, past the budget: located %d, want waiting (%d)", q[0], q[1], w,
				bus.Waiting)
		}
	}
}

// Dead letters on their commands' own subjects, more of them than Locate
// could ever read one by one: a command dead-lettered after them is found
// in one lookup, and one never sent is unknown (404), not pending.
func TestLocateFindsADeadLetterAmongMany(t *testing.T) {
	t.Parallel()
	_, url := embedded(t, t.TempDir(), false)
	b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 1 })
	member := "m-8"
	p := bus.Partition("acme", member, b.Partitions())

	fillDead(t, b, maxHoldsScan+10, "filler-", true)
	publish(t, b, command(member, "many-1", 1), false)
	stop := consume(t, b, p, 10, func(context.Context, []*Delivery) error {
		return errors.New("ledger unreachable")
	})
	eventually(t, "many-1 dead-lettered", func() bool { return settledTo(b, p, 1) })
	_ = stop()
	for _, q := range []struct {
		source, txn string
		want        bus.Whereabouts
	}{{"pos", "many-1", bus.DeadLettered}, {"pos", fmt.Sprintf("filler-%d", maxHoldsScan+9),
		bus.DeadLettered}, {"pos", "never", bus.Unknown}, {"web", "many-1", bus.Unknown}} {
		if w := locateAs(t, b, q.source, q.txn); w != q.want {
			t.Errorf("%s/%s located %d, want %d", q.source, q.txn, w, q.want)
		}
	}
}
