package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// countWaiting is b.DeadLettersWaiting; an error fails the test.
func countWaiting(t *testing.T, b *Bus) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := b.DeadLettersWaiting(ctx)
	if err != nil {
		t.Fatalf("DeadLettersWaiting: %v", err)
	}
	return n.Failed + n.Refused
}

// storedDead is how many messages, letters and marks, the dead-letter
// stream of b holds.
func storedDead(t *testing.T, b *Bus) uint64 {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.deadStream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// wantWaiting checks that b counts want dead letters waiting, as many as
// the listing shows.
func wantWaiting(t *testing.T, b *Bus, want uint64, when string) {
	t.Helper()
	if got := countWaiting(t, b); got != want {
		t.Errorf("%s: %d dead letters waiting, want %d", when, got, want)
	}
	if listed := deadLetters(t, b); uint64(len(listed)) != want {
		t.Errorf("%s: %d dead letters listed, want %d", when, len(listed), want)
	}
}

// Three commands fail every delivery and a line that is not a command is
// set aside too: four letters wait. A re-drive and a discard each take one
// away; the discard of a command's latest letter leaves a mark in the
// stream, which keeps the command failed and is not counted.
func TestDeadLettersWaitingCountsLettersNotMarks(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 1 })
		ctx := context.Background()
		p := bus.Partition("acme", "m-1", b.Partitions())
		wantWaiting(t, b, 0, "before any letter")

		// Four letters: three commands and a line that is none.
		for i := 1; i <= 3; i++ {
			publish(t, b, command("m-1", "w-"+strconv.Itoa(i), i), false)
		}
		if _, err := b.js.Publish(ctx, b.commandSubject(p), []byte(`not json{`)); err != nil {
			t.Fatal(err)
		}
		stop := consume(t, b, p, 10, func(context.Context, []*Delivery) error {
			return errors.New("ledger unreachable")
		})
		eventually(t, "four dead letters", func() bool { return len(deadLetters(t, b)) == 4 })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		seqs := map[string]uint64{}
		for _, dl := range deadLetters(t, b) {
			seqs[dl.TxnID] = dl.Seq
		}
		wantWaiting(t, b, 4, "four letters")

		// A re-drive puts w-1 back on the command stream (no core reads
		// it here) and removes its letter.
		if _, _, err := b.Redrive(ctx, seqs["w-1"]); err != nil {
			t.Fatal(err)
		}
		wantWaiting(t, b, 3, "after re-driving w-1")

		// Discarding w-2 leaves its mark: the stream holds two letters
		// and the mark, and w-2 still reads as set aside.
		if _, err := b.Discard(ctx, seqs["w-2"]); err != nil {
			t.Fatal(err)
		}
		wantWaiting(t, b, 2, "after discarding w-2")
		if got := storedDead(t, b); got != 3 {
			t.Errorf("messages in the dead-letter stream: %d, want 3 (two letters, a mark)", got)
		}
		if dead, err := b.DeadLettered(ctx, "pos", "w-2"); err != nil || !dead {
			t.Errorf("DeadLettered(w-2) after its discard: %v, %v; want true (its mark)",
				dead, err)
		}
		if aside, err := b.SetAside(ctx, command("m-1", "w-2", 2)); err != nil || !aside {
			t.Errorf("SetAside(w-2) after its discard: %v, %v; want true (its mark)", aside, err)
		}

		// The line that is not a command leaves no mark.
		if _, err := b.Discard(ctx, seqs[""]); err != nil {
			t.Fatal(err)
		}
		wantWaiting(t, b, 1, "after discarding the line that is not a command")
		if got := storedDead(t, b); got != 2 {
			t.Errorf("messages in the dead-letter stream: %d, want 2 (w-3's letter, a mark)",
				got)
		}
	})
}

// Versions before DeadLettersWaiting stored the mark of a discarded letter
// on its command's letter subject, where it would count as a letter. A
// platform's Connect moves such marks to subjects of their own; a tool's
// (UseStreams) changes nothing. After the move the count is the letters
// alone, and each command answers as before: set aside when its mark or
// its letter is the latest.
func TestDeadLettersWaitingAfterMarksOfEarlierVersions(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		b := connect(t, url, ns, true, nil)
		ctx := context.Background()
		p := bus.Partition("acme", "m-1", b.Partitions())

		// store writes cmd as an earlier version did: a letter, or a mark.
		store := func(cmd bus.Command, mark bool) uint64 {
			t.Helper()
			m := nats.NewMsg(b.prefix + bus.DeadCommandSubject(cmd.Source, cmd.TxnID))
			m.Data, _ = json.Marshal(cmd)
			m.Header.Set(HeaderReason, "max deliveries: ledger unreachable")
			m.Header.Set(HeaderSource, cmd.Source)
			m.Header.Set(HeaderTxn, cmd.TxnID)
			m.Header.Set(HeaderPartition, strconv.Itoa(p))
			if mark {
				m.Header.Set(HeaderDiscarded, "2026-12-05T15:00:00Z")
			}
			ack, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectStream(b.deadStream))
			if err != nil {
				t.Fatal(err)
			}
			return ack.Sequence
		}
		dead, err := b.js.Stream(ctx, b.deadStream)
		if err != nil {
			t.Fatal(err)
		}
		drop := func(seq uint64) {
			t.Helper()
			if err := dead.DeleteMsg(ctx, seq); err != nil {
				t.Fatal(err)
			}
		}
		// old-1: discarded; its mark is the latest of the command.
		old1 := command("m-1", "old-1", 1)
		drop(store(old1, false))
		store(old1, true)
		// old-2: discarded, then its corrected request set aside too.
		old2, old2b := command("m-1", "old-2", 2), command("m-1", "old-2", 20)
		drop(store(old2, false))
		store(old2, true)
		store(old2b, false)
		// old-3: a letter waiting.
		old3 := command("m-1", "old-3", 3)
		store(old3, false)

		// Unmoved, the two marks count as letters; the listing has two.
		if got := countWaiting(t, b); got != 4 {
			t.Errorf("before the marks moved: %d waiting, want 4 (2 letters, 2 old marks)", got)
		}
		tool := connect(t, url, ns, false, func(c *Config) { c.UseStreams = true })
		if got := countWaiting(t, tool); got != 4 || storedDead(t, b) != 4 {
			t.Errorf("after a tool connected: %d waiting of %d stored, want 4 of 4: the tool "+
				"changes nothing", got, storedDead(t, b))
		}

		plat := connect(t, url, ns, false, nil)
		wantWaiting(t, plat, 2, "after a platform connected")
		if got := storedDead(t, plat); got != 3 {
			t.Errorf("stored after the move: %d, want 3 (old-1's mark, two letters)", got)
		}
		mark, err := dead.GetLastMsgForSubject(ctx,
			plat.prefix+bus.DiscardedCommandSubject("pos", "old-1"))
		if err != nil || mark.Header.Get(HeaderDiscarded) == "" {
			t.Errorf("old-1's mark on its own subject: %+v, %v", mark, err)
		}
		for _, c := range []struct {
			cmd  bus.Command
			want bool
		}{{old1, true}, {old2, false}, {old2b, true}, {old3, true}} {
			aside, err := plat.SetAside(ctx, c.cmd)
			if err != nil || aside != c.want {
				t.Errorf("SetAside(%s %s) = %v, %v; want %v", c.cmd.TxnID, c.cmd.Payload,
					aside, err, c.want)
			}
		}

		// Connecting again finds nothing to move.
		again := connect(t, url, ns, false, nil)
		wantWaiting(t, again, 2, "after a second platform connected")
		if got := storedDead(t, again); got != 3 {
			t.Errorf("stored after a second connect: %d, want 3", got)
		}
	})
}

// With the server gone, a count fails within its context's time rather
// than waiting for the server to come back.
func TestDeadLettersWaitingFailsInTimeWhenNATSIsDown(t *testing.T) {
	t.Parallel()
	stopServer, url := embedded(t, t.TempDir(), false)
	b := connect(t, url, namespace(t), false, nil)
	wantWaiting(t, b, 0, "server up")
	stopServer()

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	n, err := b.DeadLettersWaiting(ctx)
	if err == nil {
		t.Fatalf("count with the server down: %d, no error", n)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("count with the server down took %s, want about 500ms", took)
	}
}
