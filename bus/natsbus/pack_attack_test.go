package natsbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
)

// sendRaw stores a message on partition p's command subject as another
// publisher could: with the pack header set to count unless it is "-", and
// no message id.
func sendRaw(t *testing.T, b *Bus, p int, count string, data string) {
	t.Helper()
	m := nats.NewMsg(b.commandSubject(p))
	if count != "-" {
		m.Header.Set(headerPack, count)
	}
	m.Data = []byte(data)
	if _, err := b.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// lineOf is the encoding of a command, as a line of a pack.
func lineOf(t *testing.T, b *Bus, c bus.Command) string {
	t.Helper()
	m, err := b.commandMsg(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(m.Data)
}

// settledUpTo reports whether partition p's consumer exists, waits for no
// acknowledgement and has settled the stream up to seq.
func settledUpTo(b *Bus, p int, seq uint64) bool {
	ctx := context.Background()
	c, err := b.js.Consumer(ctx, b.cmdStream, durableName(p))
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream == seq
}

// waitSettled waits until partition p has settled the stream up to seq;
// it fails with the consumer's state and what the handler saw if that
// takes more than 10 seconds.
func waitSettled(t *testing.T, b *Bus, p int, seq uint64, rec *packRecorder) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !settledUpTo(b, p, seq); {
		if time.Now().After(deadline) {
			info := consumerInfo(t, b, p)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			t.Fatalf("stream not settled up to %d: ack floor %d, %d waiting for an ack, "+
				"%d pending, %d redelivered; batches %v", seq, info.AckFloor.Stream,
				info.NumAckPending, info.NumPending, info.NumRedelivered, rec.batches)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deadLetters reads back every dead letter of b.
func deadLetters(t *testing.T, b *Bus) []DeadLetter {
	t.Helper()
	dead, err := b.DeadLetters(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return dead
}

// A batch that fails for good takes with it, each time, the packs that
// came in the same fetch behind it; those were never handed to the handler
// and must not use up their deliveries: once the failing pack is
// dead-lettered, they are applied, not dead-lettered with it.
func TestPackAttackUntriedPacksAreNotDeadLettered(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 2 })
		p := 5 % b.Partitions()
		publishSixes(t, b, p, "u")
		// The first pack always fails; the second would apply.
		rec := &packRecorder{fail: func(_ int, batch []*Delivery) error {
			if strings.HasPrefix(batch[0].Command.TxnID, "u0-") {
				return errors.New("boom")
			}
			return nil
		}}
		consume(t, b, p, 6, rec.handle)
		waitSettled(t, b, p, 2, rec)
		for _, d := range deadLetters(t, b) {
			if !strings.HasPrefix(d.TxnID, "u0-") {
				t.Errorf("%s dead-lettered (%s, %d deliveries) without being tried",
					d.TxnID, d.Reason, d.Deliveries)
			}
		}
		var second []string
		for _, d := range rec.all() {
			if strings.HasPrefix(d.txn, "u1-") {
				second = append(second, d.txn)
			}
		}
		if len(second) != 6 {
			t.Errorf("the handler saw %v of the second pack, want its 6 commands", second)
		}
	})
}

// A pack with a line that is not a command, handed back over and over for
// an outage, never uses up the deliveries of its good commands: they are
// applied once the outage ends; only the bad line is dead-lettered.
func TestPackAttackOutageSparesAPackWithABadLine(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.MaxDeliver = 2 })
		p := 2 % b.Partitions()
		member := membersOf(p, b.Partitions(), 1)[0]
		sendRaw(t, b, p, "3", strings.Join([]string{`not json{`,
			lineOf(t, b, command(member, "b-1", 1)), lineOf(t, b, command(member, "b-2", 1))},
			"\n"))

		const outages = 5
		rec := &packRecorder{fail: func(call int, _ []*Delivery) error {
			if call <= outages {
				return Unavailable(errors.New("database down"))
			}
			return nil
		}}
		consume(t, b, p, 10, rec.handle)
		waitSettled(t, b, p, 1, rec)
		dead := deadLetters(t, b)
		if len(dead) != 1 || string(dead[0].Raw) != `not json{` {
			for _, d := range dead {
				t.Errorf("dead letter %q (%s) after %d deliveries", d.TxnID, d.Reason,
					d.Deliveries)
			}
			t.Fatalf("%d dead letters, want only the bad line", len(dead))
		}
		if n := len(rec.all()); n != 2*(outages+1) {
			t.Fatalf("the handler saw %d deliveries, want %d", n, 2*(outages+1))
		}
	})
}

// Core retries in order by naking a failed command and every later one of
// its batch while returning nil. When a fetch holds more packs than one
// batch, the packs behind that batch must not reach the handler before
// the naked commands come back: commands of one member apply in order.
func TestPackAttackNakedBatchHoldsBackLaterPacks(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 1 % b.Partitions()
		member := membersOf(p, b.Partitions(), 1)[0]
		var want []string
		for call := range 3 {
			cmds := make([]bus.Command, 4)
			for i := range cmds {
				cmds[i] = command(member, fmt.Sprintf("n%d-%d", call, i), 1)
				want = append(want, cmds[i].TxnID)
			}
			publishAll(t, b, cmds)
		}
		// The first time it sees n0-2, the handler applies what comes
		// before and hands back n0-2 and the rest of its batch, as core's
		// one-by-one path does.
		var applied []string
		naked := false
		rec := &packRecorder{fail: func(_ int, batch []*Delivery) error {
			for i, d := range batch {
				if d.Command.TxnID == "n0-2" && !naked {
					naked = true
					for _, rest := range batch[i:] {
						if err := rest.Nak(0); err != nil {
							return err
						}
					}
					return nil
				}
				if !slices.Contains(applied, d.Command.TxnID) {
					applied = append(applied, d.Command.TxnID)
				}
			}
			return nil
		}}
		consume(t, b, p, 4, rec.handle)
		waitSettled(t, b, p, 3, rec)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if !slices.Equal(applied, want) {
			t.Fatalf("applied in the order %v, want %v; batches %v", applied, want,
				rec.batches)
		}
	})
}

// Messages that no publisher of the bus makes, on the command subject:
// packs whose header is not a count, announces no commands, fewer or more
// than they hold, or holds empty lines, and plain messages without a
// message id. None panics; each message is settled, what is not a command
// is dead-lettered and every command that is comes to the handler once.
func TestPackAttackHostileMessages(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 3 % b.Partitions()
		member := membersOf(p, b.Partitions(), 1)[0]
		line := func(txn string) string { return lineOf(t, b, command(member, txn, 1)) }
		cases := []struct {
			count, data string
			dead        int      // dead letters it makes
			good        []string // commands the handler gets
		}{
			{"0", line("x-0"), 1, nil},
			{"-1", line("x-1"), 1, nil},
			{"9223372036854775807", line("x-2"), 1, nil},
			{"99999999999999999999999", line("x-3"), 1, nil},
			{"+1", line("x-4"), 0, []string{"x-4"}},
			{" 1 ", line("x-5"), 0, []string{"x-5"}}, // the client trims values
			{"1", line("x-6") + "\n" + line("x-7"), 1, nil},
			{"2", line("x-8") + "\n" + line("x-9") + "\n", 1, nil},
			{"3", line("x-10") + "\n" + line("x-11") + "\n", 1, []string{"x-10", "x-11"}},
			{"3", "\n" + line("x-12") + "\n", 2, []string{"x-12"}},
			{"2", "\n", 2, nil},
			{"1", "", 1, nil},
			{"abc", line("x-13"), 1, nil},
			{"-", line("x-14"), 0, []string{"x-14"}},
			{"-", line("x-15") + "\n" + line("x-16"), 1, nil},
			{"-", "", 1, nil},
			{"1", line("x-17"), 0, []string{"x-17"}},
		}
		var wantGood []string
		wantDead := 0
		for _, c := range cases {
			sendRaw(t, b, p, c.count, c.data)
			wantGood = append(wantGood, c.good...)
			wantDead += c.dead
		}
		rec := &packRecorder{}
		consume(t, b, p, 4, rec.handle)
		waitSettled(t, b, p, uint64(len(cases)), rec)
		var got []string
		for _, d := range rec.all() {
			got = append(got, d.txn)
		}
		if !slices.Equal(got, wantGood) {
			t.Errorf("the handler saw %v, want %v", got, wantGood)
		}
		dead := deadLetters(t, b)
		if len(dead) != wantDead {
			t.Errorf("%d dead letters, want %d", len(dead), wantDead)
		}
		// Holds reads the same messages without failing, and finds a
		// command dead-lettered with its pack only by its line.
		for _, txn := range []string{"x-0", "x-12", "nope"} {
			if _, err := b.Holds(context.Background(), "pos", txn); err != nil {
				t.Errorf("Holds %s: %v", txn, err)
			}
		}
	})
}

// Each bad line of a pack has a dead letter of its own, and only one
// however many times the pack comes back (a Nak of a good command brings
// it back whole); the good commands are handed over until acknowledged and
// Holds finds them while they wait.
func TestPackAttackBadLinesDeadLetteredOnceEach(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 0
		member := membersOf(p, b.Partitions(), 1)[0]
		sendRaw(t, b, p, "4", strings.Join([]string{`{bad-1`,
			lineOf(t, b, command(member, "g-1", 1)), `{bad-2`,
			lineOf(t, b, command(member, "g-2", 1))}, "\n"))
		ctx := context.Background()
		if held, err := b.Holds(ctx, "pos", "g-2"); err != nil || !held {
			t.Fatalf("Holds g-2 before core = %v, %v; want true", held, err)
		}
		rec := &packRecorder{fail: func(call int, batch []*Delivery) error {
			if call < 3 {
				return batch[1].Nak(0)
			}
			return nil
		}}
		consume(t, b, p, 10, rec.handle)
		waitSettled(t, b, p, 1, rec)
		var got []string
		for _, d := range rec.all() {
			got = append(got, fmt.Sprintf("%s#%d", d.txn, d.delivered))
		}
		if want := []string{"g-1#1", "g-2#1", "g-1#2", "g-2#2", "g-1#3", "g-2#3"}; !slices.Equal(
			got, want) {
			t.Fatalf("the handler saw %v, want %v", got, want)
		}
		var raws []string
		for _, d := range deadLetters(t, b) {
			raws = append(raws, string(d.Raw))
		}
		if !slices.Equal(raws, []string{`{bad-1`, `{bad-2`}) {
			t.Fatalf("dead letters %q, want each bad line once", raws)
		}
		if held, err := b.Holds(ctx, "pos", "g-2"); err != nil || held {
			t.Fatalf("Holds g-2 after core = %v, %v; want false", held, err)
		}
	})
}
