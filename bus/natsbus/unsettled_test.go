package natsbus

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A loop that dies holding fetched commands (its process was killed) leaves
// them unsettled; the next loop on the partition applies them before any
// command published after them, and then takes newer ones a batch at a
// time again. Before, the newer ones went first and the unsettled ones
// followed AckWait later: a member's bills before its enrollment.
func TestConsumeAppliesUnsettledCommandsFirst(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, func(c *Config) { c.AckWait = time.Second })
		p := 1
		member := membersOf(p, b.Partitions(), 1)[0]
		publish(t, b, command(member, "enroll", 1), false)
		publish(t, b, command(member, "bill-1", 1), false)

		// The loop that dies: it fetches both and settles neither.
		fetchUnsettled(t, b, p, 2)

		for i := 2; i <= 4; i++ {
			publish(t, b, command(member, "bill-"+string(rune('0'+i)), 1), false)
		}
		// Delivery is at least once: on a loaded machine a command whose
		// acknowledgement took longer than the test's 1 s AckWait comes back
		// (the ledger answers it as a replay). The order that matters is
		// that of each command's first delivery, which late16Order keeps.
		rec := &late16Order{}
		consume(t, b, p, 10, rec.handle)
		eventually(t, "five commands applied", func() bool { return len(rec.all()) >= 5 })
		eventually(t, "the usual limit back", func() bool {
			return consumerInfo(t, b, p).Config.MaxAckPending == 10
		})
		want := []string{"enroll", "bill-1", "bill-2", "bill-3", "bill-4"}
		if got := rec.all(); !slices.Equal(got, want) {
			t.Fatalf("applied in the order %v, want %v", got, want)
		}
		eventually(t, "every command settled", func() bool {
			info := consumerInfo(t, b, p)
			return info.NumAckPending == 0 && info.NumPending == 0
		})
	})
}

// fetchUnsettled fetches n commands of partition p as a loop that then
// dies does: it settles none of them. It returns them.
func fetchUnsettled(t *testing.T, b *Bus, p, n int) []jetstream.Msg {
	t.Helper()
	cons, err := b.ensureConsumer(context.Background(), p, 10)
	if err != nil {
		t.Fatal(err)
	}
	got, err := drain(cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second)))
	if err != nil || len(got) != n {
		t.Fatalf("fetched %d commands (%v), want %d", len(got), err, n)
	}
	return got
}
